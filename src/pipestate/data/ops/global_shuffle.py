"""``global_shuffle``: a keyed permutation of a whole random-access dataset."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipestate._validate import check_bool, check_int
from pipestate.data._permutation import Permutation, evict_oldest
from pipestate.data._remap import Positions, RemapDataset
from pipestate.data.dataset import Dataset


class GlobalShuffleDataset(RemapDataset):
    """The input in a pseudo-random order, a true permutation for every length.

    The order is a function of ``(seed, epoch)`` computed per index (a Feistel
    network with cycle walking), so it needs O(1) memory and the iterator
    state stays one index. With ``reshuffle_each_iteration=True`` each pass of
    an enclosing ``repeat`` is a new order; otherwise every pass repeats the
    first. ``seed=None`` draws a seed for each iterator and saves it in the
    iterator's state, so a restored iterator continues the same order.

    Raises:
      TypeError: the input does not support random access, or ``seed`` is not
        an integer.
      ValueError: the input is infinite.
    """

    _op_name = "global_shuffle"

    def __init__(
        self, parent: Dataset, seed: int | None = None, reshuffle_each_iteration: bool = True
    ) -> None:
        super().__init__([parent])
        if not parent._random_access:
            raise TypeError(
                f"global_shuffle needs a random-access input, but {parent!r} is not; use "
                "shuffle(buffer_size) after streaming ops, or move global_shuffle before them."
            )
        n = parent.cardinality()
        if n < 0:
            raise ValueError(
                f"global_shuffle needs a finite input, got cardinality {n} for {parent!r}; "
                "apply repeat() after global_shuffle instead of before it."
            )
        if seed is not None:
            seed = check_int("seed", seed, op="global_shuffle")
        check_bool("reshuffle_each_iteration", reshuffle_each_iteration, op="global_shuffle")
        self._seed = seed
        self._reshuffle = bool(reshuffle_each_iteration)
        self._permutations: dict[int, Permutation] = {}

    def _cardinality(self) -> int:
        return self._parents[0].cardinality()

    def _params(self) -> dict[str, Any]:
        return {"seed": self._seed, "reshuffle_each_iteration": self._reshuffle}

    def _draws_seed(self) -> bool:
        return self._seed is None

    def _keeps_order(self) -> bool:
        return not self._reshuffle

    def _set_drawn_seed(self, seed: int) -> None:
        self._seed = seed
        self._permutations = {}

    def _permutation(self, epoch: int) -> Permutation:
        key = epoch if self._reshuffle else 0
        permutation = self._permutations.get(key)
        if permutation is None:
            if self._seed is None:
                raise RuntimeError("global_shuffle(seed=None) must be read through an iterator")
            permutation = Permutation(self.cardinality(), self._seed, key)
            if len(self._permutations) >= 8:
                evict_oldest(self._permutations)
            self._permutations[key] = permutation
        return permutation

    def _map_positions(
        self, epochs: Positions, positions: Positions
    ) -> tuple[Positions, Positions]:
        if not isinstance(positions, np.ndarray):
            return epochs, self._permutation(epochs)(positions)
        if len(epochs) == 0:
            return epochs, positions
        first = int(epochs[0])
        if (epochs == first).all():
            return epochs, self._permutation(first).apply_cached(positions)
        shuffled = np.empty_like(positions)
        for epoch in np.unique(epochs):
            mask = epochs == epoch
            shuffled[mask] = self._permutation(int(epoch)).apply(positions[mask])
        return epochs, shuffled
