"""``shard``: every ``num_shards``-th element, for one of several workers."""

from __future__ import annotations

from typing import Any

from pipestate._validate import brief, check_int
from pipestate.data._capabilities import Elastic
from pipestate.data._remap import Positions, RemapDataset
from pipestate.data.dataset import INFINITE_CARDINALITY, UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import State, StreamIterator, read_bool, read_int

PAD = "pad"
DROP = "drop"


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


class _EvenShardIterator(StreamIterator["ShardDataset"]):
    """``shard(..., even=...)`` over a streaming input: reads whole groups of ``num_shards``.

    A partial last group is dropped (``"drop"``), or completed with elements
    from the input's start, read by a fresh iterator (``"pad"``). State: the
    groups read, whether the shard ended, and the input's state.
    """

    _GROUPS = "groups"
    _ENDED = "ended"
    _STATE_KEYS = (_GROUPS, _ENDED, StreamIterator._PARENT)

    def _start(self) -> None:
        super()._start()
        self._groups = 0
        self._ended = False

    def _next(self) -> Any:
        if self._ended:
            raise StopIteration
        dataset = self._source
        parent = self._inputs[0]
        element: Any = None
        read = 0
        try:
            while read < dataset._num_shards:
                value = parent._next()
                if read == dataset._index:
                    element = value
                read += 1
        except StopIteration:
            pass
        if read == dataset._num_shards:
            self._groups += 1
            return element
        self._ended = True  # a partial group (or none) ends every shard
        if read == 0 or dataset._even == DROP:
            raise StopIteration
        if dataset._index < read:
            return element
        total = self._groups * dataset._num_shards + read
        skip = (self._groups * dataset._num_shards + dataset._index) % total
        fresh = self._open(0)
        try:
            for _ in range(skip):
                fresh._next()
            return fresh._next()
        finally:
            fresh.close()

    def _op_state(self) -> State:
        return {
            self._GROUPS: self._groups,
            self._ENDED: self._ended,
            self._PARENT: self._inputs[0]._get_state(),
        }

    def _restore(self, state: State) -> None:
        self._groups = read_int(state, self._GROUPS, self._op)
        self._ended = read_bool(state, self._ENDED, self._op)
        super()._restore({self._PARENT: state[self._PARENT]})


class ShardDataset(RemapDataset):
    """Elements ``index, index + num_shards, index + 2 * num_shards, ...`` of the input.

    Elastic: on a random-access input, when only ``map``, ``prefetch`` or
    ``batch`` follow the shard, the iterator's state also holds ``"global"``,
    the number of input elements consumed by all shards together (stepping in
    lockstep). Such a state restores into ``shard(M, j)`` for any other world
    size ``M``: shard ``j`` continues at its first element at or after the
    global count, so across all shards nothing is lost or repeated. Any
    shard's state restores any shard. See ``docs/parallel.md``.

    ``even`` gives every shard of a finite input the same number of elements,
    as ``torch.utils.data.DistributedSampler`` (``shuffle=False``) does:
    ``"pad"`` (its ``drop_last=False``) adds elements from the input's start
    to the last group, so each shard has ``ceil(n / num_shards)``;
    ``"drop"`` (``drop_last=True``) leaves out the last partial group, so each
    has ``n // num_shards``. ``None`` (the default) keeps tf.data's uneven
    shards. An elastic restore under another world size continues with that
    world's even shards.

    Raises:
      TypeError: non-integer ``num_shards`` or ``index``.
      ValueError: ``num_shards < 1``, ``index`` out of range, or ``even`` not
        ``None``, ``"pad"`` or ``"drop"``.
    """

    _op_name = "shard"
    _elastic = Elastic.SHARD
    _iterator_class = _ShardIterator

    def __init__(
        self, parent: Dataset, num_shards: int, index: int, even: str | None = None
    ) -> None:
        super().__init__([parent])
        if even not in (None, PAD, DROP):
            raise ValueError(
                f"shard: even must be None, {PAD!r} (repeat elements from the start, as "
                f"DistributedSampler(drop_last=False)) or {DROP!r} (drop the last partial "
                f"group, as drop_last=True), got {brief(even, 80)}"
            )
        self._even = even
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
        if self._even == PAD:
            return -(-n // self._num_shards)
        if self._even == DROP:
            return n // self._num_shards
        return max(0, -(-(n - self._index) // self._num_shards))

    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"num_shards": self._num_shards, "index": self._index}
        if self._even is not None:  # states saved before even= existed keep their digest
            params["even"] = self._even
        return params

    def _make_iterator(self, entropy: int | None, epoch: int = 0) -> Any:
        if self._even is not None and not self._random_access:
            return _EvenShardIterator(self, entropy, epoch)
        return super()._make_iterator(entropy, epoch)

    def _map_positions(
        self, epochs: Positions, positions: Positions
    ) -> tuple[Positions, Positions]:
        flat = self._index + positions * self._num_shards
        if self._even == PAD:
            n = self._parents[0].cardinality()
            if n > 0:  # the padded tail wraps round to the input's start
                flat = flat % n
        return epochs, flat
