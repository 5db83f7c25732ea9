"""Ops that only remap positions: element ``i`` is element ``f(i)`` of their one input."""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np

from pipestate.data.dataset import Dataset

Positions: TypeAlias = Any
"""A position or epoch: a Python ``int``, or an int64 array of them."""
Mapped: TypeAlias = tuple[Any, Any]
"""The input's ``(epochs, positions)``, of the kind given."""


class RemapDataset(Dataset):
    """Base of ops whose elements are their input's, at positions computed from their own.

    ``skip``, ``take``, ``shard``, ``global_shuffle`` and ``repeat`` write the
    mapping once, in ``_map_positions``; ``_get``, ``_get_batch`` and
    ``_get_list`` (read ahead in blocks) follow from it.
    """

    _passes_elements = True

    def _map_positions(
        self, epochs: Positions, positions: Positions
    ) -> tuple[Positions, Positions]:
        """The input's ``(epochs, positions)`` for this op's: Python ints, or int64 arrays.

        Written with arithmetic that works on both (``positions + k``,
        ``divmod``), so one expression serves an element and a block.
        """
        raise NotImplementedError

    def _get(self, epoch: int, position: int) -> Any:
        epoch, position = self._map_positions(epoch, position)
        return self._parents[0]._get(int(epoch), int(position))

    def _get_batch(self, epochs: np.ndarray, positions: np.ndarray) -> Any:
        return self._parents[0]._get_batch(*self._map_positions(epochs, positions))

    def _get_list(self, epoch: int, positions: np.ndarray) -> list[Any]:
        epochs, inner = self._map_positions(np.full_like(positions, epoch), positions)
        first = int(epochs[0]) if len(epochs) else epoch
        if (epochs == first).all():
            return self._parents[0]._get_list(first, inner)
        # A block that crosses an epoch of the input (repeat): read up to the crossing.
        cut = int(np.argmax(epochs != first))
        return self._parents[0]._get_list(first, inner[:cut])
