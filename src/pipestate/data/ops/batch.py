"""``batch``: stacks consecutive elements into batches."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from pipestate._validate import check_bool, check_int, check_parallelism
from pipestate.data import _spec, _structure
from pipestate.data._capabilities import Background, Elastic
from pipestate.data._engine import resolve_parallelism
from pipestate.data._feed import FeedReader, next_element
from pipestate.data.dataset import INFINITE_CARDINALITY, UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import DatasetIterator, State, StreamIterator
from pipestate.data.options import AUTOTUNE
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


class _ReadAheadInput(DatasetIterator):
    """A streaming input read ahead on a background thread; its state is the input's.

    Used by ``batch(num_parallel_calls=...)`` over a streaming input: the
    input's elements are read on the thread while the consumer stacks the
    previous batch. Each element travels with the input's state after it, so
    nothing read ahead is saved or lost.
    """

    def __init__(self, parent: Dataset, epoch: int, external: bool) -> None:
        super().__init__(parent)
        self._open = functools.partial(parent._make_iterator, None, epoch)
        self._reader = FeedReader("batch", external=external)
        self._reader.attach(self._open(), self._open)

    _next = next_element

    def _get_state(self) -> State:
        return self._reader.token()  # type: ignore[no-any-return]

    def _set_state(self, state: State) -> None:
        self._reader.stop()
        parent = self._open()
        self._reader.attach(parent, self._open)
        parent._set_state(state)

    def _close(self) -> None:
        self._reader.stop()


class _ParallelBatchIterator(_BatchIterator):
    """``batch(num_parallel_calls=...)`` over a streaming input: the input is read ahead."""

    def _open(self, index: int = 0, epoch: int | None = None) -> DatasetIterator:
        parent = self._source._parents[index]
        return _ReadAheadInput(
            parent, self._epoch if epoch is None else epoch, bool(parent._external_ops())
        )


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

    def __init__(
        self,
        parent: Dataset,
        batch_size: int,
        drop_remainder: bool = False,
        num_parallel_calls: int | None = None,
        deterministic: bool | None = None,
    ) -> None:
        super().__init__([parent])
        self._batch_size = check_int("batch_size", batch_size, minimum=1, op="batch")
        self._drop_remainder = bool(check_bool("drop_remainder", drop_remainder, op="batch"))
        self._num_parallel_calls = (
            None
            if num_parallel_calls is None
            else check_parallelism(num_parallel_calls, "num_parallel_calls", "batch")
        )
        self._deterministic = check_bool(
            "deterministic", deterministic, op="batch", allow_none=True
        )

    def _background(self) -> Background | None:
        if self._num_parallel_calls is None:
            return None
        return Background(
            resolve_parallelism(self._num_parallel_calls),
            autotune=self._num_parallel_calls == AUTOTUNE,
            reorder=self._out_of_order(self._deterministic),
        )

    @property
    def _vectorised(self) -> bool:
        return False

    def _leading_dimension(self) -> int | None:
        return self._batch_size if self._drop_remainder else None

    def _elastic_scale(self) -> int:
        return self._batch_size

    def _cardinality(self) -> int:
        return batched_cardinality(
            self._parents[0].cardinality(), self._batch_size, self._drop_remainder
        )

    def _element_spec(self) -> Any:
        size = self._batch_size if self._drop_remainder else None
        if not self._drop_remainder and self.cardinality() >= 0:
            n = self._parents[0].cardinality()
            size = self._batch_size if n % self._batch_size == 0 else None
        return _spec.batched_spec(self._parents[0]._element_spec(), size)

    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "batch_size": self._batch_size,
            "drop_remainder": self._drop_remainder,
        }
        if self._deterministic is False:
            params["deterministic"] = False
        return params

    def _op_repr(self) -> str:
        items = [f"{key}={value!r}" for key, value in self._params().items()]
        if self._num_parallel_calls is not None:
            items.append(f"num_parallel_calls={self._num_parallel_calls}")
        if self._name is not None:
            items.append(f"name={self._name!r}")
        return f"batch({', '.join(items)})"

    def _make_iterator(self, entropy: int | None, epoch: int = 0) -> DatasetIterator:
        if self._num_parallel_calls is not None and not self._random_access:
            return _ParallelBatchIterator(self, entropy, epoch)
        return super()._make_iterator(entropy, epoch)

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


def batched_cardinality(n: int, batch_size: int, drop_remainder: bool) -> int:
    """The number of batches of ``batch_size`` of ``n`` elements (or ``n``'s unknown/infinite)."""
    if n in (INFINITE_CARDINALITY, UNKNOWN_CARDINALITY):
        return n
    return n // batch_size if drop_remainder else -(-n // batch_size)
