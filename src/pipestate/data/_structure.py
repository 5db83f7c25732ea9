"""Nested element structures: tuples, named tuples and dicts of NumPy leaves."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeAlias

import numpy as np

from pipestate._validate import brief
from pipestate.errors import InvalidArgumentError

Element: TypeAlias = Any
"""A pipeline element: a NumPy value, or a nested tuple / dict of them."""

_LEAF_TYPES = (np.ndarray, np.generic)
# NumPy scalar types that are element leaves as they are (not text, not objects):
# the per-element fast path checks the type alone.
_READY_SCALARS = frozenset(
    np.dtype(code).type for code in "?bhilqBHILQefdgFDG" if np.dtype(code).kind != "O"
) | {np.bytes_}
NOT_DATA: list[type] = []
"""Types that are never element values (``Dataset``, registered by its module)."""


def is_namedtuple(value: object) -> bool:
    """Whether ``value`` is an instance of a ``collections.namedtuple`` class."""
    return isinstance(value, tuple) and hasattr(type(value), "_fields")


def to_leaf(value: Any, what: object = None) -> Any:
    """Converts a leaf to a NumPy value; 0-d results become NumPy scalars.

    Text becomes UTF-8 ``bytes`` (NumPy ``S`` dtypes), as tf.data's strings do.
    ``what`` (an op) names the error raised for a value that has no NumPy form.
    """
    if type(value) in _READY_SCALARS:
        return value
    if type(value) is str or isinstance(value, np.str_):
        return np.bytes_(value.encode("utf-8"))
    if type(value) is bytes:  # not through an array, which drops trailing NUL bytes
        return np.bytes_(value)
    if isinstance(value, _LEAF_TYPES):
        kind = value.dtype.kind
        if kind == "U":
            return encode_text(value)
        if kind == "O":
            return _from_objects(value, what)
        # A 0-d array is a NumPy scalar, as everywhere else (and after a restore).
        return value[()] if type(value) is np.ndarray and value.ndim == 0 else value
    if NOT_DATA and isinstance(value, tuple(NOT_DATA)):
        # NumPy would iterate a dataset into an array of its elements.
        where = f"{what!s}: " if what is not None else ""
        raise TypeError(
            f"{where}a Dataset can't be a value of an element, got {brief(value, 120)}. "
            "Use flat_map() or interleave() to read datasets made from elements, "
            "and Dataset.zip() or concatenate() to combine datasets."
        )
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, RuntimeError) as err:
        raise TypeError(_unrepresentable(value, what, err)) from err
    kind = array.dtype.kind
    if kind == "U":
        return encode_text(array)
    if kind == "O":
        return _from_objects(array, what)
    if kind == "S" and array.size:
        _check_no_trailing_nul(value, what)
    return array[()] if array.ndim == 0 else array


def _check_no_trailing_nul(value: Any, what: object) -> None:
    """Refuse bytes ending in NUL bytes that an ``S`` array would drop (data would be lost)."""

    # The S array already dropped them: look at the Python values it was made from.
    def walk(node: Any) -> bool:
        if isinstance(node, bytes):
            return node.endswith(b"\x00")
        if isinstance(node, (list, tuple)) or (
            isinstance(node, np.ndarray) and node.dtype.kind == "O"
        ):
            return any(walk(item) for item in node)
        return False

    if walk(value):
        where = f"{what!s}: " if what is not None else ""
        raise TypeError(
            f"{where}bytes values that end in NUL bytes can't be stacked into a NumPy S array, "
            "which drops trailing NULs (the data would be lost). Give them one by one (bytes "
            "elements keep every byte), or as uint8 arrays (np.frombuffer(b, np.uint8))."
        )


def encode_text(value: Any) -> Any:
    """A NumPy ``U`` value as UTF-8 bytes (``S`` dtype), keeping scalars scalars."""
    encoded = np.char.encode(np.asarray(value), "utf-8")
    return encoded[()] if encoded.ndim == 0 else encoded


def _from_objects(array: Any, what: object) -> Any:
    """An object array of text as an ``S`` array; anything else can't be an element."""
    items = np.asarray(array, dtype=object)
    flat = items.reshape(-1)
    if flat.size and all(isinstance(item, (bytes, str)) for item in flat):
        _check_no_trailing_nul(flat, what)
        out = np.array(
            [item.encode("utf-8") if isinstance(item, str) else item for item in flat], dtype="S"
        ).reshape(items.shape)
        return out[()] if out.ndim == 0 else out
    raise TypeError(_unrepresentable(items[()] if items.ndim == 0 else array, what, None))


def _unrepresentable(value: Any, what: object, err: BaseException | None) -> str:
    """Why ``value`` can't be an element leaf, and what to do instead."""
    where = f"{what!s}: " if what is not None else ""
    module = type(value).__module__ or ""
    if value is None:
        advice = (
            "None is not a value an element can hold; return an array or a number, "
            "or drop the element with filter()"
        )
    elif module.startswith("torch"):
        dtype = getattr(value, "dtype", None)
        if getattr(value, "requires_grad", False):
            advice = (
                f"a torch tensor that requires grad can't become a NumPy array; return "
                f"tensor.detach() (dtype {dtype})"
            )
        else:
            advice = (
                f"a torch tensor of dtype {dtype} has no NumPy dtype; convert it in the "
                "function, e.g. tensor.float() or tensor.to(torch.float32)"
            )
    else:
        advice = (
            "elements must be NumPy values (numbers, bools, bytes/str) or nested "
            "tuples/dicts of them; lists must be rectangular, of one dtype"
        )
        if err is not None:
            advice += f" ({type(err).__name__}: {err})"
    kind = type(value).__name__
    return f"{where}can't represent {kind} {brief(value, 120)} as an element: {advice}"


def normalize(value: Any, *, lists_as_tuples: bool, what: object = None) -> Element:
    """Converts a user value to an element: dicts and tuples stay structures.

    Args:
      value: the value to convert.
      lists_as_tuples: ``True`` for values returned by user functions: a
        returned list becomes a tuple, as in tf.data's ``map``; lists inside the
        returned structure are data and become arrays. ``False`` for source
        data, where every list is data.
      what: the op converting, named in errors.
    """
    kind = type(value)
    if kind in _READY_SCALARS or _ready_array(value):
        return value
    if lists_as_tuples and kind is list:
        return tuple(_normalize(item, what) for item in value)
    return _normalize(value, what)


def _normalize(value: Any, what: object) -> Element:
    kind = type(value)
    if kind in _READY_SCALARS or _ready_array(value):
        return value
    if isinstance(value, dict):
        return {key: _normalize(item, what) for key, item in value.items()}
    if is_namedtuple(value):
        return type(value)(*(_normalize(item, what) for item in value))
    if isinstance(value, tuple):
        return tuple(_normalize(item, what) for item in value)
    return to_leaf(value, what)


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
    try:
        array = np.asarray(element)
    except (TypeError, ValueError):
        return type(element).__name__
    return f"{array.dtype}{list(array.shape)}"


def ready_scalars(values: Sequence[Any]) -> bool:
    """Whether every value is a NumPy scalar that is an element as it is (no conversion)."""
    return _READY_SCALARS.issuperset(map(type, values))


def stack_scalar_block(values: Sequence[Any]) -> np.ndarray | None:
    """``values`` as one array when they are NumPy scalars of one numeric type; else ``None``.

    Stacking them batch by batch gives the same arrays (text is left out: a
    batch of strings sizes its dtype by its own longest).
    """
    kinds = set(map(type, values))
    if len(kinds) != 1:
        return None
    kind = kinds.pop()
    if kind is np.bytes_ or kind not in _READY_SCALARS:
        return None
    return np.fromiter(values, values[0].dtype, len(values))


def stack_leaves(leaves: Sequence[Any], what: object, path: str = "") -> np.ndarray:
    """Stacks leaves of one dtype and shape along a new first axis; ``what`` (an op) names errors.

    Raises:
      InvalidArgumentError: a leaf is a structure, or the dtypes or shapes differ.
    """
    types = set(map(type, leaves))
    if len(types) == 1:
        kind = next(iter(types))
        if kind is np.bytes_:  # the dtype sizes by the longest string
            _refuse_trailing_nul(leaves, what, path)
            return np.array(leaves, dtype="S")
        if kind in _READY_SCALARS:  # one NumPy scalar type: one dtype and shape
            return np.fromiter(leaves, leaves[0].dtype, len(leaves))
    if not all(type(leaf) in _READY_SCALARS or _ready_array(leaf) for leaf in leaves):
        # Python values, text, objects or 0-d arrays: converted as every other path does.
        for i, leaf in enumerate(leaves):
            if isinstance(leaf, (tuple, dict, list)):
                raise _structure_error(leaves[0], leaf, i, what, path)
        leaves = [to_leaf(leaf, what) for leaf in leaves]
    first = leaves[0]
    dtype, shape = first.dtype, first.shape
    for i, leaf in enumerate(leaves):
        if leaf.dtype != dtype and not (dtype.kind == "S" and leaf.dtype.kind == "S"):
            raise InvalidArgumentError(
                f"{what!s}: cannot batch tensors of different dtypes in component "
                f"{path or 0}: the first element has {dtype} and element {i} has {leaf.dtype}. "
                "Cast every element to one dtype (e.g. in map) before batching."
            )
        if leaf.shape != shape:
            raise InvalidArgumentError(
                f"{what!s}: cannot batch tensors with different shapes in component "
                f"{path or 0}: the first element has shape {list(shape)} and element {i} has "
                f"shape {list(leaf.shape)}. Use padded_batch, or make every element the same "
                "shape (e.g. pad or resize in map) before batching."
            )
    if isinstance(first, np.generic):
        # A string's dtype has its length: size the batch by the longest, not the first.
        if dtype.kind == "S":
            _refuse_trailing_nul(leaves, what, path)
        return np.array(leaves, dtype="S" if dtype.kind == "S" else dtype)
    return np.stack(leaves)


def _refuse_trailing_nul(leaves: Sequence[Any], what: object, path: str) -> None:
    """Refuse to stack bytes values that end in NUL bytes: a NumPy ``S`` array drops them."""
    for i, leaf in enumerate(leaves):
        if isinstance(leaf, bytes) and leaf.endswith(b"\x00"):
            raise InvalidArgumentError(
                f"{what!s}: cannot batch bytes values that end in NUL bytes in component "
                f"{path or 0}: element {i} ({bytes(leaf)[-16:]!r} at its end) would lose them "
                "in a NumPy S array. Batch them as arrays instead (e.g. "
                "map(lambda b: np.frombuffer(b, np.uint8)) then padded_batch or "
                "ragged_batch), or batch after parsing them."
            )


def _ready_array(value: Any) -> bool:
    """Whether ``value`` is an element leaf as it is: an array of at least one dimension,
    neither text (``U``) nor objects."""
    return type(value) is np.ndarray and value.ndim > 0 and value.dtype.kind not in "UO"


def _structure_error(
    first: Element, other: Element, index: int, what: object, path: str
) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"{what!s}: cannot batch elements with different structures"
        f"{f' in component {path}' if path else ''}: the first element is {describe(first)} "
        f"and element {index} is {describe(other)}. Make every element the same structure "
        "(the same dict keys, tuple lengths and nesting) before batching."
    )


def stack(elements: Sequence[Element], what: object, path: str = "") -> Element:
    """Stacks a non-empty list of same-structured elements into one batch.

    Raises:
      InvalidArgumentError: the elements' structures, dtypes or shapes differ.
    """
    first = elements[0]
    if isinstance(first, dict):
        keys = first.keys()
        for i, element in enumerate(elements):
            if not isinstance(element, dict) or element.keys() != keys:
                raise _structure_error(first, element, i, what, path)
        return {key: stack([e[key] for e in elements], what, f"{path}[{key!r}]") for key in first}
    if isinstance(first, tuple):
        cls, size = type(first), len(first)
        for i, element in enumerate(elements):
            if type(element) is not cls or len(element) != size:
                raise _structure_error(first, element, i, what, path)
        items = [stack(parts, what, f"{path}[{i}]") for i, parts in enumerate(zip(*elements))]
        return cls(*items) if is_namedtuple(first) else tuple(items)
    return stack_leaves(elements, what, path)


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


def leading_dimension(data: Any, skip: int) -> int | None:
    """The dimension ``skip`` shared by every leaf of ``data``, or ``None``."""
    dims = {np.shape(leaf)[skip] if np.ndim(leaf) > skip else None for leaf in flatten(data)}
    if len(dims) == 1 and None not in dims:
        return int(dims.pop())  # type: ignore[arg-type]
    return None


def scalar_leaf(leaf: Any) -> Any:
    """A 0-d array as a NumPy scalar, so a saved state restores exactly."""
    return leaf[()] if isinstance(leaf, np.ndarray) and leaf.ndim == 0 else leaf


class StructureMismatchError(TypeError):
    """A value does not have a template's structure or leaf dtypes (see :func:`conform_to`)."""


def conform_to(value: Any, template: Any) -> Any:
    """``value`` as an element with ``template``'s structure and dtypes, or raises
    :class:`StructureMismatchError` (shapes may differ).

    The per-element check of a new ``scan`` / ``reduce`` state: one walk instead
    of normalising, comparing structures and comparing dtypes separately.
    """
    if isinstance(template, dict):
        if not isinstance(value, dict) or value.keys() != template.keys():
            raise StructureMismatchError
        return {key: conform_to(item, template[key]) for key, item in value.items()}
    if isinstance(template, tuple):
        if not isinstance(value, tuple) or len(value) != len(template):
            raise StructureMismatchError
        items = [conform_to(item, part) for item, part in zip(value, template)]
        return type(value)(*items) if is_namedtuple(value) else tuple(items)
    if type(value) is type(template) and isinstance(value, np.generic):
        return value
    if isinstance(value, (dict, tuple)):
        raise StructureMismatchError
    leaf = scalar_leaf(to_leaf(value))
    if not dtype_matches(leaf, np.asarray(template).dtype):
        raise StructureMismatchError
    return leaf


def dtype_matches(value: Any, dtype: np.dtype[Any]) -> bool:
    """Whether ``value``'s dtype is ``dtype`` (strings of any length match strings)."""
    actual = np.asarray(value).dtype
    return actual == dtype or (actual.kind in "SU" and actual.kind == dtype.kind)
