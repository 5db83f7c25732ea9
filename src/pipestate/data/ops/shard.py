"""``shard``: every ``num_shards``-th element, for one of several workers."""

from __future__ import annotations

from typing import Any

from pipestate._validate import check_int
from pipestate.data._capabilities import Elastic
from pipestate.data._remap import Positions, RemapDataset
from pipestate.data.dataset import INFINITE_CARDINALITY, UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import StreamIterator


class _ShardIterator(StreamIterator["ShardDataset"]):
    """Reads a streaming input ``num_shards`` elements at a time, keeping the ``index``-th.

    Each ``next`` ends at a group boundary (or the input's end), so the
    input's position is the whole state.
    """

    def _next(self) -> Any:
        dataset = self._source
        parent = self._inputs[0]
        for _ in range(dataset._index):
            parent._next()
        element = parent._next()
        try:
            for _ in range(dataset._num_shards - dataset._index - 1):
                parent._next()
        except StopIteration:
            pass
        return element


class ShardDataset(RemapDataset):
    """Elements ``index, index + num_shards, index + 2 * num_shards, ...`` of the input.

    Elastic: on a random-access input, when only ``map``, ``prefetch`` or
    ``batch`` follow the shard, the iterator's state also holds ``"global"``,
    the number of input elements consumed by all shards together (stepping in
    lockstep). Such a state restores into ``shard(M, j)`` for any other world
    size ``M``: shard ``j`` continues at its first element at or after the
    global count, so across all shards nothing is lost or repeated. Any
    shard's state restores any shard. See ``docs/parallel.md``.
    """

    _op_name = "shard"
    _elastic = Elastic.SHARD
    _iterator_class = _ShardIterator

    def __init__(self, parent: Dataset, num_shards: int, index: int) -> None:
        super().__init__([parent])
        self._num_shards = check_int("num_shards", num_shards, minimum=1, op="shard")
        self._index = check_int("index", index, minimum=0, op="shard")
        if self._index >= self._num_shards:
            raise ValueError(
                f"shard: index must be in [0, num_shards), got index={self._index} with "
                f"num_shards={self._num_shards}"
            )

    def _cardinality(self) -> int:
        n = self._parents[0].cardinality()
        if n in (INFINITE_CARDINALITY, UNKNOWN_CARDINALITY):
            return n
        return max(0, -(-(n - self._index) // self._num_shards))

    def _params(self) -> dict[str, Any]:
        return {"num_shards": self._num_shards, "index": self._index}

    def _map_positions(
        self, epochs: Positions, positions: Positions
    ) -> tuple[Positions, Positions]:
        return epochs, self._index + positions * self._num_shards
