"""``repeat``: the input again and again, each pass a new epoch."""

from __future__ import annotations

from typing import Any

from pipestate._validate import check_int
from pipestate.data._remap import Positions, RemapDataset
from pipestate.data.dataset import INFINITE_CARDINALITY, UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import StreamIterator, read_bool, read_int

_UNBOUNDED_STRIDE = 1 << 32  # epochs of an infinite repeat nested in an outer pass


class _RepeatIterator(StreamIterator["RepeatDataset"]):
    """Re-opens a streaming input for each pass; state: the pass number and its position.

    Pass ``k`` opens the input as its epoch ``k``, as the random-access path
    does, so shuffles reshuffle per pass. A pass that yields nothing ends the
    repetition (as in tf.data: an empty input repeated forever is empty).
    """

    _PASS = "pass"
    _YIELDED = "yielded"
    _STATE_KEYS = (_PASS, _YIELDED, StreamIterator._PARENT)

    def _start(self) -> None:
        self._pass = 0
        self._yielded = False
        self._inputs = [self._open(0, self._pass_epoch(0))]

    def _pass_epoch(self, number: int) -> int:
        dataset = self._source
        return self._epoch * dataset._stride() + number

    def _next(self) -> Any:
        count = self._source._count
        while True:
            if count is not None and self._pass >= count:
                raise StopIteration
            try:
                element = self._inputs[0]._next()
            except StopIteration:
                if not self._yielded:
                    raise
                self._inputs[0].close()
                self._pass += 1
                self._yielded = False
                self._inputs = [self._open(0, self._pass_epoch(self._pass))]
                continue
            self._yielded = True
            return element

    def _op_state(self) -> dict[str, Any]:
        return {
            self._PASS: self._pass,
            self._YIELDED: self._yielded,
            self._PARENT: self._inputs[0]._get_state(),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        dataset = self._source
        self._pass = read_int(state, self._PASS, self._op, maximum=dataset._count)
        self._yielded = read_bool(state, self._YIELDED, self._op)
        self._inputs[0].close()
        self._inputs = [self._open(0, self._pass_epoch(self._pass))]
        super()._restore({self._PARENT: state[self._PARENT]})


class RepeatDataset(RemapDataset):
    """The input repeated ``count`` times (``None`` or ``-1``: forever).

    Pass ``k`` of the input runs as its epoch ``k``, so ops that reshuffle
    each iteration (``global_shuffle``) give each pass a new order. The
    position within the whole repetition is the only state.
    """

    _op_name = "repeat"
    _iterator_class = _RepeatIterator

    def __init__(self, parent: Dataset, count: int | None = None) -> None:
        super().__init__([parent])
        if count is not None:
            count = check_int("count", count, op="repeat")
        # As tf.data: None or any negative count repeats forever.
        self._count = None if count is None or count < 0 else count

    def _cardinality(self) -> int:
        n = self._parents[0].cardinality()
        if n == 0 or self._count == 0:
            return 0
        if n in (INFINITE_CARDINALITY, UNKNOWN_CARDINALITY):
            return n
        return INFINITE_CARDINALITY if self._count is None else n * self._count

    def _params(self) -> dict[str, Any]:
        return {"count": self._count}

    def _stride(self) -> int:
        return _UNBOUNDED_STRIDE if self._count is None else self._count

    def _map_positions(
        self, epochs: Positions, positions: Positions
    ) -> tuple[Positions, Positions]:
        n = self._parents[0].cardinality()
        if n < 0:
            return epochs, positions
        inner_epochs, inner = divmod(positions, n)
        return epochs * self._stride() + inner_epochs, inner
