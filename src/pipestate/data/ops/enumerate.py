"""``enumerate``: pairs each element with its int64 counter."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipestate._validate import check_int
from pipestate.data._spec import TensorSpec
from pipestate.data.dataset import Dataset
from pipestate.data.iterator import CountingIterator, StreamIterator


class _EnumerateIterator(CountingIterator["EnumerateDataset"]):
    """Pairs each element of a streaming input with a counter; state: the counter."""

    _COUNT = "count"
    _STATE_KEYS = (_COUNT, StreamIterator._PARENT)

    def _next(self) -> Any:
        element = self._inputs[0]._next()
        counter = np.int64(self._source._start + self._count)
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
        return self._parents[0].cardinality()

    def _element_spec(self) -> Any:
        inner = self._parents[0]._element_spec()
        return None if inner is None else (TensorSpec((), np.int64), inner)

    def _params(self) -> dict[str, Any]:
        return {"start": self._start}

    def _get(self, epoch: int, position: int) -> Any:
        return (np.int64(self._start + position), self._parents[0]._get(epoch, position))

    def _get_batch(self, epochs: np.ndarray, positions: np.ndarray) -> Any:
        return (positions + self._start, self._parents[0]._get_batch(epochs, positions))
