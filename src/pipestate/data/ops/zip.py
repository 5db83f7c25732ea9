"""``Dataset.zip``: elements of several datasets side by side."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipestate._validate import brief
from pipestate.data import _structure
from pipestate.data.dataset import INFINITE_CARDINALITY, UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import EndingIterator, State, StreamIterator


class _ZipIterator(EndingIterator["ZipDataset"]):
    """Reads one element of each input per ``next``; state: the inputs' states and
    whether one of them has ended.

    Once an input has ended the zip has ended: later calls read no input (the
    elements already read from the inputs before it are dropped, as tf.data
    does), so the saved state stays the same.
    """

    _STATE_KEYS = (StreamIterator._PARENTS, EndingIterator._ENDED)

    def _read(self) -> Any:
        try:
            return self._source._pack([it._next() for it in self._inputs])
        except StopIteration:
            self._end()

    def _set_state(self, state: State) -> None:
        if isinstance(state, dict) and self._ENDED not in state:
            state = {**state, self._ENDED: False}  # saved before zip recorded its end
        super()._set_state(state)


class ZipDataset(Dataset):
    """Tuples (or dicts, or any nesting of them) of the inputs' elements.

    Ends with the shortest input, as Python's and tf.data's ``zip``.
    """

    _op_name = "zip"
    _iterator_class = _ZipIterator

    def __init__(self, datasets: Any) -> None:
        if isinstance(datasets, Dataset):
            datasets = (datasets,)
        if isinstance(datasets, list):
            datasets = tuple(datasets)
        leaves = _structure.flatten(datasets)
        bad = [leaf for leaf in leaves if not isinstance(leaf, Dataset)]
        if not leaves or bad:
            raise TypeError(
                "zip expects datasets, as zip(a, b), zip((a, b)) or zip({'x': a, 'y': b}); got "
                f"{brief(datasets, 120)}"
            )
        super().__init__(leaves)
        self._structure = datasets

    def _cardinality(self) -> int:
        sizes = [parent.cardinality() for parent in self._parents]
        finite = [n for n in sizes if n >= 0]
        if 0 in finite:
            return 0
        if UNKNOWN_CARDINALITY in sizes:
            return UNKNOWN_CARDINALITY
        return min(finite) if finite else INFINITE_CARDINALITY

    def _element_spec(self) -> Any:
        specs = iter([parent._element_spec() for parent in self._parents])
        built = _structure.map_structure(lambda _: next(specs), self._structure)
        return None if any(leaf is None for leaf in _structure.flatten(built)) else built

    def _params(self) -> dict[str, Any]:
        if type(self._structure) is tuple and len(self._structure) == len(self._parents):
            return {}
        return {"structure": repr(_structure.map_structure(lambda _: "*", self._structure))}

    def _pack(self, values: list[Any]) -> Any:
        it = iter(values)
        return _structure.map_structure(lambda _: next(it), self._structure)

    def _get(self, epoch: int, position: int) -> Any:
        return self._pack([parent._get(epoch, position) for parent in self._parents])

    def _get_batch(self, epochs: np.ndarray, positions: np.ndarray) -> Any:
        return self._pack([parent._get_batch(epochs, positions) for parent in self._parents])
