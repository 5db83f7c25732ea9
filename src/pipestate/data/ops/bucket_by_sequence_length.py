"""``bucket_by_sequence_length``: batches elements of similar length together, padded."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pipestate._validate import brief, check_bool, check_function, check_int
from pipestate.data import _groups, _structure
from pipestate.data._calls import stop_error
from pipestate.data._fingerprint import describe_callable
from pipestate.data.dataset import INFINITE_CARDINALITY, UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import State, StreamIterator, read_bool
from pipestate.data.ops.padded_batch import (
    _check_padding_values,
    _describe_values,
    _normalize_shapes,
    _pad,
    _part,
)
from pipestate.errors import InvalidArgumentError, StateMismatchError


class _BucketIterator(StreamIterator["BucketBySequenceLengthDataset"]):
    """Reads elements into their length's bucket; a full bucket is output as one batch.

    State: the input's, whether it has ended, and the elements waiting in
    the buckets with their bucket ids (``_groups``: at most the sum of the
    batch sizes minus one per bucket). At the end of the input the partial
    buckets are output, smallest bucket first, unless ``drop_remainder``.
    """

    _INPUT_ENDED = "input_ended"
    _STATE_KEYS = (_INPUT_ENDED, _groups.KEYS, _groups.BUFFER, StreamIterator._PARENT)

    def _start(self) -> None:
        super()._start()
        self._groups = _groups.Groups()
        self._input_ended = False

    def _next(self) -> Any:
        dataset = self._source
        groups = self._groups.groups
        if not self._input_ended:
            read = self._inputs[0]._next
            sizes = dataset._batch_sizes
            # The per-element work inlined (the hot path): length, bucket, checks.
            fn, boundaries = dataset._length_func, dataset._boundaries
            last = len(boundaries) if dataset._pad_to_boundary else -1
            while True:
                try:
                    element = read()
                except StopIteration:
                    self._input_ended = True
                    break
                try:
                    length = fn(*element) if type(element) is tuple else fn(element)
                except StopIteration as err:
                    raise stop_error(dataset._op_repr(), fn, err) from err
                if type(length) is not int:
                    length = dataset._length(length)
                bucket = bisect_right(boundaries, length)
                if bucket == last:
                    raise dataset._beyond_error(length)
                group = groups.get(bucket)
                if group is None:
                    group = groups[bucket] = []
                group.append(element)
                if len(group) == sizes[bucket]:
                    del groups[bucket]
                    return dataset._batch(bucket, group)
        while groups:
            bucket = min(groups)
            group = groups.pop(bucket)
            if not dataset._drop_remainder:
                return dataset._batch(bucket, group)
        raise StopIteration

    def _op_state(self) -> State:
        state = self._groups.save(self._op)
        state[self._INPUT_ENDED] = self._input_ended
        state[self._PARENT] = self._inputs[0]._get_state()
        return state

    def _restore(self, state: State) -> None:
        op = self._op
        sizes = self._source._batch_sizes
        input_ended = read_bool(state, self._INPUT_ENDED, op)

        def check(bucket: int, size: int) -> None:
            if not 0 <= bucket < len(sizes) or size >= sizes[bucket]:
                raise StateMismatchError(
                    f"{op}: state['buffer'] holds {size} elements of bucket {bucket}; this "
                    f"dataset has {len(sizes)} buckets of batch sizes {list(sizes)}"
                )

        self._groups.restore(state, op, check)
        super()._restore({self._PARENT: state[self._PARENT]})
        self._input_ended = input_ended


def _int_list(name: str, values: Any, minimum: int | None) -> list[int]:
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if not isinstance(values, Sequence) or isinstance(values, (str, bytes)):
        raise TypeError(
            f"bucket_by_sequence_length: {name} must be a list of integers, got "
            f"{type(values).__name__} {brief(values, 80)}"
        )
    return [
        check_int(f"{name}[{i}]", v, minimum=minimum, op="bucket_by_sequence_length")
        for i, v in enumerate(values)
    ]


def _filled_shapes(element: Any, shapes: Any, filler: int, path: str = "") -> Any:
    """The padded shapes of a bucket padded to its boundary: unknown dimensions become ``filler``.

    Where ``padded_shapes`` is ``None`` a component's first axis is the unknown
    one (its length); other axes pad to the batch's longest.
    """
    if isinstance(element, dict):
        return {
            key: _filled_shapes(
                element[key], _part(shapes, key, None, "padded_shapes", path), filler
            )
            for key in element
        }
    if isinstance(element, tuple):
        return tuple(
            _filled_shapes(item, _part(shapes, i, len(element), "padded_shapes", path), filler)
            for i, item in enumerate(element)
        )
    if shapes is None:
        rank = np.ndim(element)
        return [filler, *([None] * (rank - 1))] if rank else []
    dims = [shapes] if isinstance(shapes, int) else list(shapes)
    return [filler if d is None else d for d in dims]


def _pad_arrays(elements: list[Any], length: int | None) -> np.ndarray | None:
    """The padded batch of plain numeric arrays of one dtype and rank (the common case), or
    ``None`` for anything else (structures, text, mixed dtypes), which ``_pad`` handles.

    ``length``: the size of the first axis (the bucket's boundary - 1), else the longest.
    """
    first = elements[0]
    if type(first) is not np.ndarray or first.dtype.kind not in "biufc":
        return None
    dtype, ndim = first.dtype, first.ndim
    if ndim == 1:
        sizes = []
        for e in elements:  # one pass: the checks and the lengths
            if type(e) is not np.ndarray or e.dtype != dtype or e.ndim != 1:
                return None
            sizes.append(len(e))
        out = np.zeros((len(elements), max(sizes) if length is None else length), dtype)
        for row, (element, size) in enumerate(zip(elements, sizes)):
            out[row, :size] = element
        return out
    if ndim == 0 or not all(
        type(e) is np.ndarray and e.dtype == dtype and e.ndim == ndim for e in elements
    ):
        return None
    target = np.max([e.shape for e in elements], axis=0)
    if length is not None:
        target[0] = length
    out = np.zeros((len(elements), *target.tolist()), dtype)
    for row, element in enumerate(elements):
        region: tuple[Any, ...] = (row, *[slice(0, d) for d in element.shape])
        out[region] = element
    return out


class BucketBySequenceLengthDataset(Dataset):
    """tf.data's ``bucket_by_sequence_length``: batches of elements of similar length.

    ``element_length_func(element)`` gives each element's length; its bucket
    is the number of ``bucket_boundaries`` at or below that length (bucket
    ``i`` holds lengths in ``[boundaries[i - 1], boundaries[i])``). A bucket
    that holds ``bucket_batch_sizes[i]`` elements is output as one batch,
    padded as ``padded_batch`` pads (to the batch's longest, or to
    ``padded_shapes``; with ``pad_to_bucket_boundary``, the length axis to
    ``boundaries[i] - 1``), or stacked as ``batch`` with ``no_padding``. At the
    end of the input the partial buckets are output smallest bucket first,
    unless ``drop_remainder``.

    The iterator state is the input's plus the elements waiting in buckets
    (fewer than the sum of the batch sizes).

    Args:
      element_length_func: maps an element (a tuple unpacked) to an integer scalar length.
      bucket_boundaries: increasing integer upper length boundaries.
      bucket_batch_sizes: the batch size of each bucket, one more than the boundaries.
      padded_shapes: as ``padded_batch``'s; ``None`` pads every axis to the
        batch's longest (the length axis to the boundary with ``pad_to_bucket_boundary``).
      padding_values: as ``padded_batch``'s.
      pad_to_bucket_boundary: pad the unknown dimensions of bucket ``i`` to
        ``boundaries[i] - 1``; a length at or above the last boundary is then
        an error.
      no_padding: stack batches without padding (elements of a batch must have equal shapes).
      drop_remainder: drop the partial batch of each bucket at the end of the input.

    Raises:
      TypeError: a non-callable function, non-integer boundaries or sizes,
        non-bool flags; while iterating, a length that is not an integer scalar.
      ValueError: boundaries not increasing, batch sizes not one more than
        the boundaries, a batch size below 1; while iterating,
        :class:`~pipestate.errors.InvalidArgumentError` for a length at or
        above the last boundary with ``pad_to_bucket_boundary``.

    Example:
      >>> import numpy as np
      >>> import pipestate as ps
      >>> ds = ps.Dataset.range(1, 7).map(lambda n: np.ones(int(n), np.int64))
      >>> ds = ds.bucket_by_sequence_length(len, [3], [2, 4])
      >>> [b.shape for b in ds]
      [(2, 2), (4, 6)]
    """

    _op_name = "bucket_by_sequence_length"
    _keeps_random_access = False
    _iterator_class = _BucketIterator

    def __init__(
        self,
        parent: Dataset,
        element_length_func: Callable[..., Any],
        bucket_boundaries: Sequence[int],
        bucket_batch_sizes: Sequence[int],
        padded_shapes: Any = None,
        padding_values: Any = None,
        pad_to_bucket_boundary: bool = False,
        no_padding: bool = False,
        drop_remainder: bool = False,
    ) -> None:
        super().__init__([parent])
        op = self._op_name
        self._length_func = check_function("element_length_func", element_length_func, op)
        self._boundaries = _int_list("bucket_boundaries", bucket_boundaries, None)
        self._batch_sizes = _int_list("bucket_batch_sizes", bucket_batch_sizes, 1)
        if len(self._batch_sizes) != len(self._boundaries) + 1:
            raise ValueError(
                f"{op}: len(bucket_batch_sizes) must equal len(bucket_boundaries) + 1, got "
                f"{len(self._batch_sizes)} batch sizes for {len(self._boundaries)} boundaries"
            )
        if any(a >= b for a, b in zip(self._boundaries, self._boundaries[1:])):
            raise ValueError(
                f"{op}: bucket_boundaries must be sorted in increasing order, got "
                f"{self._boundaries}"
            )
        self._padded_shapes = _normalize_shapes(padded_shapes)
        _check_padding_values(padding_values)
        self._padding_values = padding_values
        self._pad_to_boundary = bool(
            check_bool("pad_to_bucket_boundary", pad_to_bucket_boundary, op=op)
        )
        self._no_padding = bool(check_bool("no_padding", no_padding, op=op))
        self._drop_remainder = bool(check_bool("drop_remainder", drop_remainder, op=op))

    def _cardinality(self) -> int:
        n = self._parents[0].cardinality()
        return INFINITE_CARDINALITY if n == INFINITE_CARDINALITY else UNKNOWN_CARDINALITY

    def _params(self) -> dict[str, Any]:
        return {
            "element_length_func": describe_callable(self._length_func),
            "bucket_boundaries": self._boundaries,
            "bucket_batch_sizes": self._batch_sizes,
            "padded_shapes": self._padded_shapes,
            "padding_values": _describe_values(self._padding_values),
            "pad_to_bucket_boundary": self._pad_to_boundary,
            "no_padding": self._no_padding,
            "drop_remainder": self._drop_remainder,
        }

    def _length(self, value: Any) -> int:
        """An ``element_length_func`` result that is not a Python int, checked, as an int."""
        return _groups.int64_scalar(value, self._op_name, self._length_func, "element_length_func")

    def _beyond_error(self, length: int) -> InvalidArgumentError:
        """The error for a length at or above the last boundary with ``pad_to_bucket_boundary``."""
        return InvalidArgumentError(
            f"{self._op_name}: when pad_to_bucket_boundary=True, elements must have length < "
            f"bucket_boundaries[-1]={self._boundaries[-1]}, got an element of length {length}"
        )

    def _batch(self, bucket: int, elements: list[Any]) -> Any:
        """One batch of a bucket's elements: stacked, or padded."""
        if self._no_padding:
            return _structure.stack(elements, self)
        if self._padded_shapes is None and self._padding_values is None:
            fast = _pad_arrays(
                elements, self._boundaries[bucket] - 1 if self._pad_to_boundary else None
            )
            if fast is not None:
                return fast
        for element in elements[1:]:
            _structure.assert_same_structure(elements[0], element, self._op_name)
        shapes = self._padded_shapes
        if self._pad_to_boundary:
            shapes = _filled_shapes(elements[0], shapes, self._boundaries[bucket] - 1)
        return _pad(elements, False, shapes, self._padding_values)
