"""Elements in shared memory: how loader workers hand NumPy data over without pickling it.

A worker writes a chunk of elements into one new shared-memory block and
sends only its layout (structure, dtypes, shapes, offsets) through the pipe.
When every element of the chunk has the same structure, dtypes and shapes
(the usual case: batches of one pipeline), each leaf is written as one stacked
array; otherwise each element's leaves are written one by one. The consumer
copies the arrays out (one ``memcpy`` per leaf) and unlinks the block at once,
so no block outlives its hand-off and returned elements own their memory.
"""

from __future__ import annotations

from multiprocessing import shared_memory
from typing import Any

import numpy as np

from pipestate.data._structure import is_namedtuple

_ALIGN = 64

Leaf = tuple[str, tuple[int, ...], int, bool]  # dtype, shape, offset, is a NumPy scalar


def _flatten(element: Any, leaves: list[Any]) -> Any:
    """The element's structure with its leaves appended to ``leaves`` (dict order kept)."""
    if isinstance(element, dict):
        return ("d", tuple(element), tuple(_flatten(v, leaves) for v in element.values()))
    if is_namedtuple(element):
        return ("n", type(element), tuple(_flatten(v, leaves) for v in element))
    if isinstance(element, tuple):
        return ("t", tuple(_flatten(v, leaves) for v in element))
    if not isinstance(element, (np.ndarray, np.generic)):
        element = np.asarray(element)
    if element.dtype.hasobject:
        raise TypeError(f"Loader: cannot send an element with an object array leaf {element!r:.80}")
    leaves.append(element)
    return None


def _unflatten(tree: Any, leaves: Any) -> Any:
    if tree is None:
        return next(leaves)
    kind = tree[0]
    if kind == "d":
        return {key: _unflatten(sub, leaves) for key, sub in zip(tree[1], tree[2])}
    if kind == "n":
        return tree[1](*(_unflatten(sub, leaves) for sub in tree[2]))
    return tuple(_unflatten(sub, leaves) for sub in tree[1])


def _signature(leaf: Any) -> tuple[str, tuple[int, ...], bool]:
    return leaf.dtype.str, leaf.shape, isinstance(leaf, np.generic)


def pack(elements: list[Any]) -> tuple[Any, str | None]:
    """Writes ``elements`` into a new shared-memory block; returns ``(layout, block name)``.

    The name is ``None`` when there are no bytes to send.
    """
    trees: list[Any] = []
    per_element: list[list[Any]] = []
    for element in elements:
        leaves: list[Any] = []
        trees.append(_flatten(element, leaves))
        per_element.append(leaves)
    stacked = bool(elements) and all(tree == trees[0] for tree in trees)
    if stacked:
        signature = [_signature(leaf) for leaf in per_element[0]]
        stacked = all(
            [_signature(leaf) for leaf in leaves] == signature for leaves in per_element[1:]
        )
    count = len(elements)
    if stacked:
        columns = list(zip(*per_element)) if per_element[0] else []
        specs = [(dtype, (count, *shape), scalar) for dtype, shape, scalar in signature]
    else:
        columns = [(leaf,) for leaves in per_element for leaf in leaves]
        specs = [(leaf.dtype.str, leaf.shape, isinstance(leaf, np.generic)) for (leaf,) in columns]
    offsets, size = [], 0
    for dtype, shape, _ in specs:
        offsets.append(size)
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        size += -(-nbytes // _ALIGN) * _ALIGN
    block = shared_memory.SharedMemory(create=True, size=size) if size else None
    try:
        if block is not None:
            for (dtype, shape, _), offset, column in zip(specs, offsets, columns):
                target = np.ndarray(shape, dtype, buffer=block.buf, offset=offset)
                if not stacked:
                    target[...] = column[0]
                elif len(shape) == 1:
                    target[...] = column
                else:
                    np.stack(column, out=target)
                del target
        layout_leaves = [
            (dtype, shape, offset, scalar) for (dtype, shape, scalar), offset in zip(specs, offsets)
        ]
        layout = (
            ("stacked", trees[0], count, layout_leaves)
            if stacked
            else ("each", trees, layout_leaves)
        )
    except BaseException:
        if block is not None:
            block.close()
            block.unlink()
        raise
    if block is None:
        return layout, None
    name = block.name
    block.close()
    return layout, name


def unpack(layout: Any, name: str | None) -> list[Any]:
    """The elements a worker packed; the block is copied out and unlinked."""
    block = _attach(name) if name is not None else None
    try:
        arrays = []
        for dtype, shape, offset, _ in layout[-1]:
            if block is None:
                arrays.append(np.empty(shape, dtype))
            else:
                arrays.append(np.ndarray(shape, dtype, buffer=block.buf, offset=offset).copy())
    finally:
        if block is not None:
            block.close()
            block.unlink()
    if layout[0] == "stacked":
        _, tree, count, leaves = layout
        columns = []
        for array, (_, shape, _, scalar) in zip(arrays, leaves):
            if scalar or len(shape) > 1:
                columns.append(list(array))
            else:  # 0-d array leaves: keep them arrays, not NumPy scalars
                columns.append([array[i : i + 1].reshape(()) for i in range(count)])
        rows = list(zip(*columns)) if columns else [() for _ in range(count)]
        return [_unflatten(tree, iter(row)) for row in rows]
    _, trees, leaves = layout
    values = iter(
        array[()] if scalar else array for array, (_, _, _, scalar) in zip(arrays, leaves)
    )
    return [_unflatten(tree, values) for tree in trees]


def discard(name: str | None) -> None:
    """Unlinks a block that will not be read (a dropped chunk)."""
    if name is None:
        return
    try:
        block = _attach(name)
    except FileNotFoundError:
        return
    block.close()
    block.unlink()


def _attach(name: str) -> shared_memory.SharedMemory:
    return shared_memory.SharedMemory(name=name)
