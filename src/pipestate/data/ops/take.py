"""``take``: the first ``count`` elements."""

from __future__ import annotations

from typing import Any

from pipestate._validate import check_int
from pipestate.data._remap import Positions, RemapDataset
from pipestate.data.dataset import INFINITE_CARDINALITY, UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import CountingIterator, StreamIterator


class _TakeIterator(CountingIterator["TakeDataset"]):
    """Passes on the first ``count`` elements of a streaming input; state: how many so far."""

    _COUNT = "taken"
    _STATE_KEYS = (_COUNT, StreamIterator._PARENT)

    def _count_limit(self) -> int | None:
        limit: int = self._source._count
        return None if limit < 0 else limit

    def _next(self) -> Any:
        limit = self._source._count
        if self._count == limit:
            # As tf.data: the input is released (a generator closed) at the end.
            self._inputs[0]._release()
            raise StopIteration
        element = self._inputs[0]._next()
        self._count += 1
        return element


class TakeDataset(RemapDataset):
    """At most ``count`` elements of the input (a negative count: all of them)."""

    _op_name = "take"
    _iterator_class = _TakeIterator

    def __init__(self, parent: Dataset, count: int) -> None:
        super().__init__([parent])
        # As tf.data: any negative count means all.
        self._count = max(check_int("count", count, op="take"), -1)

    def _cardinality(self) -> int:
        n = self._parents[0].cardinality()
        if self._count == -1:
            return n
        if n == INFINITE_CARDINALITY:
            return self._count
        if n == UNKNOWN_CARDINALITY:
            return n
        return min(n, self._count)

    def _params(self) -> dict[str, Any]:
        return {"count": self._count}

    def _map_positions(
        self, epochs: Positions, positions: Positions
    ) -> tuple[Positions, Positions]:
        return epochs, positions
