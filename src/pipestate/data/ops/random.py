"""``Dataset.random``: infinite pseudo-random integers, a function of their position."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from pipestate._validate import check_bool, check_int
from pipestate.data._spec import TensorSpec
from pipestate.data.dataset import INFINITE_CARDINALITY, Dataset

_SPAN_FACTOR = 4  # generate a whole span of positions when it is at most this many times longer
_LAST = threading.local()
"""Per thread, ``(key, next position, generator)`` of the last span drawn: a read of the next
block continues that generator instead of building one (the values are the same)."""


class RandomDataset(Dataset):
    """Pseudo-random int64 values in ``[0, 2**32)`` without end, as ``tf.data.Dataset.random``.

    Random access with no per-element Python: value ``i`` is output ``i`` of a
    Philox counter-based generator keyed by ``(seed, epoch)``, so a block of
    positions is one vectorised draw and the iterator state is one index
    (with the drawn seed when ``seed=None``). The values differ from
    TensorFlow's (another generator); their range and dtype are the same.

    Args:
      seed: the values' seed; ``None`` draws one per iterator (saved in the
        iterator's state, so a restored iterator continues the same values).
      rerandomize_each_iteration: ``True`` gives every pass of an enclosing
        ``repeat`` new values; ``False`` or ``None`` (tf.data's default)
        repeats the first pass's.

    Raises:
      TypeError: ``seed`` is not an integer, or ``rerandomize_each_iteration``
        not a bool.
      ValueError: ``seed`` does not fit in int64.
    """

    _op_name = "random"

    def __init__(
        self, seed: int | None = None, rerandomize_each_iteration: bool | None = None
    ) -> None:
        super().__init__()
        if seed is not None:
            seed = check_int("seed", seed, op="random")
            if not -(2**63) <= seed < 2**63:
                raise ValueError(f"random: seed must fit in int64, got seed={seed}")
        rerandomize = check_bool(
            "rerandomize_each_iteration", rerandomize_each_iteration, op="random", allow_none=True
        )
        self._seed = seed
        self._rerandomize = bool(rerandomize)
        self._keys: dict[int, np.ndarray] = {}

    def _cardinality(self) -> int:
        return INFINITE_CARDINALITY

    def _element_spec(self) -> Any:
        return TensorSpec((), np.int64)

    def _params(self) -> dict[str, Any]:
        return {"seed": self._seed, "rerandomize_each_iteration": self._rerandomize}

    def _draws_seed(self) -> bool:
        return self._seed is None

    def _keeps_order(self) -> bool:
        return not self._rerandomize

    def _set_drawn_seed(self, seed: int) -> None:
        self._seed = seed
        self._keys = {}

    def _key(self, epoch: int) -> np.ndarray:
        """The Philox key of pass ``epoch``."""
        epoch = epoch if self._rerandomize else 0
        key = self._keys.get(epoch)
        if key is None:
            if self._seed is None:
                raise RuntimeError("random(seed=None) must be read through an iterator")
            entropy = [self._seed & (2**64 - 1), epoch]
            key = np.random.SeedSequence(entropy).generate_state(2, np.uint64)
            if len(self._keys) >= 8:
                self._keys.pop(next(iter(self._keys)))
            self._keys[epoch] = key
        return key

    def _span(self, key: np.ndarray, start: int, count: int) -> np.ndarray:
        """Outputs ``start .. start + count`` of the stream keyed by ``key``, as uint64."""
        last = getattr(_LAST, "stream", None)
        if last is not None and last[0] is key and last[1] == start:
            # The block after this thread's last one: its generator is already there.
            generator, lead = last[2], 0
        else:
            # Philox yields four 64-bit outputs per counter value: output i is lane i % 4
            # of counter i // 4.
            counter = np.array([start // 4, 0, 0, 0], dtype=np.uint64)
            generator, lead = np.random.Philox(key=key, counter=counter), start % 4
        raw: np.ndarray = generator.random_raw(lead + count)
        _LAST.stream = (key, start + count, generator)
        return raw[lead:] if lead else raw

    def _values(self, epoch: int, positions: np.ndarray) -> np.ndarray:
        key = self._key(epoch)
        count = len(positions)
        if count == 0:
            return np.empty(0, np.int64)
        low = int(positions[0])
        if int(positions[-1]) - low == count - 1 and (count < 3 or positions[1] == low + 1):
            raw = self._span(key, low, count)  # consecutive positions: the common case
        else:
            low, high = int(positions.min()), int(positions.max())
            if high - low + 1 <= _SPAN_FACTOR * count:
                raw = self._span(key, low, high - low + 1)[positions - low]
            else:
                raw = np.concatenate([self._span(key, int(p), 1) for p in positions])
        # The upper 32 bits, as tf.data's values: below 2**31 * 2, so exact as int64.
        values: np.ndarray = np.right_shift(raw, np.uint64(32)).view(np.int64)
        return values

    def _get_batch(self, epochs: np.ndarray, positions: np.ndarray) -> Any:
        if len(epochs) == 0 or (epochs[0] == epochs[-1] and (epochs == epochs[0]).all()):
            epoch = int(epochs[0]) if len(epochs) else 0
            return self._values(epoch, positions)
        out = np.empty(len(positions), np.int64)
        for epoch in np.unique(epochs):
            mask = epochs == epoch
            out[mask] = self._values(int(epoch), positions[mask])
        return out
