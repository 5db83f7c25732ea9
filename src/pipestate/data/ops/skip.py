"""``skip``: all but the first ``count`` elements."""

from __future__ import annotations

from typing import Any

from pipestate._validate import check_int
from pipestate.data._remap import Positions, RemapDataset
from pipestate.data.dataset import INFINITE_CARDINALITY, UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import CountingIterator, StreamIterator


class _SkipIterator(CountingIterator["SkipDataset"]):
    """Drops the first ``count`` elements of a streaming input; state: how many dropped."""

    _COUNT = "skipped"
    _STATE_KEYS = (_COUNT, StreamIterator._PARENT)

    def _next(self) -> Any:
        limit = self._source._count
        parent = self._inputs[0]
        while limit == -1 or self._count < limit:
            parent._next()
            self._count += 1
        return parent._next()


class SkipDataset(RemapDataset):
    """The input without its first ``count`` elements (a negative count: without any).

    Skipping is arithmetic on the index: nothing is read to skip it.
    """

    _op_name = "skip"
    _iterator_class = _SkipIterator

    def __init__(self, parent: Dataset, count: int) -> None:
        super().__init__([parent])
        # As tf.data: any negative count skips everything.
        self._count = max(check_int("count", count, op="skip"), -1)

    def _cardinality(self) -> int:
        n = self._parents[0].cardinality()
        if n in (INFINITE_CARDINALITY, UNKNOWN_CARDINALITY):
            return 0 if self._count == -1 and n == INFINITE_CARDINALITY else n
        return 0 if self._count == -1 else max(0, n - self._count)

    def _params(self) -> dict[str, Any]:
        return {"count": self._count}

    def _map_positions(
        self, epochs: Positions, positions: Positions
    ) -> tuple[Positions, Positions]:
        return epochs, positions + self._count
