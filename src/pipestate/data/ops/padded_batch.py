"""``padded_batch``: batches elements of varying shapes, padding each leaf."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipestate._validate import brief, check_bool, check_int
from pipestate.data import _structure
from pipestate.data._spec import TensorSpec, map_specs
from pipestate.data.dataset import Dataset
from pipestate.data.iterator import StreamIterator
from pipestate.data.ops.batch import batched_cardinality, read_batch

_SCALARS = (bool, int, float, complex, str, bytes, np.generic)


def _normalize_shapes(value: Any, path: str = "") -> Any:
    """``padded_shapes`` with NumPy ints as ints and ``-1`` as ``None`` (validated)."""
    if isinstance(value, dict):
        return {key: _normalize_shapes(item, f"{path}[{key!r}]") for key, item in value.items()}
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or value.dtype.kind not in "iu":
            raise TypeError(
                f"padded_batch: a padded shape must be a 1-D integer array, got "
                f"{_structure.describe(value)} at padded_shapes{path}"
            )
        value = value.tolist()
    if isinstance(value, (tuple, list)):
        items = [_normalize_shapes(item, f"{path}[{i}]") for i, item in enumerate(value)]
        return type(value)(items) if type(value) in (tuple, list) else tuple(items)
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"padded_batch: padded_shapes must hold shapes (sequences of ints or None), got "
            f"{type(value).__name__} {brief(value, 40)} at padded_shapes{path}"
        )
    if value < -1:
        raise ValueError(
            f"padded_batch: padded dimensions must be >= 0, or None / -1 to pad to the longest "
            f"element of the batch, got {int(value)} at padded_shapes{path}"
        )
    return None if value == -1 else int(value)


def _check_padding_values(value: Any, path: str = "") -> None:
    """Raises unless ``padding_values`` is a nested structure of scalars (or ``None``)."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_padding_values(item, f"{path}[{key!r}]")
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            _check_padding_values(item, f"{path}[{i}]")
    elif isinstance(value, np.ndarray):
        if value.ndim != 0:
            raise ValueError(
                f"padded_batch: padding values must be scalars, got an array of shape "
                f"{value.shape} at padding_values{path}"
            )
    elif value is not None and not isinstance(value, _SCALARS):
        raise TypeError(
            f"padded_batch: padding values must be scalars (numbers, bools, strings), got "
            f"{type(value).__name__} {brief(value, 40)} at padding_values{path}"
        )


def _describe_values(value: Any) -> Any:
    """``padding_values`` as plain values for the fingerprint (NumPy values with their dtype)."""
    if isinstance(value, dict):
        return {key: _describe_values(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_describe_values(item) for item in value)
    if isinstance(value, (np.ndarray, np.generic)):
        return f"{value.dtype}({value.item()!r})"
    return value


def _shape_spec(spec: Any, rank: int, path: str) -> tuple[int | None, ...]:
    """The padded shape of one leaf of rank ``rank``: ints, or ``None`` for the batch's longest."""
    if spec is None:
        return (None,) * rank
    dims = (spec,) if isinstance(spec, int) else tuple(spec)
    if len(dims) != rank or not all(d is None or isinstance(d, int) for d in dims):
        raise ValueError(
            f"padded_batch: padded shape {list(dims)} at padded_shapes{path} does not fit "
            f"components of rank {rank}; give one dimension per axis of the component"
        )
    return dims


def _padding_value(value: Any, dtype: np.dtype[Any], path: str) -> np.ndarray:
    """The 0-d padding value for a leaf of ``dtype``: the default (0, False, b"", "") or ``value``.

    A string value keeps its own length (the batch's dtype grows to hold it).
    """
    if value is None:
        return np.zeros((), dtype)
    if isinstance(value, (np.ndarray, np.generic)):
        given = np.asarray(value)
        if given.dtype != dtype and not (
            given.dtype.kind in "SU" and given.dtype.kind == dtype.kind
        ):
            raise TypeError(
                f"padded_batch: padding value {value!r} at padding_values{path} has dtype "
                f"{given.dtype}, but the component has dtype {dtype}; pass a {dtype} value or a "
                "Python scalar"
            )
        return given
    # A Python scalar is converted to the component's dtype if it fits (exactly, for ints).
    kinds = {bool: "b", int: "iuf", float: "f", complex: "c", str: "SU", bytes: "SU"}
    allowed = next((k for t, k in kinds.items() if type(value) is t), "")
    converted = None
    if dtype.kind in allowed:
        try:
            converted = np.asarray(value, dtype=dtype.kind if dtype.kind in "SU" else dtype)
        except (OverflowError, ValueError):
            converted = None
    if converted is None or (dtype.kind in "iu" and converted.item() != value):
        raise TypeError(
            f"padded_batch: padding value {value!r} at padding_values{path} does not fit "
            f"components of dtype {dtype}; pass a value of that dtype"
        )
    return converted


def _filled(shape: tuple[int, ...], value: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """An array of ``shape`` full of ``value``; string dtypes grow to hold a longer value."""
    if dtype.kind in "SU":
        dtype = np.promote_types(dtype, value.dtype)
    return np.full(shape, value, dtype)


def _region(first: int | slice, shape: tuple[int, ...]) -> tuple[int | slice, ...]:
    """The index of row(s) ``first`` of a padded batch where an array of ``shape`` goes."""
    return (first, *(slice(0, d) for d in shape))


def _pad_leaves(
    leaves: Any, stacked: bool, shape_spec: Any, value_spec: Any, path: str
) -> np.ndarray:
    """One padded, stacked leaf from a list of leaves (or an already stacked one)."""
    if stacked:
        batch = np.asarray(leaves)
        arrays: list[np.ndarray] = []
        shapes = [batch.shape[1:]]
        dtype = batch.dtype
    else:
        arrays = [np.asarray(leaf) for leaf in leaves]
        shapes = [a.shape for a in arrays]
        dtypes = {a.dtype for a in arrays}
        dtype = arrays[0].dtype
        if len(dtypes) > 1:
            kinds = {d.kind for d in dtypes}
            if len(kinds) != 1 or kinds.pop() not in "SU":
                raise TypeError(
                    f"padded_batch: elements of one batch have different dtypes "
                    f"{sorted(str(d) for d in dtypes)} at {path or 'the element'}"
                )
            dtype = np.result_type(*dtypes)
    ranks = {len(shape) for shape in shapes}
    if len(ranks) != 1:
        raise ValueError(
            f"padded_batch: elements of one batch have different ranks at "
            f"{path or 'the element'}: shapes {sorted({str(s) for s in shapes})}"
        )
    padded = _shape_spec(shape_spec, ranks.pop(), path)
    longest = [max(dims) for dims in zip(*shapes)] if padded else []
    for shape in shapes:
        for axis, (dim, limit) in enumerate(zip(shape, padded)):
            if limit is not None and dim > limit:
                raise ValueError(
                    f"padded_batch: an element has shape {shape} at {path or 'the element'}, "
                    f"larger than its padded shape {list(padded)} along axis {axis}; increase "
                    "padded_shapes or use None to pad to the longest element of the batch"
                )
    target = tuple(longest[i] if limit is None else limit for i, limit in enumerate(padded))
    # Checked whether or not this batch needs padding, as tf.data checks it once.
    value = _padding_value(value_spec, dtype, path)
    if stacked:
        if target == batch.shape[1:]:
            return batch
        out = _filled((len(batch), *target), value, dtype)
        out[_region(slice(None), batch.shape[1:])] = batch
        return out
    if all(shape == target for shape in shapes) and len(dtypes) == 1:
        return np.stack(arrays)
    out = _filled((len(arrays), *target), value, dtype)
    for i, array in enumerate(arrays):
        out[_region(i, array.shape)] = array
    return out


def _part(spec: Any, key: Any, size: int | None, what: str, path: str) -> Any:
    """The part of ``padded_shapes`` / ``padding_values`` for one component of a structure."""
    if spec is None:
        return None
    if size is None:  # a dict component
        if isinstance(spec, dict) and key in spec:
            return spec[key]
    elif isinstance(spec, (tuple, list)) and len(spec) == size:
        return spec[key]
    if what == "padding_values" and not isinstance(spec, (dict, tuple, list)):
        return spec  # one padding value for every component, as tf.data
    raise ValueError(
        f"padded_batch: {what} {brief(spec, 80)} does not match the element structure at "
        f"{path or 'the top level'}; give one entry per component"
    )


def _pad(batch: Any, stacked: bool, shapes: Any, values: Any, path: str = "") -> Any:
    """Pads and stacks a list of elements (or pads a stacked batch), component by component."""
    first = batch if stacked else batch[0]
    if isinstance(first, dict):
        return {
            key: _pad(
                first[key] if stacked else [e[key] for e in batch],
                stacked,
                _part(shapes, key, None, "padded_shapes", path),
                _part(values, key, None, "padding_values", path),
                f"{path}[{key!r}]",
            )
            for key in first
        }
    if isinstance(first, tuple):
        items = [
            _pad(
                first[i] if stacked else [e[i] for e in batch],
                stacked,
                _part(shapes, i, len(first), "padded_shapes", path),
                _part(values, i, len(first), "padding_values", path),
                f"{path}[{i}]",
            )
            for i in range(len(first))
        ]
        return type(first)(*items) if _structure.is_namedtuple(first) else tuple(items)
    return _pad_leaves(batch, stacked, shapes, values, path)


class _PaddedBatchIterator(StreamIterator["PaddedBatchDataset"]):
    """Reads ``batch_size`` elements of a streaming input per batch; state: the input's.

    A batch is read whole within one ``next``, so nothing is buffered between
    batches and the input's position is the whole state.
    """

    def _next(self) -> Any:
        dataset = self._source
        elements = read_batch(self._inputs[0], dataset._batch_size, dataset._drop_remainder)
        return dataset._pad_elements(elements)


class PaddedBatchDataset(Dataset):
    """Batches of ``batch_size`` elements, each leaf padded to a common shape and stacked.

    As tf.data: with ``padded_shapes=None`` every dimension of every component
    is padded to the longest in the batch; otherwise ``padded_shapes`` gives
    a shape per component (matching the element structure), whose ``None`` /
    ``-1`` dimensions pad to the batch's longest and whose fixed dimensions pad
    to exactly that size. ``padding_values`` gives a scalar per component, or
    one for all; the default is 0 (``False``, ``b""``, ``""``). On a
    random-access input this dataset is random access too (batch ``j`` is one
    read of its positions) and its state is one index; on a streaming input
    its state is the input's.

    Args:
      batch_size: elements per batch (>= 1).
      padded_shapes: ``None`` or a nested structure of shapes (sequences of
        ints, ``None`` or ``-1``).
      padding_values: ``None`` or a nested structure of scalars. A NumPy value
        must have the component's dtype; a Python scalar is converted to it if
        it fits exactly.
      drop_remainder: drop the last batch if it is smaller than ``batch_size``.

    Raises:
      TypeError / ValueError: invalid arguments; while iterating, an element
        larger than its padded shape, ranks or dtypes that differ within a
        batch, or settings that do not match the element structure.

    Example:
      >>> import numpy as np
      >>> import pipestate as ps
      >>> ds = ps.Dataset.range(1, 4).map(lambda n: np.arange(n)).padded_batch(3)
      >>> next(iter(ds))
      array([[0, 0, 0],
             [0, 1, 0],
             [0, 1, 2]])
    """

    _op_name = "padded_batch"
    _iterator_class = _PaddedBatchIterator

    def __init__(
        self,
        parent: Dataset,
        batch_size: int,
        padded_shapes: Any = None,
        padding_values: Any = None,
        drop_remainder: bool = False,
    ) -> None:
        super().__init__([parent])
        self._batch_size = check_int("batch_size", batch_size, minimum=1, op="padded_batch")
        self._drop_remainder = bool(check_bool("drop_remainder", drop_remainder, op="padded_batch"))
        self._padded_shapes = _normalize_shapes(padded_shapes)
        _check_padding_values(padding_values)
        self._padding_values = padding_values

    @property
    def _vectorised(self) -> bool:
        return False

    def _cardinality(self) -> int:
        return batched_cardinality(
            self._parents[0].cardinality(), self._batch_size, self._drop_remainder
        )

    def _leading_dimension(self) -> int | None:
        return self._batch_size if self._drop_remainder else None

    def _element_spec(self) -> Any:
        spec = self._parents[0]._element_spec()
        if spec is None:
            return None
        size = self._batch_size if self._drop_remainder else None
        shapes = self._padded_shapes
        fixed = (
            isinstance(spec, TensorSpec)
            and isinstance(shapes, (list, tuple))
            and all(dim is None or isinstance(dim, int) for dim in shapes)
        )

        def padded(leaf: TensorSpec) -> TensorSpec:
            if leaf.shape is None:
                return TensorSpec(None, leaf.dtype)
            # Padded dims are known only where padded_shapes fixes them.
            dims = list(shapes) if fixed else [None] * len(leaf.shape)
            return TensorSpec((size, *dims), leaf.dtype)

        return map_specs(padded, spec)

    def _params(self) -> dict[str, Any]:
        return {
            "batch_size": self._batch_size,
            "padded_shapes": self._padded_shapes,
            "padding_values": _describe_values(self._padding_values),
            "drop_remainder": self._drop_remainder,
        }

    def _pad_elements(self, elements: list[Any]) -> Any:
        """One padded batch of a list of elements."""
        for element in elements[1:]:
            _structure.assert_same_structure(elements[0], element, "padded_batch")
        return _pad(elements, False, self._padded_shapes, self._padding_values)

    def _get(self, epoch: int, position: int) -> Any:
        parent = self._parents[0]
        start = position * self._batch_size
        stop = start + self._batch_size
        n = parent.cardinality()
        if n >= 0:
            stop = min(stop, n)
        positions = np.arange(start, stop, dtype=np.int64)
        if parent._vectorised:
            # A stacked read has one shape per leaf: only padded_shapes can pad it.
            batch = parent._get_batch(np.full(len(positions), epoch, np.int64), positions)
            return _pad(batch, True, self._padded_shapes, self._padding_values)
        return self._pad_elements([parent._get(epoch, int(p)) for p in positions])
