"""Nested element structures: tuples, named tuples and dicts of NumPy leaves."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeAlias

import numpy as np

Element: TypeAlias = Any
"""A pipeline element: a NumPy value, or a nested tuple / dict of them."""

_LEAF_TYPES = (np.ndarray, np.generic)


def is_namedtuple(value: object) -> bool:
    """Whether ``value`` is an instance of a ``collections.namedtuple`` class."""
    return isinstance(value, tuple) and hasattr(type(value), "_fields")


def to_leaf(value: Any) -> Any:
    """Converts a leaf to a NumPy value; 0-d results become NumPy scalars."""
    if isinstance(value, _LEAF_TYPES):
        return value
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as err:
        raise TypeError(
            f"Elements must be NumPy values or nested tuples/dicts of them; "
            f"could not convert {type(value).__name__} {value!r:.80} to an array: {err}"
        ) from err
    if array.dtype == object:
        raise TypeError(
            f"Elements must be NumPy values or nested tuples/dicts of them; "
            f"{type(value).__name__} {value!r:.80} converts to an object array. "
            "Use arrays of one numeric, bool or string dtype."
        )
    return array[()] if array.ndim == 0 else array


def normalize(value: Any, *, lists_as_tuples: bool) -> Element:
    """Converts a user value to an element: dicts and tuples stay structures.

    Args:
      value: the value to convert.
      lists_as_tuples: ``True`` for values returned by user functions (a list
        becomes a tuple, as in tf.data's ``map``); ``False`` for source data,
        where a list is data and becomes an array.
    """
    if isinstance(value, _LEAF_TYPES):
        return value
    if isinstance(value, dict):
        return {
            key: normalize(item, lists_as_tuples=lists_as_tuples) for key, item in value.items()
        }
    if is_namedtuple(value):
        return type(value)(*(normalize(item, lists_as_tuples=lists_as_tuples) for item in value))
    if isinstance(value, tuple) or (lists_as_tuples and isinstance(value, list)):
        return tuple(normalize(item, lists_as_tuples=lists_as_tuples) for item in value)
    return to_leaf(value)


def flatten(element: Element) -> list[Any]:
    """The leaves of ``element`` in a fixed order (dict keys sorted)."""
    if isinstance(element, dict):
        return [leaf for key in sorted(element) for leaf in flatten(element[key])]
    if isinstance(element, tuple):
        return [leaf for item in element for leaf in flatten(item)]
    return [element]


def map_structure(fn: Callable[..., Any], *elements: Element) -> Element:
    """Applies ``fn`` leaf-wise over elements of the same structure."""
    first = elements[0]
    if isinstance(first, dict):
        return {key: map_structure(fn, *(e[key] for e in elements)) for key in first}
    if isinstance(first, tuple):
        items = [map_structure(fn, *parts) for parts in zip(*elements)]
        return type(first)(*items) if is_namedtuple(first) else tuple(items)
    return fn(*elements)


def assert_same_structure(a: Element, b: Element, what: str) -> None:
    """Raises ``TypeError`` if ``a`` and ``b`` are not nested the same way."""
    if isinstance(a, dict) or isinstance(b, dict):
        if not (isinstance(a, dict) and isinstance(b, dict)) or set(a) != set(b):
            raise TypeError(f"{what}: element structures differ: {describe(a)} vs {describe(b)}")
        for key in a:
            assert_same_structure(a[key], b[key], what)
    elif isinstance(a, tuple) or isinstance(b, tuple):
        if not (isinstance(a, tuple) and isinstance(b, tuple)) or len(a) != len(b):
            raise TypeError(f"{what}: element structures differ: {describe(a)} vs {describe(b)}")
        for x, y in zip(a, b):
            assert_same_structure(x, y, what)


def describe(element: Element) -> str:
    """A short description of an element's structure, dtypes and shapes."""
    if isinstance(element, dict):
        return "{" + ", ".join(f"{k!r}: {describe(v)}" for k, v in element.items()) + "}"
    if isinstance(element, tuple):
        inner = ", ".join(describe(v) for v in element)
        return f"({inner},)" if len(element) == 1 else f"({inner})"
    array = np.asarray(element)
    return f"{array.dtype}{list(array.shape)}"


def stack_leaves(leaves: Sequence[Any], what: object) -> np.ndarray:
    """Stacks same-shaped leaves along a new first axis; ``what`` (an op) names errors."""
    first = leaves[0]
    try:
        if isinstance(first, np.generic):
            # A string's dtype has its length: size the batch by the longest, not the first.
            stacked = np.array(
                leaves, dtype=first.dtype.kind if first.dtype.kind in "SU" else first.dtype
            )
        else:
            stacked = np.stack(leaves)
    except (ValueError, TypeError) as err:
        shapes = sorted({str(np.shape(leaf)) for leaf in leaves})
        raise ValueError(
            f"{what!s}: cannot stack elements of different shapes {', '.join(shapes)}. "
            "Make every element the same shape (e.g. pad or resize in map) before batching."
        ) from err
    if stacked.dtype == object:
        raise TypeError(
            f"{what!s}: elements of one batch must share a structure and dtype; got "
            f"{', '.join(sorted({describe(leaf) for leaf in leaves}))}"
        )
    return stacked


def stack(elements: Sequence[Element], what: object) -> Element:
    """Stacks a non-empty list of same-structured elements into one batch."""
    first = elements[0]
    if isinstance(first, dict):
        return {key: stack([e[key] for e in elements], what) for key in first}
    if isinstance(first, tuple):
        items = [stack(parts, what) for parts in zip(*elements)]
        return type(first)(*items) if is_namedtuple(first) else tuple(items)
    return stack_leaves(elements, what)


def unstack(batch: Element, count: int) -> list[Element]:
    """Splits a batched element into ``count`` elements along the first axis."""
    if isinstance(batch, dict):
        columns = {key: unstack(value, count) for key, value in batch.items()}
        return [{key: columns[key][i] for key in batch} for i in range(count)]
    if isinstance(batch, tuple):
        parts = [unstack(value, count) for value in batch]
        if is_namedtuple(batch):
            cls = type(batch)
            return [cls(*row) for row in zip(*parts)]
        return [tuple(row) for row in zip(*parts)]
    return list(batch)


def index_leaves(element: Element, index: Any) -> Element:
    """Indexes every leaf's first axis with ``index`` (an int or an index array)."""
    if isinstance(element, dict):
        return {key: index_leaves(value, index) for key, value in element.items()}
    if isinstance(element, tuple):
        items = [index_leaves(value, index) for value in element]
        return type(element)(*items) if is_namedtuple(element) else tuple(items)
    return element[index]


def leading_dims(element: Element) -> Iterable[tuple[str, int | None]]:
    """Pairs of (path, first-axis length or None for scalars) for every leaf."""

    def walk(value: Element, path: str) -> Iterable[tuple[str, int | None]]:
        if isinstance(value, dict):
            for key in value:
                yield from walk(value[key], f"{path}[{key!r}]")
        elif isinstance(value, tuple):
            for i, item in enumerate(value):
                yield from walk(item, f"{path}[{i}]")
        else:
            shape = np.shape(value)
            yield path or "x", (shape[0] if shape else None)

    return walk(element, "")


def elements_equal(a: Element, b: Element) -> bool:
    """Exact equality of two elements: structure, dtypes, shapes and values."""
    if isinstance(a, dict) or isinstance(b, dict):
        return (
            isinstance(a, dict)
            and isinstance(b, dict)
            and list(a) == list(b)
            and all(elements_equal(a[k], b[k]) for k in a)
        )
    if isinstance(a, tuple) or isinstance(b, tuple):
        return (
            type(a) is type(b)
            and len(a) == len(b)
            and all(elements_equal(x, y) for x, y in zip(a, b))
        )
    x, y = np.asarray(a), np.asarray(b)
    if x.dtype != y.dtype or x.shape != y.shape or type(a) is not type(b):
        return False
    return bool(np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"))
