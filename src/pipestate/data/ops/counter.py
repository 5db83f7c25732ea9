"""``Dataset.counter``: ``start, start + step, start + 2 * step, ...`` without end."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipestate._validate import check_int
from pipestate.data._spec import TensorSpec
from pipestate.data.dataset import INFINITE_CARDINALITY, Dataset

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class CounterDataset(Dataset):
    """An infinite count from ``start`` by ``step``, as scalars of ``dtype`` (int64 by default).

    Random access, with no per-element Python: element ``i`` is
    ``start + i * step``, computed for a block of positions at once. Its
    iterator state is one index, so a restore costs the same at any count.

    Raises:
      TypeError: ``start`` or ``step`` is not an integer; ``dtype`` is not an
        integer or float NumPy dtype.
      ValueError: ``start`` or ``step`` does not fit in int64.
    """

    _op_name = "counter"

    def __init__(self, start: int = 0, step: int = 1, dtype: Any = np.int64) -> None:
        super().__init__()
        self._start = check_int("start", start, op="counter")
        self._step = check_int("step", step, op="counter")
        for name, value in (("start", self._start), ("step", self._step)):
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise ValueError(f"counter: {name} must fit in int64, got {name}={value}")
        try:
            self._dtype = np.dtype(dtype)
        except TypeError as err:
            raise TypeError(f"counter: dtype must be a NumPy dtype, got {dtype!r}") from err
        if self._dtype.kind not in "iuf":
            raise TypeError(f"counter: dtype must be an integer or float dtype, got {self._dtype}")

    def _cardinality(self) -> int:
        return INFINITE_CARDINALITY

    def _element_spec(self) -> Any:
        return TensorSpec((), self._dtype)

    def _params(self) -> dict[str, Any]:
        return {"start": self._start, "step": self._step, "dtype": str(self._dtype)}

    def _get_batch(self, epochs: np.ndarray, positions: np.ndarray) -> Any:
        values = np.int64(self._start) + positions * np.int64(self._step)
        return values.astype(self._dtype, copy=False)
