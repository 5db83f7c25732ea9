"""``flat_map``: maps each element to a dataset and reads those datasets in turn."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipestate.data._fingerprint import describe_callable
from pipestate.data.dataset import Dataset
from pipestate.data.ops.interleave import _InterleaveBase


class FlatMapDataset(_InterleaveBase):
    """The elements of ``map_func(x)`` for each input element ``x``, one dataset after another.

    ``interleave`` with ``cycle_length=1`` and ``block_length=1``, and the same
    iterator: the state is the input's position, the index of the input
    element whose dataset is being read (the element is re-read by index from
    a random-access input, saved otherwise) and that dataset's iterator state.
    A plain tuple element is unpacked into ``map_func``'s arguments.

    Args:
      map_func: returns a pipestate ``Dataset`` for an element.
      stateful: ``True`` if ``map_func`` depends on state outside the element.

    Raises:
      TypeError: ``map_func`` is not callable, or returns something other than
        a Dataset (while iterating).

    Example:
      >>> import pipestate as ps
      >>> ds = ps.Dataset.range(1, 4).flat_map(lambda n: ps.Dataset.range(n))
      >>> [int(x) for x in ds]
      [0, 0, 1, 0, 1, 2]
    """

    _op_name = "flat_map"

    def __init__(
        self, parent: Dataset, map_func: Callable[..., Dataset], *, stateful: bool = False
    ) -> None:
        super().__init__(parent, map_func, 1, 1, stateful)

    def _params(self) -> dict[str, Any]:
        return {"map_func": describe_callable(self._map_func)}
