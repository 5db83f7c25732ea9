"""``rebatch``: re-cuts a batched dataset into batches of other sizes."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipestate._validate import brief, check_bool, check_int
from pipestate.data import _buffer, _structure
from pipestate.data.dataset import UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import State, StreamIterator, read_bool, read_int
from pipestate.errors import InvalidArgumentError, StateMismatchError


def _rows(batch: Any, op: str) -> int:
    """The number of rows of an input batch (every leaf's first dimension)."""
    dims = {dim for _, dim in _structure.leading_dims(batch)}
    if None in dims:
        raise InvalidArgumentError(
            f"{op}: rebatch expects batched elements (every component of rank >= 1), got "
            f"{_structure.describe(batch)}; batch() the dataset first"
        )
    if len(dims) != 1:
        raise InvalidArgumentError(
            f"{op}: the components of a batch have different first dimensions: "
            f"{_structure.describe(batch)}"
        )
    return int(dims.pop())  # type: ignore[arg-type]


def _concat(parts: list[Any]) -> Any:
    if len(parts) == 1:
        return parts[0]
    return _structure.map_structure(lambda *leaves: np.concatenate(leaves), *parts)


class _RebatchIterator(StreamIterator["RebatchDataset"]):
    """Cuts output batches from the rows of the input's batches, across their boundaries.

    State: the input's, the last input batch read (saved whole, as one
    buffered element, so that restored rows keep its dtypes: a string
    column's width is its longest string's), how many of its rows have been
    output, and the number of the next batch size to use.
    """

    _BATCH = "batch"
    _OFFSET = "offset"
    _NEXT_SIZE = "next_size"
    _ENDED = "ended"
    _STATE_KEYS = (_BATCH, _OFFSET, _NEXT_SIZE, _ENDED, StreamIterator._PARENT)

    def _start(self) -> None:
        super()._start()
        self._batch: Any = None  # the last input batch read
        self._rows = 0  # its rows
        self._offset = 0  # its rows already output
        self._next_size = 0
        self._ended = False  # the input ended: no batch follows, not even an empty one

    def _read(self) -> bool:
        """Reads the next input batch; ``False`` at the input's end."""
        try:
            batch = self._inputs[0]._next()
        except StopIteration:
            self._ended = True
            return False
        if self._batch is not None:
            _structure.assert_same_structure(self._batch, batch, self._op)
        self._batch, self._rows, self._offset = batch, _rows(batch, self._op), 0
        return True

    def _next(self) -> Any:
        dataset = self._source
        sizes = dataset._sizes
        size = sizes[self._next_size]
        if size == 0:
            # As tf.data: an empty batch reads no input; its dtypes and shapes are those
            # of the last input batch. After the input's end, none follows.
            if self._ended or (self._batch is None and not self._read()):
                raise StopIteration
            self._next_size = (self._next_size + 1) % len(sizes)
            return _structure.index_leaves(self._batch, slice(0, 0))
        parts: list[Any] = []
        need = size
        while need:
            if self._offset == self._rows and not self._read():
                break
            start = self._offset
            take = min(need, self._rows - start)
            parts.append(_structure.index_leaves(self._batch, slice(start, start + take)))
            self._offset = start + take
            need -= take
        if need and (dataset._drop_remainder or not parts):
            raise StopIteration
        self._next_size = (self._next_size + 1) % len(sizes)
        return _concat(parts)

    def _op_state(self) -> State:
        batch = [] if self._batch is None else [self._batch]
        return {
            self._BATCH: _buffer.pack(batch, self._op),
            self._OFFSET: self._offset,
            self._NEXT_SIZE: self._next_size,
            self._ENDED: self._ended,
            self._PARENT: self._inputs[0]._get_state(),
        }

    def _restore(self, state: State) -> None:
        op = self._op
        batch = _buffer.unpack(state[self._BATCH], op)
        if len(batch) > 1:
            raise StateMismatchError(f"{op}: state['batch'] must hold at most one batch")
        rows = _rows(batch[0], op) if batch else 0
        offset = read_int(state, self._OFFSET, op, maximum=rows)
        next_size = read_int(state, self._NEXT_SIZE, op, maximum=len(self._source._sizes) - 1)
        ended = read_bool(state, self._ENDED, op)
        super()._restore({self._PARENT: state[self._PARENT]})
        self._batch = batch[0] if batch else None
        self._rows, self._offset = rows, offset
        self._ended = ended
        self._next_size = next_size


class RebatchDataset(Dataset):
    """tf.data's ``rebatch``: the rows of the input's batches, cut into batches of ``batch_size``.

    The rows come in order, as ``unbatch().batch(...)`` would give them, but
    without splitting the input into single rows: output batches are slices
    of input batches, joined where they span two. With a list of sizes,
    output ``k`` has ``batch_size[k % len(batch_size)]`` rows (a size may be 0:
    an empty batch). The last batch may be short unless ``drop_remainder``.

    The iterator state is the input's plus the last input batch read, how
    many of its rows have been output, and which size is next.

    Args:
      batch_size: rows per output batch (>= 1), or a list of sizes (>= 0, at
        least one positive) used in turn.
      drop_remainder: drop a last batch that has fewer rows than its size.

    Raises:
      TypeError: a non-integer size, a non-bool ``drop_remainder``.
      ValueError: a size below 1 (below 0 in a list), an empty list or a list
        of zeros; while iterating, :class:`~pipestate.errors.InvalidArgumentError`
        for input elements that are not batches (a scalar component, or
        components of different first dimensions).

    Example:
      >>> import pipestate as ps
      >>> ds = ps.Dataset.range(8).batch(4).rebatch([2, 1, 1])
      >>> [x.tolist() for x in ds]
      [[0, 1], [2], [3], [4, 5], [6], [7]]
    """

    _op_name = "rebatch"
    _keeps_random_access = False
    _iterator_class = _RebatchIterator

    def __init__(self, parent: Dataset, batch_size: Any, drop_remainder: bool = False) -> None:
        super().__init__([parent])
        op = self._op_name
        if isinstance(batch_size, np.ndarray):
            batch_size = batch_size.tolist()
        if isinstance(batch_size, (list, tuple)):
            sizes = [
                check_int(f"batch_size[{i}]", s, minimum=0, op=op) for i, s in enumerate(batch_size)
            ]
            if not any(sizes):
                raise ValueError(
                    f"{op}: batch_size must hold at least one positive size, got "
                    f"{brief(batch_size, 80)}"
                )
        else:
            sizes = [check_int("batch_size", batch_size, minimum=1, op=op)]
        self._sizes = sizes
        self._drop_remainder = bool(check_bool("drop_remainder", drop_remainder, op=op))

    def _cardinality(self) -> int:
        return UNKNOWN_CARDINALITY  # as tf.data

    def _params(self) -> dict[str, Any]:
        return {"batch_size": self._sizes, "drop_remainder": self._drop_remainder}
