"""``batch``: stacks consecutive elements into batches."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipestate._validate import check_bool, check_int
from pipestate.data import _spec, _structure
from pipestate.data._capabilities import Elastic
from pipestate.data.dataset import INFINITE_CARDINALITY, UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import DatasetIterator, StreamIterator
from pipestate.errors import InvalidArgumentError


class _BatchIterator(StreamIterator["BatchDataset"]):
    """Reads ``batch_size`` elements of a streaming input per batch; state: the input's.

    A batch is read whole within one ``next``, so between batches nothing is
    buffered and the input's position is the whole state.
    """

    def _next(self) -> Any:
        dataset = self._source
        elements = read_batch(self._inputs[0], dataset._batch_size, dataset._drop_remainder)
        return _structure.stack(elements, dataset)


def read_batch(parent: DatasetIterator, size: int, drop_remainder: bool) -> list[Any]:
    """The next ``size`` elements of ``parent`` (fewer at its end, unless ``drop_remainder``).

    Raises:
      StopIteration: nothing is left (or only a remainder that is dropped).
    """
    elements: list[Any] = []
    append, read = elements.append, parent._next
    try:
        for _ in range(size):
            append(read())
    except StopIteration:
        if not elements or drop_remainder:
            raise
    return elements


class BatchDataset(Dataset):
    """Batches of ``batch_size`` elements, each leaf stacked along a new first axis.

    The last, smaller batch is kept unless ``drop_remainder``. Batch ``j`` is
    one vectorised read of the positions ``j * batch_size ...`` of the input.
    """

    _op_name = "batch"
    _elastic = Elastic.BATCH
    _iterator_class = _BatchIterator

    def __init__(self, parent: Dataset, batch_size: int, drop_remainder: bool = False) -> None:
        super().__init__([parent])
        self._batch_size = check_int("batch_size", batch_size, minimum=1, op="batch")
        self._drop_remainder = bool(check_bool("drop_remainder", drop_remainder, op="batch"))

    @property
    def _vectorised(self) -> bool:
        return False

    def _leading_dimension(self) -> int | None:
        return self._batch_size if self._drop_remainder else None

    def _elastic_scale(self) -> int:
        return self._batch_size

    def _cardinality(self) -> int:
        n = self._parents[0].cardinality()
        if n in (INFINITE_CARDINALITY, UNKNOWN_CARDINALITY):
            return n
        return n // self._batch_size if self._drop_remainder else -(-n // self._batch_size)

    def _element_spec(self) -> Any:
        size = self._batch_size if self._drop_remainder else None
        if not self._drop_remainder and self.cardinality() >= 0:
            n = self._parents[0].cardinality()
            size = self._batch_size if n % self._batch_size == 0 else None
        return _spec.batched_spec(self._parents[0]._element_spec(), size)

    def _params(self) -> dict[str, Any]:
        return {"batch_size": self._batch_size, "drop_remainder": self._drop_remainder}

    def _positions(self, position: int) -> np.ndarray:
        start = position * self._batch_size
        stop = start + self._batch_size
        n = self._parents[0].cardinality()
        if n >= 0:
            stop = min(stop, n)
        return np.arange(start, stop, dtype=np.int64)

    def _get(self, epoch: int, position: int) -> Any:
        positions = self._positions(position)
        try:
            return self._parents[0]._get_batch(np.full(len(positions), epoch, np.int64), positions)
        except InvalidArgumentError as err:
            raise self._batch_error(err, int(positions[0]), int(positions[-1])) from err

    def _batch_error(
        self, err: InvalidArgumentError, first: int, last: int
    ) -> InvalidArgumentError:
        return InvalidArgumentError(f"{self._op_repr()}, input elements {first} to {last}: {err}")

    def _get_list(self, epoch: int, positions: np.ndarray) -> list[Any]:
        """Consecutive batches over an input with a per-element function: one block read.

        The input's elements for all the batches come from one ``_get_list``
        (its function called in one loop), then each batch is stacked, so the
        per-batch cost is the stacking alone. Over a vectorised input each
        batch stays one gather (``_get``).
        """
        parent = self._parents[0]
        count = len(positions)
        if parent._vectorised or count < 2 or not (np.diff(positions) == 1).all():
            return super()._get_list(epoch, positions)
        size = self._batch_size
        start = int(positions[0]) * size
        stop = (int(positions[-1]) + 1) * size
        n = parent.cardinality()
        if n >= 0:
            stop = min(stop, n)
        elements = parent._get_list(epoch, np.arange(start, stop, dtype=np.int64))
        if len(elements) == stop - start:
            block = _structure.stack_scalar_block(elements)
            if block is not None:  # one numeric type: one array, cut into batches
                return [block[low : low + size] for low in range(0, len(block), size)]
        out: list[Any] = []
        stack = _structure.stack
        for low in range(0, stop - start, size):
            high = min(low + size, stop - start)
            if high > len(elements):  # the input stopped before a failing element
                break
            try:
                out.append(stack(elements[low:high], parent))  # as parent._get_batch names it
            except InvalidArgumentError as err:
                if out:
                    break  # asked for this batch again, it raises
                raise self._batch_error(err, start + low, start + high - 1) from err
        if not out:
            return [self._get(epoch, int(positions[0]))]  # raises the input's error
        return out
