"""``Dataset.from_tensors``: a dataset of exactly one element."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipestate.data import _spec, _structure
from pipestate.data.dataset import Dataset
from pipestate.data.ops.from_tensor_slices import _read_only


class FromTensorsDataset(Dataset):
    """One element: ``tensors`` (a value, or a nested tuple/dict of values)."""

    _op_name = "from_tensors"

    def __init__(self, tensors: Any) -> None:
        super().__init__()
        data = _structure.normalize(tensors, lists_as_tuples=False)
        self._data = _structure.map_structure(
            lambda leaf: leaf if isinstance(leaf, np.generic) else _read_only(leaf), data
        )

    def _cardinality(self) -> int:
        return 1

    @property
    def _vectorised(self) -> bool:
        # Bytes ending in NUL bytes are read one by one: an S array would drop the NULs.
        return not any(
            isinstance(leaf, np.bytes_) and leaf.endswith(b"\x00")
            for leaf in _structure.flatten(self._data)
        )

    def _element_spec(self) -> Any:
        return _spec.spec_of(self._data)

    def _leading_dimension(self) -> int | None:
        return _structure.leading_dimension(self._data, 0)

    def _params(self) -> dict[str, Any]:
        return {"tensors": _structure.describe(self._data)}

    def _get(self, epoch: int, position: int) -> Any:
        return self._data

    def _get_batch(self, epochs: np.ndarray, positions: np.ndarray) -> Any:
        if not self._vectorised:
            return super()._get_batch(epochs, positions)  # stacked as every batch is
        count = len(positions)
        # Read-only, as the element itself is: the same value whichever path reads it.
        return _structure.map_structure(
            lambda leaf: _read_only(np.repeat(np.asarray(leaf)[np.newaxis], count, axis=0)),
            self._data,
        )
