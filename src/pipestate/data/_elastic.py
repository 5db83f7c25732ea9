"""The elastic rule: a random-access pipeline topped by ``shard`` re-partitions on restore.

Which ops may stand between the shard and the top, and how positions map
through them, is what each op declares in ``Dataset._elastic``
(:class:`~pipestate.data._capabilities.Elastic`); see
``docs/parallel.md#elastic-shards``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from pipestate._validate import brief
from pipestate.data._capabilities import Elastic
from pipestate.errors import StateMismatchError

if TYPE_CHECKING:
    from pipestate.data.dataset import Dataset
    from pipestate.data.ops.shard import ShardDataset


class ElasticShard:
    """The top ``shard`` of a random-access pipeline, and how its position maps to the top's.

    The global count ``G`` is the number of elements of the shard's input that
    the whole job (all shards, in lockstep) has consumed. Shard ``j`` of ``M``
    has consumed its elements below ``G``: ``ceil((G - j) / M)`` of them.
    """

    def __init__(self, shard: ShardDataset, scale: int, depth: int, batch_depths: list[int]):
        self.num_shards = shard._num_shards
        self.index = shard._index
        self.length = shard.cardinality()
        self.scale = scale  # shard elements per element of the pipeline
        self.depth = depth  # ops in the state's op list between the shard and the top
        self.batch_depths = batch_depths
        self.even = shard._even

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
        if self.even is not None and count % self.num_shards:
            # Shards would continue at positions one apart, so their counts to the end
            # of the epoch would differ by one: the unevenness even= is there to prevent.
            raise StateMismatchError(
                f"shard(num_shards={self.num_shards}, index={self.index}, even={self.even!r}): "
                f"the saved job consumed {count} elements, which {self.num_shards} shards can't "
                "continue evenly (it is not a multiple of the number of shards). Use a global "
                "batch size divisible by every number of shards (batch size = global // "
                "num_shards, after the shard)."
            )
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
        rule = node._elastic
        if rule is Elastic.SHARD:
            shard = cast("ShardDataset", node)
            return ElasticShard(shard, scale, depth, batch_depths) if node._random_access else None
        if rule is Elastic.BATCH:
            scale *= node._elastic_scale()
            batch_depths.append(depth)
        elif rule is not Elastic.ONE_TO_ONE or len(node._parents) != 1:
            return None
        if not node._passthrough:  # a passthrough op (prefetch) is not in the state's op list
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
    return {**inner, "index": elastic.index_for(count, dataset.cardinality())}


def elastic_blocker(dataset: Dataset) -> str:
    """Why a state saved under other shard settings can't continue in ``dataset``, naming the op.

    For the error of a restore on another world size: the op that keeps the
    elastic rule from re-partitioning the saved position.
    """
    node = dataset
    while True:
        rule = node._elastic
        if rule is Elastic.SHARD:
            if node._random_access:
                return (
                    f"the saved state has no global count ({node._op_repr()} was not at the "
                    "top of a random-access pipeline when it was saved)"
                )
            streaming = _first_streaming(node)
            return (
                f"{node._op_repr()} reads a streaming input ({streaming}), so no shard's "
                "position can be computed from another's"
            )
        if rule in (Elastic.ONE_TO_ONE, Elastic.BATCH) and len(node._parents) == 1:
            node = node._parents[0]
            continue
        return (
            f"{node._op_repr()} stands between the shard and the top of the pipeline; only "
            "map, prefetch and batch may (put it before the shard)"
        )


def _first_streaming(dataset: Dataset) -> str:
    """The repr of the op nearest the sources that makes ``dataset`` streaming."""
    for parent in dataset._parents:
        if not parent._random_access:
            return _first_streaming(parent)
    return dataset._op_repr()
