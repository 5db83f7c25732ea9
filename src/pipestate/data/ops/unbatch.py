"""``unbatch``: splits each element along its first axis."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipestate._validate import brief
from pipestate.data import _buffer, _spec, _structure
from pipestate.data.dataset import INFINITE_CARDINALITY, UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import State, StreamIterator, read_int
from pipestate.errors import StateMismatchError


def split(batch: Any) -> list[Any]:
    """The rows of ``batch``, whose components must share their first dimension."""
    sizes = set()
    for leaf in _structure.flatten(batch):
        shape = np.shape(leaf)
        if not shape:
            raise ValueError(
                f"unbatch: cannot unbatch an element with scalar components, got "
                f"{_structure.describe(batch)}; every component needs a first (batch) axis"
            )
        sizes.add(shape[0])
    if len(sizes) != 1:
        raise ValueError(
            f"unbatch: every component of an element must have the same first dimension, got "
            f"{_structure.describe(batch)}"
        )
    return _structure.unstack(batch, sizes.pop())


class _UnbatchIterator(StreamIterator["UnbatchDataset"]):
    """Yields the rows of the input's elements; state: the input's position and the row.

    Between calls the current batch is held only while some of its rows are
    still to come (``offset > 0``). A random-access input re-reads that batch
    by index on restore, so ``"batch"`` is ``None`` and the state is O(1);
    otherwise ``"batch"`` saves it (``_buffer.pack`` of zero or one element).
    """

    _OFFSET = "offset"
    _BATCH = "batch"
    _STATE_KEYS = (_OFFSET, _BATCH, StreamIterator._PARENT)

    def _start(self) -> None:
        super()._start()
        self._by_index = self._source._parents[0]._random_access
        self._batch: Any = None
        self._rows: list[Any] = []
        self._offset = 0

    def _next(self) -> Any:
        offset = self._offset
        rows = self._rows
        if offset < len(rows):
            self._offset = offset + 1
            return rows[offset]
        parent = self._inputs[0]
        while True:
            batch = parent._next()
            rows = split(batch)
            if rows:
                break
        self._batch, self._rows, self._offset = batch, rows, 1
        return rows[0]

    def _op_state(self) -> State:
        # A batch whose last row has been read is as good as none.
        offset = self._offset if self._offset < len(self._rows) else 0
        batch = [self._batch] if offset else []
        saved = None if self._by_index else _buffer.pack(batch, self._op)
        return {
            self._OFFSET: offset,
            self._BATCH: saved,
            self._PARENT: self._inputs[0]._get_state(),
        }

    def _restore(self, state: State) -> None:
        op = self._op
        offset = read_int(state, self._OFFSET, op)
        saved = state[self._BATCH]
        super()._restore({self._PARENT: state[self._PARENT]})
        if self._by_index:
            if saved is not None:
                raise StateMismatchError(
                    f"{op}: state['batch'] must be None for a random-access input (the batch "
                    f"is re-read by index), got {brief(saved, 80)}"
                )
            if not offset:
                return
            index = self._inputs[0]._index - 1  # type: ignore[attr-defined]
            if index < 0:
                raise StateMismatchError(
                    f"{op}: state['offset']={offset} but the input has not been read yet"
                )
            batch = self._source._parents[0]._get(self._epoch, index)
        else:
            batches = _buffer.unpack(saved, op)
            if len(batches) != (1 if offset else 0):
                raise StateMismatchError(
                    f"{op}: state['batch'] must hold {1 if offset else 0} element(s) with "
                    f"state['offset']={offset}, got {len(batches)}"
                )
            if not offset:
                return
            batch = batches[0]
        rows = split(batch)
        if offset >= len(rows):
            raise StateMismatchError(
                f"{op}: state['offset']={offset} is out of range for the current batch of "
                f"{len(rows)} rows"
            )
        self._batch, self._rows, self._offset = batch, rows, offset


class UnbatchDataset(Dataset):
    """Each input element split along its first axis into that many elements.

    Every component of an element must have the same first dimension; rows of
    an empty batch are none. The iterator keeps the batch being split and the
    index of the next row: on a random-access input the state is O(1) (the
    batch is re-read by its index on restore); otherwise the batch is saved.

    Raises:
      ValueError: an element has a scalar component, or components whose first
        dimensions differ (raised while iterating).

    Example:
      >>> import pipestate as ps
      >>> [int(x) for x in ps.Dataset.range(5).batch(2).unbatch()]
      [0, 1, 2, 3, 4]
    """

    _op_name = "unbatch"
    _keeps_random_access = False
    _iterator_class = _UnbatchIterator

    def __init__(self, parent: Dataset) -> None:
        super().__init__([parent])

    def _cardinality(self) -> int:
        # As tf.data: infinite stays infinite; otherwise known only where every
        # input element's first dimension is.
        parent = self._parents[0]
        n = parent.cardinality()
        if n in (INFINITE_CARDINALITY, UNKNOWN_CARDINALITY):
            return n
        size = parent._leading_dimension()
        return UNKNOWN_CARDINALITY if size is None else n * size

    def _element_spec(self) -> Any:
        return _spec.unbatched_spec(self._parents[0]._element_spec())
