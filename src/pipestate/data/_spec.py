"""``TensorSpec``: the dtype and shape an element's leaf must have."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from pipestate._validate import brief
from pipestate.data import _structure
from pipestate.data._structure import Element, is_namedtuple

_STRING_NAMES = ("string", "str", "bytes")
# Which source dtype kinds convert to a target kind without changing the kind of
# value: an int may become a float, never the reverse; nothing becomes a bool.
_CASTS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf", "c": "iufc", "S": "SU", "U": "U"}


def _as_dtype(dtype: Any) -> np.dtype[Any]:
    """A NumPy dtype from a NumPy / Python type or a tf.DType-like (``as_numpy_dtype``)."""
    if isinstance(dtype, str) and dtype in _STRING_NAMES:
        return np.dtype("S")
    if dtype is bytes or dtype is np.bytes_:
        return np.dtype("S")
    numpy_type = getattr(dtype, "as_numpy_dtype", None)
    if numpy_type is not None:  # a tf.DType: its strings are NumPy objects
        dtype = np.dtype("S") if numpy_type is object else numpy_type
    try:
        result: np.dtype[Any] = np.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"TensorSpec: dtype must be a NumPy dtype, got {dtype!r}") from err
    if result.kind not in "biufcSU":
        raise TypeError(
            f"TensorSpec: dtype must be a bool, numeric or string dtype, got {result} ({dtype!r})"
        )
    # String specs accept any length: the length is a property of each value.
    if result.kind in "SU":
        any_length: np.dtype[Any] = np.dtype(result.kind)
        return any_length
    return result


def _as_shape(shape: Any) -> tuple[int | None, ...] | None:
    """A shape tuple of ints and ``None`` (unknown) dims, or ``None`` (unknown rank)."""
    if shape is None or getattr(shape, "rank", 0) is None:  # tf.TensorShape(None)
        return None
    if isinstance(shape, (int, np.integer, str, bytes)):
        raise TypeError(f"TensorSpec: shape must be a sequence of dims or None, got {shape!r}")
    try:
        dims = list(shape)
    except TypeError as err:
        raise TypeError(
            f"TensorSpec: shape must be a sequence of dims or None, got {shape!r}"
        ) from err
    out: list[int | None] = []
    for dim in dims:
        dim = getattr(dim, "value", dim)  # tf.compat.v1.Dimension
        if dim is None:
            out.append(None)
        elif isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 0:
            raise ValueError(
                f"TensorSpec: each dim must be a non-negative int or None, got {dim!r} in {shape!r}"
            )
        else:
            out.append(int(dim))
    return tuple(out)


@dataclasses.dataclass(frozen=True, init=False)
class TensorSpec:
    """The dtype and shape a leaf of an element must have (as ``tf.TensorSpec``).

    Used by ``Dataset.from_generator(output_signature=...)`` to check and
    convert what a generator yields.

    Args:
      shape: a sequence of dims, each an int or ``None`` (any size); ``None``
        for any rank.
      dtype: a NumPy dtype (or anything ``numpy.dtype`` accepts, or a
        ``tf.DType``); ``"string"`` / ``bytes`` for byte strings of any length.
      name: an optional name, for your own bookkeeping.

    Raises:
      TypeError: an unsupported dtype, or a shape that is not a sequence.
      ValueError: a negative or non-integer dim.

    Example:
      >>> import numpy as np
      >>> import pipestate as ps
      >>> ps.data.TensorSpec((None, 3), np.float32)
      TensorSpec(shape=(None, 3), dtype=float32, name=None)
    """

    shape: tuple[int | None, ...] | None
    dtype: np.dtype[Any]
    name: str | None

    def __init__(self, shape: Any, dtype: Any = np.float32, name: str | None = None) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"TensorSpec: name must be a str or None, got {name!r}")
        object.__setattr__(self, "shape", _as_shape(shape))
        object.__setattr__(self, "dtype", _as_dtype(dtype))
        object.__setattr__(self, "name", name)

    @classmethod
    def from_spec(cls, spec: Any, name: str | None = None) -> TensorSpec:
        """A ``TensorSpec`` from an object with ``shape`` and ``dtype`` (a ``tf.TensorSpec``)."""
        if isinstance(spec, TensorSpec) and name is None:
            return spec
        if not (hasattr(spec, "shape") and hasattr(spec, "dtype")):
            raise TypeError(
                f"TensorSpec.from_spec expects an object with shape and dtype,"
                f" got {brief(spec, 80)}"
            )
        return cls(
            spec.shape, spec.dtype, name if name is not None else getattr(spec, "name", None)
        )

    def __repr__(self) -> str:
        return f"TensorSpec(shape={self.shape}, dtype={self._dtype_name()}, name={self.name!r})"

    def _dtype_name(self) -> str:
        return "string" if self.dtype.kind == "S" else str(self.dtype)

    def _convert(self, value: Any) -> Any:
        """``value`` as a NumPy value of this spec; TypeError / ValueError when it can't be."""
        if isinstance(value, Mapping):
            raise TypeError(f"expected a single value, got a dict {brief(value, 80)}")
        if isinstance(value, bytes) and self.dtype.kind == "S" and self.shape in ((), None):
            return np.bytes_(value)  # not through an array, which drops trailing NUL bytes
        if isinstance(value, (list, tuple)) and self.dtype.kind == "S":
            _structure.to_leaf(value)  # refuses bytes ending in NUL: an S array drops them
        try:
            array = value if isinstance(value, np.ndarray) else np.asarray(value)
        except (TypeError, ValueError) as err:
            raise TypeError(f"can't convert {brief(value, 80)} to an array: {err}") from None
        target = self.dtype
        if array.dtype.kind not in _CASTS.get(target.kind, ""):
            raise TypeError(
                f"expected {_kind_name(target)} ({self._dtype_name()}), got {array.dtype} value "
                f"{brief(value, 80)}"
            )
        if target.kind == "S":
            if array.dtype.kind == "U":
                array = np.char.encode(array, "utf-8")
        elif target.kind != "U" and array.dtype != target:
            with np.errstate(all="ignore"):
                cast = array.astype(target)
            if target.kind in "iu" and not np.array_equal(cast, array):
                raise TypeError(f"value {brief(value, 80)} does not fit in {target}")
            array = cast
        if self.shape is not None and (
            array.ndim != len(self.shape)
            or any(d is not None and d != n for d, n in zip(self.shape, array.shape))
        ):
            raise ValueError(f"expected shape {self.shape}, got shape {array.shape}")
        return array[()] if array.ndim == 0 else array


def _kind_name(dtype: np.dtype[Any]) -> str:
    names = {"b": "a bool", "i": "an integer", "u": "an integer", "f": "a number"}
    return names.get(dtype.kind, "a complex number" if dtype.kind == "c" else "a string")


def normalize_signature(signature: Any, op: str) -> Any:
    """A nested structure of :class:`TensorSpec` (tuples, named tuples, dicts) from ``signature``.

    Lists become tuples; ``tf.TensorSpec``-like leaves become ``TensorSpec``.
    """
    if isinstance(signature, TensorSpec):
        return signature
    if isinstance(signature, Mapping):
        return {key: normalize_signature(value, op) for key, value in signature.items()}
    if is_namedtuple(signature):
        return type(signature)(*(normalize_signature(v, op) for v in signature))
    if isinstance(signature, (tuple, list)):
        return tuple(normalize_signature(v, op) for v in signature)
    if (
        hasattr(signature, "shape")
        and hasattr(signature, "dtype")
        and not isinstance(signature, (np.ndarray, np.generic))
    ):
        return TensorSpec.from_spec(signature)
    raise TypeError(
        f"{op}: output_signature must be a TensorSpec or a nested tuple / dict of them, got "
        f"{type(signature).__name__} {brief(signature, 80)}"
    )


def conform(value: Any, signature: Any, path: str = "") -> Element:
    """``value`` converted to ``signature``'s structure, dtypes and shapes.

    Raises:
      TypeError: a different structure, or a dtype that does not convert safely.
      ValueError: a shape that does not match.
    """
    prefix = f"component {path}: " if path else ""
    if isinstance(signature, TensorSpec):
        try:
            return signature._convert(value)
        except (TypeError, ValueError) as err:
            raise type(err)(f"{prefix}{err}") from None
    if isinstance(signature, dict):
        if not isinstance(value, Mapping) or set(value) != set(signature):
            raise TypeError(
                f"{prefix}expected a dict with keys {sorted(signature, key=str)},"
                f" got {brief(value, 80)}"
            )
        return {k: conform(value[k], spec, f"{path}[{k!r}]") for k, spec in signature.items()}
    if not isinstance(value, (tuple, list)) or len(value) != len(signature):
        raise TypeError(
            f"{prefix}expected a tuple of {len(signature)} components, got {brief(value, 80)}"
        )
    items = [conform(v, spec, f"{path}[{i}]") for i, (v, spec) in enumerate(zip(value, signature))]
    return type(signature)(*items) if is_namedtuple(signature) else tuple(items)


def describe_signature(signature: Any) -> str:
    """A short description of a signature, for fingerprints, ``repr`` and errors."""
    if isinstance(signature, TensorSpec):
        shape = "[any rank]" if signature.shape is None else str(list(signature.shape))
        return f"{signature._dtype_name()}{shape}"
    if isinstance(signature, dict):
        return (
            "{" + ", ".join(f"{k!r}: {describe_signature(v)}" for k, v in signature.items()) + "}"
        )
    inner = ", ".join(describe_signature(v) for v in signature)
    return f"({inner},)" if len(signature) == 1 else f"({inner})"


# ------------------------------------------------------------- element specs
# What a pipeline knows of its elements without computing one: a structure of
# TensorSpec, or None where an op (a user function) makes it unknown.


def spec_of(value: Element) -> Any:
    """The spec (structure, dtypes, exact shapes) of an element or of a value of one."""
    if isinstance(value, dict):
        return {key: spec_of(item) for key, item in value.items()}
    if isinstance(value, tuple):
        items = [spec_of(item) for item in value]
        return type(value)(*items) if is_namedtuple(value) else tuple(items)
    array = np.asarray(value)
    return TensorSpec(array.shape, array.dtype)


def spec_of_rows(value: Element) -> Any:
    """The spec of one row (the first axis sliced off) of every leaf of ``value``."""
    if isinstance(value, dict):
        return {key: spec_of_rows(item) for key, item in value.items()}
    if isinstance(value, tuple):
        items = [spec_of_rows(item) for item in value]
        return type(value)(*items) if is_namedtuple(value) else tuple(items)
    array = np.asarray(value)
    return TensorSpec(array.shape[1:], array.dtype)


def map_specs(fn: Any, spec: Any) -> Any:
    """``fn`` applied to every TensorSpec of a spec structure (``None`` stays ``None``)."""
    if spec is None:
        return None
    if isinstance(spec, TensorSpec):
        return fn(spec)
    if isinstance(spec, dict):
        return {key: map_specs(fn, item) for key, item in spec.items()}
    items = [map_specs(fn, item) for item in spec]
    return type(spec)(*items) if is_namedtuple(spec) else tuple(items)


def batched_spec(spec: Any, size: int | None) -> Any:
    """The spec of batches of elements of ``spec`` (``size`` is ``None`` where it varies)."""

    def batch(leaf: TensorSpec) -> TensorSpec:
        return TensorSpec(None if leaf.shape is None else (size, *leaf.shape), leaf.dtype)

    return map_specs(batch, spec)


def unbatched_spec(spec: Any) -> Any:
    """The spec of the rows of elements of ``spec``."""

    def row(leaf: TensorSpec) -> TensorSpec:
        return TensorSpec(None if not leaf.shape else leaf.shape[1:], leaf.dtype)

    return map_specs(row, spec)


def _leaf_dtypes_match(a: TensorSpec, b: TensorSpec) -> bool:
    return a.dtype == b.dtype or (a.dtype.kind in "SU" and a.dtype.kind == b.dtype.kind)


def merge_specs(a: Any, b: Any, what: str) -> Any:
    """The spec of elements that are of spec ``a`` or ``b``: shapes that differ become unknown.

    Raises:
      TypeError: the structures or dtypes differ (``what`` names the op).
    """
    if a is None or b is None:
        return None

    def mismatch() -> TypeError:
        return TypeError(
            f"{what}: incompatible dataset elements: {describe_signature(a)} vs "
            f"{describe_signature(b)}; both datasets must have the same structure and dtypes"
        )

    def merge(x: Any, y: Any) -> Any:
        if isinstance(x, TensorSpec) or isinstance(y, TensorSpec):
            if not (isinstance(x, TensorSpec) and isinstance(y, TensorSpec)):
                raise mismatch()
            if not _leaf_dtypes_match(x, y):
                raise mismatch()
            if x.shape is None or y.shape is None or len(x.shape) != len(y.shape):
                return TensorSpec(None, x.dtype)
            shape = tuple(p if p == q else None for p, q in zip(x.shape, y.shape))
            return TensorSpec(shape, x.dtype)
        if isinstance(x, dict) or isinstance(y, dict):
            if not (isinstance(x, dict) and isinstance(y, dict)) or set(x) != set(y):
                raise mismatch()
            return {key: merge(x[key], y[key]) for key in x}
        if not (isinstance(x, tuple) and isinstance(y, tuple)) or len(x) != len(y):
            raise mismatch()
        items = [merge(p, q) for p, q in zip(x, y)]
        return type(x)(*items) if is_namedtuple(x) else tuple(items)

    return merge(a, b)


def fully_defined(spec: Any) -> bool:
    """Whether every leaf of a known spec has a known shape."""
    if spec is None:
        return False
    if isinstance(spec, TensorSpec):
        return spec.shape is not None and None not in spec.shape
    values = spec.values() if isinstance(spec, dict) else spec
    return all(fully_defined(item) for item in values)
