"""``concatenate``: one dataset's elements, then another's."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipestate.data import _spec, _structure
from pipestate.data.dataset import INFINITE_CARDINALITY, UNKNOWN_CARDINALITY, Dataset, check_dataset
from pipestate.data.iterator import StreamIterator, read_int
from pipestate.errors import InvalidArgumentError


class _ConcatenateIterator(StreamIterator["ConcatenateDataset"]):
    """Reads the first input, then the second; state: which one, and both positions."""

    _CURRENT = "current"
    _STATE_KEYS = (_CURRENT, StreamIterator._PARENTS)

    def _start(self) -> None:
        super()._start()
        self._current = 0

    def _next(self) -> Any:
        if self._current == 0:
            try:
                return self._inputs[0]._next()
            except StopIteration:
                self._current = 1
        return self._inputs[1]._next()

    def _op_state(self) -> dict[str, Any]:
        state = super()._op_state()
        state[self._CURRENT] = self._current
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        self._current = read_int(state, self._CURRENT, self._op, maximum=1)
        super()._restore({self._PARENTS: state[self._PARENTS]})


class ConcatenateDataset(Dataset):
    """The elements of ``first`` followed by those of ``second``.

    Both must have the same structure and dtypes; their shapes may differ (as
    in tf.data, the shape of a component that differs becomes unknown).

    Raises:
      TypeError: ``dataset`` is not a Dataset, or the two inputs' elements are
        known to differ in structure or dtypes.
    """

    _op_name = "concatenate"
    _iterator_class = _ConcatenateIterator

    def __init__(self, first: Dataset, second: Dataset) -> None:
        super().__init__([first, check_dataset("dataset", second, op="concatenate")])
        self._spec = _spec.merge_specs(first._element_spec(), second._element_spec(), "concatenate")

    def _element_spec(self) -> Any:
        return self._spec

    @property
    def _vectorised(self) -> bool:
        # Blocks read across the join stack elements of both inputs: only when
        # every shape is known to be the same on both sides.
        return _spec.fully_defined(self._spec) and all(p._vectorised for p in self._parents)

    def _cardinality(self) -> int:
        a, b = (parent.cardinality() for parent in self._parents)
        for special in (INFINITE_CARDINALITY, UNKNOWN_CARDINALITY):
            if special in (a, b):
                return special
        return a + b

    def _get(self, epoch: int, position: int) -> Any:
        first, second = self._parents
        n = first.cardinality()
        if n < 0 or position < n:
            return first._get(epoch, position)
        return second._get(epoch, position - n)

    def _get_batch(self, epochs: np.ndarray, positions: np.ndarray) -> Any:
        first, second = self._parents
        n = first.cardinality()
        in_first = positions < n if n >= 0 else np.ones(len(positions), bool)
        if in_first.all():
            return first._get_batch(epochs, positions)
        if not in_first.any():
            return second._get_batch(epochs, positions - n)
        a = first._get_batch(epochs[in_first], positions[in_first])
        b = second._get_batch(epochs[~in_first], positions[~in_first] - n)
        try:
            _structure.assert_same_structure(a, b, "concatenate")
        except TypeError as err:
            raise InvalidArgumentError(str(err)) from None

        def merge(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            if x.shape[1:] != y.shape[1:] or x.dtype != y.dtype:
                if x.dtype.kind == y.dtype.kind == "S" and x.shape[1:] == y.shape[1:]:
                    x, y = x.astype(np.promote_types(x.dtype, y.dtype)), y
                else:
                    raise InvalidArgumentError(
                        f"{self._op_repr()}: cannot batch elements of the two datasets together: "
                        f"{x.dtype}{list(x.shape[1:])} vs {y.dtype}{list(y.shape[1:])}. Use "
                        "padded_batch, or make the shapes the same before batching."
                    )
            out = np.empty((len(positions), *x.shape[1:]), x.dtype)
            out[in_first] = x
            out[~in_first] = y
            return out

        return _structure.map_structure(merge, a, b)
