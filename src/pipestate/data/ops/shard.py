"""``shard``: every ``num_shards``-th element, for one of several workers."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipestate._validate import brief, check_int
from pipestate.data.dataset import INFINITE_CARDINALITY, UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import StreamIterator
from pipestate.errors import StateMismatchError


class _ShardIterator(StreamIterator):
    """Reads a streaming input ``num_shards`` elements at a time, keeping the ``index``-th.

    Each ``next`` ends at a group boundary (or the input's end), so the
    input's position is the whole state.
    """

    def _next(self) -> Any:
        dataset: ShardDataset = self._source  # type: ignore[assignment]
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


class ShardDataset(Dataset):
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
    _passes_elements = True
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
        n = self._parents[0]._cardinality()
        if n in (INFINITE_CARDINALITY, UNKNOWN_CARDINALITY):
            return n
        return max(0, -(-(n - self._index) // self._num_shards))

    def _params(self) -> dict[str, Any]:
        return {"num_shards": self._num_shards, "index": self._index}

    def _get(self, epoch: int, position: int) -> Any:
        return self._parents[0]._get(epoch, self._index + position * self._num_shards)

    def _get_batch(self, epochs: np.ndarray, positions: np.ndarray) -> Any:
        return self._parents[0]._get_batch(epochs, self._index + positions * self._num_shards)


# ------------------------------------------------------------------ elasticity
# Ops that may stand between a shard and the top of a pipeline whose state
# re-partitions: each output element is one input element (map, prefetch) or
# ``batch_size`` consecutive ones (batch).
_PER_ELEMENT = frozenset({"map", "prefetch"})


class ElasticShard:
    """The top ``shard`` of a random-access pipeline, and how its position maps to the top's.

    The global count ``G`` is the number of elements of the shard's input that
    the whole job (all shards, in lockstep) has consumed. Shard ``j`` of ``M``
    has consumed its elements below ``G``: ``ceil((G - j) / M)`` of them.
    """

    def __init__(self, shard: ShardDataset, scale: int, depth: int, batch_depths: list[int]):
        self.num_shards = shard._num_shards
        self.index = shard._index
        self.length = shard._cardinality()
        self.scale = scale  # shard elements per element of the pipeline
        self.depth = depth  # ops in the state's op list between the shard and the top
        self.batch_depths = batch_depths

    def position(self, index: int) -> int:
        """The shard's position when the pipeline's index is ``index``."""
        position = index * self.scale
        return position if self.length < 0 else min(position, self.length)

    def global_count(self, index: int, origin: tuple[int, int]) -> int:
        """``G`` at pipeline index ``index``, given ``(G, shard position)`` at the last restore."""
        count, position = origin
        return count + self.num_shards * (self.position(index) - position)

    def index_for(self, count: int, top_length: int) -> int:
        """The pipeline index at which this shard continues a job that consumed ``count``."""
        position = max(0, -(-(count - self.index) // self.num_shards))
        if 0 <= self.length <= position:
            return top_length
        if position % self.scale:
            raise StateMismatchError(
                f"shard(num_shards={self.num_shards}, index={self.index}): the saved job consumed "
                f"{count} elements, so this shard continues at its element {position}, which is "
                f"not at a batch boundary (batches of {self.scale} after the shard). Use a global "
                "batch size divisible by every number of shards (batch size = global // "
                "num_shards), or batch before shard."
            )
        return position // self.scale


def elastic_shard(dataset: Dataset) -> ElasticShard | None:
    """The shard whose state re-partitions on restore, if ``dataset`` has one at its top.

    Found through ``map``, ``prefetch`` and ``batch`` ops from the top of a
    random-access pipeline; ``None`` otherwise.
    """
    node, scale, depth = dataset, 1, 0
    batch_depths: list[int] = []
    while True:
        name = node._op_name
        if isinstance(node, ShardDataset):
            return ElasticShard(node, scale, depth, batch_depths) if node._random_access else None
        if name == "batch":
            scale *= node._batch_size  # type: ignore[attr-defined]
            batch_depths.append(depth)
        elif name not in _PER_ELEMENT or len(node._parents) != 1:
            return None
        if name != "prefetch":  # prefetch is not in the state's op list
            depth += 1
        node = node._parents[0]


def reshard_state(dataset: Dataset, ops: Any, inner: Any) -> dict[str, Any] | None:
    """A state's iterator part re-partitioned for ``dataset``; ``None`` if it can't be.

    It can when both pipelines have an elastic shard at the same place and
    differ only in the shard's settings and the batch sizes between it and
    the top, and the state has the global count.
    """
    elastic = elastic_shard(dataset) if dataset._random_access else None
    if elastic is None or not isinstance(inner, dict) or "global" not in inner:
        return None
    current = dataset._op_list()
    if not isinstance(ops, list) or len(ops) != len(current):
        return None
    last = len(current) - 1
    may_differ = {last - elastic.depth} | {last - d for d in elastic.batch_depths}
    for i, (saved, now) in enumerate(zip(ops, current)):
        if saved == now:
            continue
        if (
            i not in may_differ
            or not isinstance(saved, str)
            or saved.split(":")[0] != now.split(":")[0]
        ):
            return None
    count = inner["global"]
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise StateMismatchError(
            f"shard: state['global'] must be an int >= 0, got {brief(count, 80)}"
        )
    return {**inner, "index": elastic.index_for(count, dataset._cardinality())}
