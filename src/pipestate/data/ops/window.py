"""``window``: groups elements into windows, each a (nested structure of) dataset(s)."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from pipestate._validate import check_bool, check_int
from pipestate.data import _buffer, _structure
from pipestate.data._elements import window_of
from pipestate.data.dataset import INFINITE_CARDINALITY, UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import State, StreamIterator, read_int
from pipestate.errors import StateMismatchError


class _WindowIterator(StreamIterator["WindowDataset"]):
    """Windows of a streaming input; state: the input's, the buffered elements, and a skip.

    Between windows the buffer holds the elements the next window starts with
    (at most ``(size - 1) * stride + 1``); ``"skip"`` counts the input elements
    still to be dropped before it when ``shift`` is larger than the buffer.
    """

    _BUFFER = "buffer"
    _SKIP = "skip"
    _STATE_KEYS = (_BUFFER, _SKIP, StreamIterator._PARENT)

    def _start(self) -> None:
        super()._start()
        self._buffer: deque[Any] = deque()
        self._skip = 0

    def _next(self) -> Any:
        dataset = self._source
        parent = self._inputs[0]
        while self._skip:
            parent._next()  # StopIteration here: no element left to start a window
            self._skip -= 1
        span = dataset._span
        buffer = self._buffer
        while len(buffer) < span:
            try:
                buffer.append(parent._next())
            except StopIteration:
                break
            except Exception:
                # The failing element counts as consumed, and every window that would hold
                # it fails with it, as on the random-access path: the next window starts
                # at the first window start after it.
                failed = len(buffer)  # its offset from this window's start
                advance = (failed // dataset._shift + 1) * dataset._shift
                buffer.clear()
                self._skip = advance - failed - 1
                raise
        if not buffer or (dataset._drop_remainder and len(buffer) < span):
            raise StopIteration
        elements = [buffer[i] for i in range(0, min(len(buffer), span), dataset._stride)]
        shift = dataset._shift
        dropped = min(shift, len(buffer))
        for _ in range(dropped):
            buffer.popleft()
        self._skip = shift - dropped
        return window_of(elements)

    def _op_state(self) -> State:
        return {
            self._BUFFER: _buffer.pack(list(self._buffer), self._op),
            self._SKIP: self._skip,
            self._PARENT: self._inputs[0]._get_state(),
        }

    def _restore(self, state: State) -> None:
        op = self._op
        dataset = self._source
        elements = _buffer.unpack(state[self._BUFFER], op)
        if len(elements) > dataset._span:
            raise StateMismatchError(
                f"{op}: state['buffer'] holds {len(elements)} elements, more than a window "
                f"spans ({dataset._span})"
            )
        skip = read_int(state, self._SKIP, op, maximum=max(dataset._shift - 1, 0))
        if skip and elements:
            raise StateMismatchError(f"{op}: state['skip'] must be 0 while elements are buffered")
        super()._restore({self._PARENT: state[self._PARENT]})
        self._buffer = deque(elements)
        self._skip = skip


class WindowDataset(Dataset):
    """tf.data's ``window``: windows of ``size`` elements, every ``shift``, ``stride`` apart.

    Window ``i`` holds the input elements at ``i * shift + j * stride`` for
    ``j < size`` that exist. An element that is a tuple or dict gives a
    window that is a tuple or dict of datasets, one per component (as
    tf.data), so ``ds.window(3).flat_map(lambda w: w.batch(3))`` batches
    windows. Without ``drop_remainder`` the last windows may be shorter (every
    window that starts inside the input is produced); with it, only full
    windows are.

    Over a random-access input the op is random access: window ``i`` is read
    by position when it is produced, and the iterator state is one index.
    Over a streaming input the state is the input's plus the elements buffered
    for the next window (at most ``(size - 1) * stride + 1``).

    Args:
      size: elements per window (>= 1).
      shift: input elements between the starts of consecutive windows (>= 1;
        ``None``: ``size``).
      stride: input elements between the elements of a window (>= 1).
      drop_remainder: produce only windows of exactly ``size`` elements.

    Raises:
      TypeError: a non-integer ``size``, ``shift`` or ``stride``, or a
        non-bool ``drop_remainder``.
      ValueError: ``size``, ``shift`` or ``stride`` less than 1.

    Example:
      >>> import pipestate as ps
      >>> ds = ps.Dataset.range(7).window(3, shift=2).flat_map(lambda w: w.batch(3))
      >>> [x.tolist() for x in ds]
      [[0, 1, 2], [2, 3, 4], [4, 5, 6], [6]]
    """

    _op_name = "window"
    _iterator_class = _WindowIterator

    def __init__(
        self,
        parent: Dataset,
        size: int,
        shift: int | None = None,
        stride: int = 1,
        drop_remainder: bool = False,
    ) -> None:
        super().__init__([parent])
        self._size = check_int("size", size, minimum=1, op="window")
        self._shift = (
            self._size if shift is None else check_int("shift", shift, minimum=1, op="window")
        )
        self._stride = check_int("stride", stride, minimum=1, op="window")
        self._drop_remainder = bool(check_bool("drop_remainder", drop_remainder, op="window"))
        self._span = (self._size - 1) * self._stride + 1

    @property
    def _vectorised(self) -> bool:
        return False

    def _cardinality(self) -> int:
        n = self._parents[0].cardinality()
        if n in (INFINITE_CARDINALITY, UNKNOWN_CARDINALITY):
            return n
        if self._drop_remainder:
            return 0 if n < self._span else (n - self._span) // self._shift + 1
        return -(-n // self._shift)

    def _params(self) -> dict[str, Any]:
        return {
            "size": self._size,
            "shift": self._shift,
            "stride": self._stride,
            "drop_remainder": self._drop_remainder,
        }

    def _get(self, epoch: int, position: int) -> Any:
        parent = self._parents[0]
        start = position * self._shift
        stop = start + self._span
        n = parent.cardinality()
        if n >= 0:
            stop = min(stop, n)
        positions = np.arange(start, stop, self._stride, dtype=np.int64)
        if parent._vectorised:
            batch = parent._get_batch(np.full_like(positions, epoch), positions)
            return window_of(_structure.unstack(batch, len(positions)))
        elements = parent._get_list(epoch, positions)
        while len(elements) < len(positions):  # the read-ahead stopped before a failing element
            elements.append(parent._get(epoch, int(positions[len(elements)])))
        return window_of(elements)
