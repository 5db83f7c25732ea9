"""``Variable``: a mutable NumPy array that checkpoints save and restore in place."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from pipestate.checkpoint._trackable import Trackable
from pipestate.checkpoint._values import Value
from pipestate.errors import CheckpointMismatchError

__all__ = ["VARIABLE_VALUE", "Variable"]

VARIABLE_VALUE = "VARIABLE_VALUE"


class Variable(Trackable):
    """A mutable NumPy array with a fixed dtype and shape.

    ``assign`` writes into the same buffer, so views taken with
    ``np.asarray(variable)`` stay valid; restore does the same after checking
    that the checkpoint's dtype and shape match exactly.

    Args:
        initial_value: Anything ``numpy.asarray`` accepts; it is copied.
        dtype: The dtype; defaults to the initial value's.

    Raises:
        TypeError: When the value has an object dtype.

    Example:
        >>> v = Variable([1.0, 2.0], dtype="float32")
        >>> v.assign([3.0, 4.0]).numpy()
        array([3., 4.], dtype=float32)
    """

    # Restore copies into the buffer, so the values given may be read-only views.
    _copies_restored_values = True

    def __init__(self, initial_value: ArrayLike, dtype: DTypeLike | None = None) -> None:
        value = np.array(initial_value, dtype=dtype, copy=True)
        if value.dtype.kind == "O":
            raise TypeError(
                f"Variable needs a numeric, bool, bytes or str dtype, got object dtype from "
                f"{initial_value!r:.100}; pass dtype= explicitly"
            )
        self._value: np.ndarray = value

    @property
    def dtype(self) -> np.dtype[Any]:
        """The variable's dtype."""
        return self._value.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        """The variable's shape."""
        return tuple(self._value.shape)

    def numpy(self) -> np.ndarray:
        """A copy of the current value (0-d for scalars)."""
        copy: np.ndarray = self._value.copy()
        return copy

    def __array__(self, dtype: DTypeLike | None = None, copy: bool | None = None) -> np.ndarray:
        if dtype is None and copy is not True:
            return self._value
        return np.array(self._value, dtype=dtype, copy=True)

    def assign(self, value: ArrayLike) -> Variable:
        """Set the value in place and return ``self``.

        Raises:
            ValueError: When ``value`` has another shape or cannot be cast safely
                (``same_kind``) to the variable's dtype.
        """
        array = np.asarray(value)
        if array.shape != self._value.shape:
            raise ValueError(
                f"cannot assign a value of shape {array.shape} to {self!r}; the shape is fixed at "
                f"{self._value.shape}"
            )
        if not np.can_cast(array.dtype, self._value.dtype, casting="same_kind"):
            raise ValueError(
                f"cannot assign a value of dtype {array.dtype} to {self!r} of dtype "
                f"{self._value.dtype}; cast it first"
            )
        np.copyto(self._value, array, casting="same_kind")
        return self

    def assign_add(self, delta: ArrayLike) -> Variable:
        """Add ``delta`` in place and return ``self``."""
        return self.assign(self._value + np.asarray(delta, dtype=self._value.dtype))

    def assign_sub(self, delta: ArrayLike) -> Variable:
        """Subtract ``delta`` in place and return ``self``."""
        return self.assign(self._value - np.asarray(delta, dtype=self._value.dtype))

    def _serialize_to_values(self) -> Mapping[str, Value]:
        return {VARIABLE_VALUE: self._value}

    def _value_names(self) -> Collection[str]:
        return (VARIABLE_VALUE,)

    def _restore_from_values(self, values: Mapping[str, Value]) -> None:
        value = values[VARIABLE_VALUE]
        if not isinstance(value, np.ndarray):
            raise CheckpointMismatchError(
                f"cannot restore {self!r} from a saved {type(value).__name__} ({value!r:.60}); "
                "the checkpoint holds no array here"
            )
        if value.dtype != self._value.dtype or value.shape != self._value.shape:
            raise CheckpointMismatchError(
                f"cannot restore {self!r} from a saved array of dtype {value.dtype} and shape "
                f"{value.shape}; the variable has dtype {self._value.dtype} and shape "
                f"{self._value.shape}"
            )
        np.copyto(self._value, value)

    def __repr__(self) -> str:
        body = np.array2string(self._value, threshold=6, edgeitems=2, separator=", ")
        return f"Variable(shape={self.shape}, dtype={self.dtype}, numpy={body})"
