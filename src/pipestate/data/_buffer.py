"""Saving a buffer of elements in an iterator state: columns of stacked leaves.

A buffer of ``n`` elements is saved as one stacked array per leaf (so a
checkpoint holds a handful of arrays, not ``n`` small ones), with the nesting
described by a JSON-able spec. Leaves whose shapes differ between elements
are saved as a list of arrays, and string leaves as lists of ``str`` /
``bytes``. Named tuples come back as plain tuples, except ``RaggedBatch``es.
A leaf that is a window of elements (``window``'s datasets, read by
``flat_map`` over a streaming input) is saved as the packed buffer of its
elements.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipestate._validate import brief
from pipestate.data import _structure
from pipestate.data._ragged import RaggedBatch
from pipestate.data._structure import Element
from pipestate.data.iterator import state_array
from pipestate.errors import StateMismatchError

_COUNT = "count"
_SPEC = "spec"
_COLUMNS = "columns"
_KEYS = (_COUNT, _SPEC, _COLUMNS)
_LEAF = "leaf"
_TUPLE = "tuple"
_DICT = "dict"
_WINDOW = "window"
_RAGGED = "ragged"  # a RaggedBatch, saved as a pair and rebuilt as one


def _is_ragged(value: Any) -> bool:
    return type(value) is RaggedBatch


def _is_window(value: Any) -> bool:
    from pipestate.data._elements import ElementsDataset

    return isinstance(value, ElementsDataset)


def _spec(element: Element, op: str) -> Any:
    if isinstance(element, dict):
        for key in element:
            if not isinstance(key, str):
                raise TypeError(f"{op}: cannot save a buffered element with dict key {key!r}")
        return [_DICT, [[key, _spec(value, op)] for key, value in element.items()]]
    if isinstance(element, tuple):
        kind = _RAGGED if _is_ragged(element) else _TUPLE
        return [kind, [_spec(value, op) for value in element]]
    if _is_window(element):
        return [_WINDOW, None]
    return _LEAF


def _build(spec: Any, leaves: list[Any], op: str) -> Element:
    if spec == _LEAF or (isinstance(spec, (list, tuple)) and list(spec) == [_WINDOW, None]):
        if not leaves:
            raise StateMismatchError(f"{op}: buffer spec has more leaves than saved columns")
        leaf = leaves.pop()
        if (spec == _LEAF) == isinstance(leaf, dict):
            raise StateMismatchError(
                f"{op}: buffered value {brief(leaf, 80)} does not match its spec"
            )
        if spec == _LEAF:
            return leaf
        from pipestate.data._elements import ElementsDataset

        return ElementsDataset(unpack(leaf, op))
    kinds = (_TUPLE, _DICT, _RAGGED)
    if not isinstance(spec, (list, tuple)) or len(spec) != 2 or spec[0] not in kinds:
        raise StateMismatchError(f"{op}: malformed buffer spec {brief(spec, 80)}")
    kind, items = spec
    if not isinstance(items, (list, tuple)):
        raise StateMismatchError(f"{op}: malformed buffer spec {brief(spec, 80)}")
    if kind == _TUPLE:
        return tuple(_build(item, leaves, op) for item in items)
    if kind == _RAGGED:
        if len(items) != 2:
            raise StateMismatchError(f"{op}: malformed buffer spec {brief(spec, 80)}")
        return RaggedBatch(*(_build(item, leaves, op) for item in items))
    for pair in items:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not isinstance(pair[0], str):
            raise StateMismatchError(f"{op}: malformed buffer spec {brief(spec, 80)}")
    # The columns follow _structure.flatten, which visits dict keys sorted; the
    # spec keeps the element's own key order.
    built = {key: _build(sub, leaves, op) for key, sub in sorted(items, key=lambda p: p[0])}
    return {pair[0]: built[pair[0]] for pair in items}


def _column(values: list[Any], op: str) -> Any:
    first = values[0]
    if _is_window(first):
        return [pack(value._elements, op) for value in values]
    if np.asarray(first).dtype.kind in "SUO":
        # A NumPy string scalar is a bytes / str holding every byte; tolist() of
        # an array drops trailing NULs, which binary records may end with.
        return [
            (bytes(v) if isinstance(v, bytes) else str(v))
            if isinstance(v, (bytes, str))
            else _text_array(v)
            for v in values
        ]
    shape, dtype = np.shape(first), np.asarray(first).dtype
    if all(np.shape(v) == shape and np.asarray(v).dtype == dtype for v in values):
        return np.stack([np.asarray(v) for v in values])
    return [np.asarray(v) for v in values]


def pack(elements: Sequence[Element], op: str) -> dict[str, Any]:
    """The elements as ``{"count", "spec", "columns"}``: arrays and plain values only."""
    if not elements:
        return {_COUNT: 0, _SPEC: None, _COLUMNS: []}
    flat = [_structure.flatten(e) for e in elements]
    columns = [_column([leaves[i] for leaves in flat], op) for i in range(len(flat[0]))]
    return {_COUNT: len(elements), _SPEC: _spec(elements[0], op), _COLUMNS: columns}


_TEXT_KEYS = {"dtype", "shape", "data"}


def _text_array(value: Any) -> Any:
    """A text array as ``{"dtype", "shape", "data"}``: its width (the dtype) survives a restore.

    A string array's dtype is as wide as its longest string was where it was
    made (a slice of a wider array keeps the width); its items alone would
    come back as wide as the longest of them.
    """
    array = np.asarray(value)
    if array.dtype.kind not in "SU":
        return array.tolist()
    return {"dtype": array.dtype.str, "shape": list(array.shape), "data": array.ravel().tolist()}


def _text_leaf(record: dict[str, Any], op: str) -> np.ndarray:
    """The text array saved by :func:`_text_array` (read strictly)."""
    code, shape, data = record["dtype"], record["shape"], record["data"]
    if (
        not isinstance(code, str)
        or len(code) > 16
        or not isinstance(shape, list)
        or len(shape) > 32
        or not all(type(d) is int and d >= 0 for d in shape)
        or not isinstance(data, list)
    ):
        raise StateMismatchError(f"{op}: malformed buffered text array {brief(record, 120)}")
    try:
        dtype = np.dtype(code)
    except (TypeError, ValueError) as err:
        raise StateMismatchError(f"{op}: buffered text array has dtype {brief(code, 40)}") from err
    kind = bytes if dtype.kind == "S" else str
    if dtype.kind not in "SU" or not all(type(item) is kind for item in data):
        raise StateMismatchError(f"{op}: malformed buffered text array {brief(record, 120)}")
    if len(data) != int(np.prod(shape)):
        raise StateMismatchError(f"{op}: buffered text array holds {len(data)} items for {shape}")
    return np.array(data, dtype=dtype).reshape(shape)


def _leaf(column: Any, index: int, op: str) -> Any:
    value = column[index]
    if isinstance(value, dict):
        if set(value) == _TEXT_KEYS:
            return _text_leaf(value, op)
        return value  # a window's packed elements, checked against the spec
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value[()]
    if isinstance(value, bytes):  # not through an array, which would drop trailing NULs
        return np.bytes_(value)
    if isinstance(value, str):
        return np.str_(value)
    if isinstance(value, list):
        return _structure.to_leaf(state_array(value, f"{op}: a buffered value"))
    if isinstance(value, (int, float, bool)):
        return _structure.to_leaf(value)
    if not isinstance(value, (np.ndarray, np.generic)):
        raise StateMismatchError(f"{op}: buffered value {brief(value, 80)} is not an array")
    return value


def unpack(packed: Any, op: str) -> list[Element]:
    """The elements saved by :func:`pack` (read strictly)."""
    if not isinstance(packed, dict) or set(packed) != set(_KEYS):
        raise StateMismatchError(f"{op}: malformed element buffer {brief(packed, 120)}")
    count, spec, columns = packed[_COUNT], packed[_SPEC], packed[_COLUMNS]
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise StateMismatchError(f"{op}: malformed element buffer count {brief(count, 80)}")
    if not isinstance(columns, (list, tuple)):
        raise StateMismatchError(f"{op}: element buffer columns must be a list")
    if count == 0:
        return []
    for column in columns:
        if not isinstance(column, (list, tuple, np.ndarray)) or len(column) != count:
            raise StateMismatchError(
                f"{op}: element buffer column of length {len(column)} != count {count}"
                if hasattr(column, "__len__")
                else f"{op}: malformed element buffer column {brief(column, 80)}"
            )
    out = []
    for i in range(count):
        leaves = [_leaf(column, i, op) for column in reversed(columns)]
        element = _build(spec, leaves, op)
        if leaves:
            raise StateMismatchError(f"{op}: buffer spec has fewer leaves than saved columns")
        out.append(element)
    return out
