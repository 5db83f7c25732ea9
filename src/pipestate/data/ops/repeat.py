"""``repeat``: the input again and again, each pass a new epoch."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipestate.data.dataset import INFINITE_CARDINALITY, UNKNOWN_CARDINALITY, Dataset, check_int

_UNBOUNDED_STRIDE = 1 << 32  # epochs of an infinite repeat nested in an outer pass


class RepeatDataset(Dataset):
    """The input repeated ``count`` times (``None`` or ``-1``: forever).

    Pass ``k`` of the input runs as its epoch ``k``, so ops that reshuffle
    each iteration (``global_shuffle``) give each pass a new order. The
    position within the whole repetition is the only state.
    """

    _op_name = "repeat"

    def __init__(self, parent: Dataset, count: int | None = None) -> None:
        super().__init__([parent])
        if count is not None:
            count = check_int("count", count, minimum=-1, op="repeat")
        self._count = None if count in (None, -1) else count

    def _cardinality(self) -> int:
        n = self._parents[0]._cardinality()
        if n == 0 or self._count == 0:
            return 0
        if n in (INFINITE_CARDINALITY, UNKNOWN_CARDINALITY):
            return n
        return INFINITE_CARDINALITY if self._count is None else n * self._count

    def _params(self) -> dict[str, Any]:
        return {"count": self._count}

    def _stride(self) -> int:
        return _UNBOUNDED_STRIDE if self._count is None else self._count

    def _get(self, epoch: int, position: int) -> Any:
        parent = self._parents[0]
        n = parent._cardinality()
        if n < 0:
            return parent._get(epoch, position)
        inner_epoch, inner = divmod(position, n)
        return parent._get(epoch * self._stride() + inner_epoch, inner)

    def _get_batch(self, epochs: np.ndarray, positions: np.ndarray) -> Any:
        parent = self._parents[0]
        n = parent._cardinality()
        if n < 0:
            return parent._get_batch(epochs, positions)
        inner_epochs, inner = np.divmod(positions, n)
        return parent._get_batch(epochs * self._stride() + inner_epochs, inner)
