"""Elements waiting in groups by int64 key (``group_by_window``, ``bucket_by_sequence_length``).

The groups are saved in an iterator state as two values: ``"keys"``, the key
of every buffered element (a JSON list of ints, groups in ascending key order),
and ``"buffer"``, the elements themselves in the same order (``_buffer.pack``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pipestate._validate import brief
from pipestate.data import _buffer
from pipestate.data._calls import call, stop_error
from pipestate.data._fingerprint import describe_callable
from pipestate.data._structure import Element
from pipestate.data.iterator import State
from pipestate.errors import InvalidArgumentError, StateMismatchError

KEYS = "keys"
BUFFER = "buffer"
_INT64 = (-(2**63), 2**63 - 1)


def int64_scalar(value: Any, op: str, fn: Callable[..., Any], what: str) -> int:
    """A user function's result that must be an int64 scalar, as an int.

    Python ints and NumPy integer scalars (or 0-d arrays) are accepted.
    """
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"{op}: {what} {describe_callable(fn)} must return a scalar int64, got "
            f"{type(value).__name__} {brief(value, 80)}"
        )
    number = int(value)
    if not _INT64[0] <= number <= _INT64[1]:
        raise ValueError(f"{op}: {what} {describe_callable(fn)} returned {number}, not an int64")
    return number


def call_key_func(key_func: Callable[..., Any], element: Element, op: str) -> int:
    """``key_func(element)`` (a tuple unpacked), checked to be an int64 scalar."""
    try:
        key = call(key_func, element)
    except StopIteration as err:
        raise stop_error(op, key_func, err) from err
    return int64_scalar(key, op, key_func, "key_func")


class Groups:
    """The elements read but not yet output, by key (a dict of lists, ordered by key on save)."""

    def __init__(self) -> None:
        self.groups: dict[int, list[Element]] = {}

    def add(self, key: int, element: Element) -> list[Element]:
        """Appends ``element`` to its group; returns the group."""
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = []
        group.append(element)
        return group

    def first_key(self) -> int | None:
        """The smallest key with elements waiting, flushed first at the end (as tf.data)."""
        return min(self.groups) if self.groups else None

    def save(self, op: str) -> State:
        keys: list[int] = []
        elements: list[Element] = []
        for key in sorted(self.groups):
            group = self.groups[key]
            keys.extend([key] * len(group))
            elements.extend(group)
        return {KEYS: keys, BUFFER: _buffer.pack(elements, op)}

    def restore(self, state: State, op: str, check: Callable[[int, int], None]) -> None:
        """Reads the groups of ``state``; ``check(key, size)`` validates each group."""
        keys = state[KEYS]
        if not isinstance(keys, list) or not all(
            isinstance(k, int) and not isinstance(k, bool) and _INT64[0] <= k <= _INT64[1]
            for k in keys
        ):
            raise StateMismatchError(
                f"{op}: state['keys'] must be a list of int64 keys, got {brief(keys, 120)}"
            )
        elements = _buffer.unpack(state[BUFFER], op)
        if len(elements) != len(keys):
            raise StateMismatchError(
                f"{op}: state['buffer'] holds {len(elements)} elements for {len(keys)} keys"
            )
        groups: dict[int, list[Element]] = {}
        for key, element in zip(keys, elements):
            groups.setdefault(key, []).append(element)
        for key, group in groups.items():
            check(key, len(group))
        self.groups = groups


def window_size_error(op: str, key: int, size: int) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"{op}: window size must be greater than zero, but got {size} (for key {key})"
    )
