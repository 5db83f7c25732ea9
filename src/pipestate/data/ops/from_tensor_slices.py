"""``Dataset.from_tensor_slices``: one element per row of arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipestate.data import _spec, _structure
from pipestate.data.dataset import Dataset


def _read_only(leaf: Any) -> np.ndarray:
    view: np.ndarray = np.asarray(leaf).view()
    view.flags.writeable = False
    return view


class FromTensorSlicesDataset(Dataset):
    """Rows of an array, a list, or a nested tuple/dict of arrays of equal length.

    The arrays are not copied; elements are read-only views of them, so a
    function that edits an element in place can't change the data a restored
    iterator reads.
    """

    _op_name = "from_tensor_slices"

    def __init__(self, tensors: Any) -> None:
        super().__init__()
        data = _structure.normalize(tensors, lists_as_tuples=False)
        dims = list(_structure.leading_dims(data))
        scalars = [path for path, dim in dims if dim is None]
        if scalars:
            raise ValueError(
                f"from_tensor_slices: every component must have at least one dimension to "
                f"slice; {', '.join(scalars)} is a scalar in {_structure.describe(data)}. "
                "Use from_tensors for a single element."
            )
        lengths = {dim for _, dim in dims}
        if len(lengths) != 1:
            raise ValueError(
                "from_tensor_slices: all components must have the same size in their first "
                f"dimension, got {_structure.describe(data)}"
            )
        self._data = _structure.map_structure(_read_only, data)
        self._length = int(lengths.pop())  # type: ignore[arg-type]

    def _cardinality(self) -> int:
        return self._length

    def _element_spec(self) -> Any:
        return _spec.spec_of_rows(self._data)

    def _leading_dimension(self) -> int | None:
        return _structure.leading_dimension(self._data, 1)

    def _params(self) -> dict[str, Any]:
        return {"tensors": _structure.describe(self._data)}

    def _get(self, epoch: int, position: int) -> Any:
        return _structure.index_leaves(self._data, position)

    def _get_batch(self, epochs: np.ndarray, positions: np.ndarray) -> Any:
        return _structure.index_leaves(self._data, positions)
