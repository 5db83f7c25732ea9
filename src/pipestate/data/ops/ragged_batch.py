"""``ragged_batch``: batches elements of varying lengths without padding, as ``RaggedBatch``es."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipestate._validate import brief, check_bool, check_int
from pipestate.data import _spec, _structure
from pipestate.data._ragged import ragged
from pipestate.data.dataset import Dataset
from pipestate.data.iterator import StreamIterator
from pipestate.data.ops.batch import batched_cardinality, read_batch
from pipestate.errors import InvalidArgumentError


def _batch(elements: list[Any], dense: Any, splits: np.dtype[Any], op: str, path: str = "") -> Any:
    """One batch: scalars and known fixed shapes stacked, other components ragged."""
    first = elements[0]
    if isinstance(first, dict):
        return {
            key: _batch(
                [e[key] for e in elements],
                None if dense is None else dense[key],
                splits,
                op,
                f"{path}[{key!r}]",
            )
            for key in first
        }
    if isinstance(first, tuple):
        items = [
            _batch(
                [e[i] for e in elements],
                None if dense is None else dense[i],
                splits,
                op,
                f"{path}[{i}]",
            )
            for i in range(len(first))
        ]
        return type(first)(*items) if _structure.is_namedtuple(first) else tuple(items)
    if dense or np.ndim(first) == 0:
        return _structure.stack_leaves(elements, op, path)
    arrays = [np.asarray(_structure.to_leaf(e, op)) for e in elements]
    if any(a.ndim == 0 for a in arrays):
        raise InvalidArgumentError(
            f"{op}: component {path or 0} is a scalar in some elements and not in others"
        )
    return ragged(arrays, splits, op, path or "0")


class _RaggedBatchIterator(StreamIterator["RaggedBatchDataset"]):
    """Reads ``batch_size`` elements of a streaming input per batch; state: the input's."""

    def _next(self) -> Any:
        dataset = self._source
        elements = read_batch(self._inputs[0], dataset._batch_size, dataset._drop_remainder)
        return dataset._batch_of(elements)


class RaggedBatchDataset(Dataset):
    """tf.data's ``ragged_batch``: batches whose rows may differ in length, without padding.

    A component whose every element has the same known shape (pipestate knows
    the shapes of sources and of the ops that keep them, as tf.data knows
    static shapes) and every scalar component is stacked as ``batch`` stacks
    it. Any other component of rank >= 1 becomes a :class:`RaggedBatch`: the
    rows' values concatenated along their first axis, and ``row_splits`` of
    ``row_splits_dtype``. Only the first axis may be ragged: the rows of one
    component must agree in their other dimensions.

    On a random-access input this dataset is random access too (batch ``j``
    is read by position) and its state is one index; on a streaming input
    its state is the input's.

    Args:
      batch_size: elements per batch (>= 1).
      drop_remainder: drop the last batch if it is smaller than ``batch_size``.
      row_splits_dtype: ``np.int64`` (default) or ``np.int32``.

    Raises:
      TypeError: a non-integer ``batch_size``, a non-bool ``drop_remainder``,
        a ``row_splits_dtype`` other than int32 / int64.
      ValueError: ``batch_size < 1``; while iterating,
        :class:`~pipestate.errors.InvalidArgumentError` for rows whose dtypes,
        ranks or trailing dimensions differ.

    Example:
      >>> import numpy as np
      >>> import pipestate as ps
      >>> ds = ps.Dataset.range(4).map(lambda n: np.arange(n)).ragged_batch(2)
      >>> [batch.to_list() for batch in ds][1]
      [array([0, 1]), array([0, 1, 2])]
    """

    _op_name = "ragged_batch"
    _iterator_class = _RaggedBatchIterator

    def __init__(
        self,
        parent: Dataset,
        batch_size: int,
        drop_remainder: bool = False,
        row_splits_dtype: Any = np.int64,
    ) -> None:
        super().__init__([parent])
        op = self._op_name
        self._batch_size = check_int("batch_size", batch_size, minimum=1, op=op)
        self._drop_remainder = bool(check_bool("drop_remainder", drop_remainder, op=op))
        numpy_type = getattr(row_splits_dtype, "as_numpy_dtype", row_splits_dtype)
        try:
            splits = np.dtype(numpy_type)
        except TypeError:
            splits = None
        if splits not in (np.dtype(np.int64), np.dtype(np.int32)):
            raise TypeError(
                f"{op}: row_splits_dtype must be np.int64 or np.int32, got "
                f"{brief(row_splits_dtype, 60)}"
            )
        self._splits: np.dtype[Any] = splits
        spec = parent._element_spec()
        self._dense = (
            None
            if spec is None
            else _spec.map_specs(
                lambda s: s.shape is not None and None not in s.shape and len(s.shape) > 0, spec
            )
        )

    @property
    def _vectorised(self) -> bool:
        return False

    def _cardinality(self) -> int:
        return batched_cardinality(
            self._parents[0].cardinality(), self._batch_size, self._drop_remainder
        )

    def _leading_dimension(self) -> int | None:
        return None  # a RaggedBatch's leaves are not rows

    def _params(self) -> dict[str, Any]:
        return {
            "batch_size": self._batch_size,
            "drop_remainder": self._drop_remainder,
            "row_splits_dtype": str(self._splits),
        }

    def _batch_of(self, elements: list[Any]) -> Any:
        for element in elements[1:]:
            _structure.assert_same_structure(elements[0], element, self._op_name)
        return _batch(elements, self._dense, self._splits, self._op_name)

    def _get(self, epoch: int, position: int) -> Any:
        parent = self._parents[0]
        start = position * self._batch_size
        stop = start + self._batch_size
        n = parent.cardinality()
        if n >= 0:
            stop = min(stop, n)
        positions = np.arange(start, stop, dtype=np.int64)
        if parent._vectorised:  # one gather, then rows
            batch = parent._get_batch(np.full_like(positions, epoch), positions)
            return self._batch_of(_structure.unstack(batch, len(positions)))
        elements = parent._get_list(epoch, positions)
        while len(elements) < len(positions):  # the read-ahead stopped before a failing element
            elements.append(parent._get(epoch, int(positions[len(elements)])))
        return self._batch_of(elements)
