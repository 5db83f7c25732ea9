"""``shuffle``: tf.data's buffer shuffle, with a compact saved buffer."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipestate._validate import brief, check_bool, check_int
from pipestate.data import _buffer, _structure
from pipestate.data.dataset import Dataset
from pipestate.data.iterator import StreamIterator, read_bool, read_int, state_array
from pipestate.errors import StateMismatchError

_DRAWS = 1024  # random numbers drawn per block


class _ShuffleIterator(StreamIterator["ShuffleDataset"]):
    """Fills a buffer, then emits a random buffered element and refills its slot.

    The choice for output ``k`` is a function of ``(seed, epoch, k)``, so the
    state is the input's position, the output count and the buffer. On a
    random-access input the buffer is saved as the input indices of its
    elements (re-read on restore); otherwise as the elements themselves.
    """

    _PRODUCED = "produced"
    _FILLED = "filled"
    _BUFFER = "buffer"
    _STATE_KEYS = (_PRODUCED, _FILLED, _BUFFER, StreamIterator._PARENT)

    def _start(self) -> None:
        super()._start()
        dataset = self._source
        self._by_index = dataset._parents[0]._random_access
        self._buffer: list[Any] = []
        self._positions: list[int] = []  # input indices of the buffered elements
        self._produced = 0
        self._filled = False
        self._draws: list[float] = []  # the uniform numbers of outputs _draws_start ...
        self._draws_start = 0

    def _read(self) -> bool:
        """Reads one input element into the buffer; ``False`` at the input's end."""
        parent = self._inputs[0]
        try:
            element = parent._next()
        except StopIteration:
            return False
        self._buffer.append(element)
        if self._by_index:
            self._positions.append(parent._index - 1)  # type: ignore[attr-defined]
        return True

    def _refill(self, k: int) -> None:
        """Draws the uniform numbers of the block of outputs holding output ``k``."""
        dataset = self._source
        epoch = self._epoch if dataset._reshuffle else 0
        assert dataset._seed is not None
        block = k // _DRAWS
        seeds = np.random.SeedSequence([dataset._seed, epoch, block])
        self._draws = np.random.Generator(np.random.Philox(seeds)).random(_DRAWS).tolist()
        self._draws_start = block * _DRAWS

    def _next(self) -> Any:
        buffer = self._buffer
        if not self._filled:
            size = self._source._buffer_size
            while len(buffer) < size and self._read():
                pass
            self._filled = True
        if not buffer:
            raise StopIteration
        k = self._produced
        offset = k - self._draws_start
        if not 0 <= offset < len(self._draws):
            self._refill(k)
            offset = k - self._draws_start
        slot = int(self._draws[offset] * len(buffer))
        element = buffer[slot]
        parent = self._inputs[0]
        try:
            incoming = parent._next()
        except StopIteration:
            # The input has ended: the last buffered element moves into the emptied slot.
            last = buffer.pop()
            if slot < len(buffer):
                buffer[slot] = last
            if self._by_index:
                last_position = self._positions.pop()
                if slot < len(self._positions):
                    self._positions[slot] = last_position
        else:
            buffer[slot] = incoming
            if self._by_index:
                self._positions[slot] = parent._index - 1  # type: ignore[attr-defined]
        self._produced = k + 1
        return element

    def _op_state(self) -> dict[str, Any]:
        if self._by_index:
            saved: Any = np.array(self._positions, dtype=np.int64)
        else:
            saved = _buffer.pack(self._buffer, self._op)
        return {
            self._PRODUCED: self._produced,
            self._FILLED: self._filled,
            self._BUFFER: saved,
            self._PARENT: self._inputs[0]._get_state(),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        op = self._op
        size = self._source._buffer_size
        produced = read_int(state, self._PRODUCED, op)
        filled = read_bool(state, self._FILLED, op)
        saved = state[self._BUFFER]
        if self._by_index:
            positions = state_array(saved, f"{op}: state['buffer']")
            if positions.ndim != 1 or positions.dtype.kind not in "iu" or len(positions) > size:
                raise StateMismatchError(
                    f"{op}: state['buffer'] must be at most {size} input indices, got "
                    f"{brief(saved, 120)}"
                )
            positions = positions.astype(np.int64)
            parent = self._source._parents[0]
            length = parent.cardinality()
            if positions.size and (
                positions.min() < 0 or (length >= 0 and positions.max() >= length)
            ):
                raise StateMismatchError(f"{op}: state['buffer'] has indices out of range")
            if parent._vectorised and positions.size:
                batch = parent._get_batch(np.full_like(positions, self._epoch), positions)
                buffer = _structure.unstack(batch, len(positions))
            else:
                buffer = [parent._get(self._epoch, int(p)) for p in positions]
            self._positions = positions.tolist()
        else:
            buffer = _buffer.unpack(saved, op)
            if len(buffer) > size:
                raise StateMismatchError(f"{op}: saved buffer holds more than {size} elements")
        super()._restore({self._PARENT: state[self._PARENT]})
        self._buffer = buffer
        self._produced = produced
        self._filled = filled


class ShuffleDataset(Dataset):
    """tf.data's ``shuffle``: a random element of a ``buffer_size`` buffer at a time.

    The first output waits until the buffer is full; each output's slot is
    refilled with the next input element. Order is a function of
    ``(seed, epoch)``; with ``reshuffle_each_iteration`` each pass of an
    enclosing ``repeat`` differs. ``seed=None`` draws a seed per iterator (saved
    in its state). When the input is random access the saved buffer is its
    elements' input indices (8 bytes each); otherwise the elements themselves.

    Raises:
      TypeError: non-integer ``buffer_size`` or ``seed``, or a non-bool
        ``reshuffle_each_iteration``.
      ValueError: ``buffer_size < 1``.
    """

    _op_name = "shuffle"
    _keeps_random_access = False
    _passes_elements = True
    _iterator_class = _ShuffleIterator

    def __init__(
        self,
        parent: Dataset,
        buffer_size: int,
        seed: int | None = None,
        reshuffle_each_iteration: bool = True,
    ) -> None:
        super().__init__([parent])
        self._buffer_size = check_int("buffer_size", buffer_size, minimum=1, op="shuffle")
        if seed is not None:
            seed = check_int("seed", seed, op="shuffle")
        check_bool("reshuffle_each_iteration", reshuffle_each_iteration, op="shuffle")
        self._seed = seed
        self._reshuffle = bool(reshuffle_each_iteration)

    def _cardinality(self) -> int:
        return self._parents[0].cardinality()

    def _params(self) -> dict[str, Any]:
        return {
            "buffer_size": self._buffer_size,
            "seed": self._seed,
            "reshuffle_each_iteration": self._reshuffle,
        }

    def _draws_seed(self) -> bool:
        return self._seed is None

    def _keeps_order(self) -> bool:
        return not self._reshuffle

    def _set_drawn_seed(self, seed: int) -> None:
        self._seed = seed
