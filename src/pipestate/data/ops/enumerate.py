"""``enumerate``: pairs each element with its int64 counter."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipestate.data.dataset import Dataset, check_int
from pipestate.data.iterator import StreamIterator, read_int


class _EnumerateIterator(StreamIterator):
    """Pairs each element of a streaming input with a counter; state: the counter."""

    _COUNT = "count"
    _STATE_KEYS = (_COUNT, StreamIterator._PARENT)

    def _start(self) -> None:
        super()._start()
        self._count = 0

    def _op_state(self) -> dict[str, Any]:
        return {self._COUNT: self._count, self._PARENT: self._inputs[0]._get_state()}

    def _restore(self, state: dict[str, Any]) -> None:
        self._count = read_int(state, self._COUNT, self._op)
        super()._restore({self._PARENT: state[self._PARENT]})

    def _next(self) -> Any:
        element = self._inputs[0]._next()
        counter = np.int64(self._source._start + self._count)  # type: ignore[attr-defined]
        self._count += 1
        return (counter, element)


class EnumerateDataset(Dataset):
    """``(start + i, element_i)`` pairs; the counter restarts with each pass of the input."""

    _op_name = "enumerate"
    _iterator_class = _EnumerateIterator

    def __init__(self, parent: Dataset, start: int = 0) -> None:
        super().__init__([parent])
        self._start = check_int("start", start, op="enumerate")

    def _cardinality(self) -> int:
        return self._parents[0]._cardinality()

    def _params(self) -> dict[str, Any]:
        return {"start": self._start}

    def _get(self, epoch: int, position: int) -> Any:
        return (np.int64(self._start + position), self._parents[0]._get(epoch, position))

    def _get_batch(self, epochs: np.ndarray, positions: np.ndarray) -> Any:
        return (positions + self._start, self._parents[0]._get_batch(epochs, positions))
