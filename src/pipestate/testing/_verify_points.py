"""Where the pipeline verifier breaks a run, and how it compares elements and states."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipestate._validate import brief
from pipestate.data._capabilities import Elastic
from pipestate.data._structure import describe
from pipestate.data.dataset import Dataset

__all__ = [
    "choose_break_points",
    "digest",
    "first_difference",
    "function_ops",
    "op_at",
    "show",
    "state_entries",
    "state_levels",
]

_FUNCTION_PARAMS = ("map_func", "predicate", "generator", "scan_func")
"""The settings of ops that call user code, which can hold state pipestate can't see."""


def digest(element: Any) -> str:
    """A digest of an element that two elements share only if they are exactly equal.

    Structure (tuple, named tuple, dict and its key order), leaf types,
    dtypes, shapes and bytes all count.
    """
    h = hashlib.blake2b(digest_size=16)
    stack = [element]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            h.update(b"{" + repr(list(value)).encode())
            stack.extend(reversed(list(value.values())))
        elif isinstance(value, (tuple, list)):
            h.update(f"({type(value).__qualname__}:{len(value)}".encode())
            stack.extend(reversed(value))
        elif isinstance(value, (np.ndarray, np.generic)):
            array = np.asarray(value)
            h.update(f"<{type(value).__name__}:{array.dtype.str}:{array.shape}>".encode())
            if array.dtype.kind == "O":
                h.update(repr(array.tolist()).encode())
            else:
                h.update(np.ascontiguousarray(array).tobytes())
        else:
            h.update(f"[{type(value).__qualname__}:{value!r}]".encode())
    return h.hexdigest()


def show(element: Any) -> str:
    """An element for a report: its structure, dtypes and shapes, then its value."""
    return f"{describe(element)} {brief(element, 240)}"


def state_entries(state: Any) -> dict[str, str]:
    """A state flattened to ``path -> value`` (arrays as dtype, shape and a digest)."""
    out: dict[str, str] = {}
    stack: list[tuple[str, Any]] = [("", state)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{path}/{key}" if path else str(key), v) for key, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{path}/{i}", v) for i, v in enumerate(value))
        elif isinstance(value, (np.ndarray, np.generic)):
            array = np.asarray(value)
            out[path] = f"{array.dtype}{list(array.shape)} {digest(array)[:12]}"
        else:
            out[path] = repr(value)
    return out


def first_difference(a: Mapping[str, str], b: Mapping[str, str]) -> str | None:
    """The first path (sorted) whose entry differs between two flattened states, or ``None``."""
    for path in sorted(a.keys() | b.keys()):
        if a.get(path) != b.get(path):
            return path
    return None


def state_levels(dataset: Dataset) -> list[str]:
    """The ops at each nesting level of an iterator state, from the top.

    A streaming op nests its input's state under ``"parent"``; a random-access
    stretch below is one index, which covers every op of it.
    """
    levels: list[str] = []
    node = dataset
    while True:
        if node._random_access:
            ops = " -> ".join(name for name, _, _ in node._op_chain())
            levels.append(f"the random-access ops {ops} (one index)")
            return levels
        if not node._passthrough:
            levels.append(node._op_repr())
        if len(node._parents) != 1:
            return levels
        node = node._parents[0]


def op_at(path: str, levels: Sequence[str]) -> str:
    """The op a differing state entry belongs to, from its path (``iterator/parent/index``)."""
    parts = path.split("/")
    if parts[0] != "iterator":
        return f"the state's envelope ({path})"
    depth = 0
    for part in parts[1:-1]:
        if part == "parent":
            depth += 1
        else:  # inside an op with several inputs ("parents/<i>"), or an op's own nested value
            break
    label = levels[depth] if depth < len(levels) else f"an op below {levels[-1]}"
    return f"{label}, entry {path!r}"


def function_ops(dataset: Dataset) -> list[str]:
    """The ops of a pipeline that call user code (functions, generators), as reprs."""
    found: list[str] = []
    stack = [dataset]
    while stack:
        node = stack.pop()
        if any(key in node._params() for key in _FUNCTION_PARAMS):
            found.append(node._op_repr())
        stack.extend(node._parents)
    return found


# -------------------------------------------------------- break points
def _repeat_boundaries(dataset: Dataset, limit: int) -> list[int]:
    """Output positions where a ``repeat`` starts a new pass, when they can be computed."""
    found: list[int] = []
    scale = 1
    node = dataset
    while True:
        if node._op_name == "repeat":
            n = node._parents[0].cardinality()
            if n > 0:
                found.extend(k * n // scale for k in range(1, limit * scale // n + 1))
        if len(node._parents) != 1:
            break
        if node._passthrough or node._elastic is Elastic.ONE_TO_ONE or node._op_name == "repeat":
            pass
        elif node._elastic is Elastic.BATCH:
            scale *= node._elastic_scale()
        else:
            break
        node = node._parents[0]
    return sorted({p for p in found if 0 < p <= limit})


def _shuffle_buffers(dataset: Dataset) -> list[int]:
    sizes: list[int] = []
    stack = [dataset]
    while stack:
        node = stack.pop()
        size = node._params().get("buffer_size") if node._op_name == "shuffle" else None
        if isinstance(size, int) and size > 0:
            sizes.append(size)
        stack.extend(node._parents)
    return sizes


def choose_break_points(
    dataset: Dataset, elements: int, ended: bool, random_count: int, seed: int
) -> dict[int, str]:
    """Positions to restore at, each with why it was chosen: the adversarial ones, then random.

    ``elements`` is the length of the reference run; ``ended`` whether it
    reached the end (then the exhausted position is tested too).
    """
    last = elements if ended else elements - 1
    points: dict[int, str] = {}

    def add(position: int, reason: str) -> None:
        if 0 <= position <= last and position not in points:
            points[position] = reason

    add(0, "start")
    add(1, "after the first element")
    if ended:
        add(elements, "after the end")
    add(elements - 1, "before the last element")
    for boundary in _repeat_boundaries(dataset, elements):
        add(boundary, "at a repeat boundary")
        add(boundary - 1, "before a repeat boundary")
    for size in _shuffle_buffers(dataset):
        add(size // 2, "inside a shuffle buffer's first fill")
        add(size, "as a shuffle buffer is full")
        add(size + 1, "after a shuffle buffer's first fill")
    rng = random.Random(seed)
    candidates = [p for p in range(last + 1) if p not in points]
    for position in sorted(rng.sample(candidates, min(random_count, len(candidates)))):
        add(position, "random")
    return dict(sorted(points.items()))
