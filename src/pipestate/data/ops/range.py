"""``Dataset.range``: integers ``start, start + step, ...`` below ``stop``."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipestate._validate import check_int
from pipestate.data._spec import TensorSpec
from pipestate.data.dataset import Dataset

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class RangeDataset(Dataset):
    """Integers of ``range(start, stop, step)`` as scalars of ``dtype`` (int64 by default)."""

    _op_name = "range"

    def __init__(self, *args: int, dtype: Any = np.int64) -> None:
        super().__init__()
        if not 1 <= len(args) <= 3:
            raise TypeError(
                f"range expects range(stop) or range(start, stop[, step]), got {len(args)} "
                f"arguments {args!r}"
            )
        values = [check_int(name, value, op="range") for name, value in zip(_names(args), args)]
        start, stop, step = (0, values[0], 1) if len(values) == 1 else (*values, 1)[:3]
        if step == 0:
            raise ValueError("range: step must not be zero, got step=0")
        for name, value in zip(("start", "stop", "step"), (start, stop, step)):
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise ValueError(f"range: {name} must fit in int64, got {name}={value}")
        try:
            self._dtype = np.dtype(dtype)
        except TypeError as err:
            raise TypeError(f"range: dtype must be a NumPy dtype, got {dtype!r}") from err
        if self._dtype.kind not in "iuf":
            raise TypeError(f"range: dtype must be an integer or float dtype, got {self._dtype}")
        self._range = range(start, stop, step)

    def _cardinality(self) -> int:
        return len(self._range)

    def _element_spec(self) -> Any:
        return TensorSpec((), self._dtype)

    def _params(self) -> dict[str, Any]:
        r = self._range
        return {"start": r.start, "stop": r.stop, "step": r.step, "dtype": str(self._dtype)}

    def _get(self, epoch: int, position: int) -> Any:
        return self._dtype.type(self._range[position])

    def _get_batch(self, epochs: np.ndarray, positions: np.ndarray) -> Any:
        r = self._range
        values = positions + r.start if r.step == 1 else r.start + positions * r.step
        return values.astype(self._dtype, copy=False)


def _names(args: tuple[int, ...]) -> tuple[str, ...]:
    return ("stop",) if len(args) == 1 else ("start", "stop", "step")
