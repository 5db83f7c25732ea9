"""``Dataset.choose_from_datasets``: each output from the input a choice dataset names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipestate._validate import brief, check_bool
from pipestate.data._spec import TensorSpec
from pipestate.data.dataset import INFINITE_CARDINALITY, UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import EndingIterator, StreamIterator
from pipestate.data.ops.sample_from_datasets import _check_datasets, _merged_spec
from pipestate.errors import InvalidArgumentError

_OP = "choose_from_datasets"


class _ChooseIterator(EndingIterator["ChooseFromDatasetsDataset"]):
    """Reads a choice, then that input; state: the choice's and the inputs' states, and
    whether the op ended (input 0 of ``"parents"`` is the choice dataset).

    An exhausted input's later choices are skipped (``stop_on_empty_dataset=False``)
    or end the op; it is read again each time it is chosen, so the state
    needs no record of which inputs ended.
    """

    _STATE_KEYS = (StreamIterator._PARENTS, EndingIterator._ENDED)

    def _start(self) -> None:
        super()._start()
        # Inputs found exhausted since the iterator started or was restored: once
        # all are, the op ends (as tf.data) instead of reading choices forever. A
        # restored iterator finds them again as they are chosen, skipping only
        # choices that would be skipped anyway.
        self._exhausted: set[int] = set()

    def _read(self) -> Any:
        choices, inputs = self._inputs[0], self._inputs[1:]
        while True:
            if len(self._exhausted) == len(inputs):
                self._end()
            try:
                choice = choices._next()
            except StopIteration:
                self._end()
            index = self._source._check_choice(choice)
            try:
                return inputs[index]._next()
            except StopIteration:
                if self._source._stop:
                    self._end()
                self._exhausted.add(index)


class ChooseFromDatasetsDataset(Dataset):
    """The next element of ``datasets[c]`` for each choice ``c`` of ``choice_dataset``.

    As tf.data: the choices are int64 scalars in ``[0, len(datasets))``; when a
    chosen input is exhausted the op ends (``stop_on_empty_dataset=True``, the
    default) or skips that choice. Streaming: the state is the choice
    dataset's and each input's state (each one index over random-access
    inputs).

    Raises:
      TypeError: ``datasets`` is not a non-empty list of datasets, their
        elements differ in structure or dtypes, ``choice_dataset`` is not a
        dataset of int64 scalars, or ``stop_on_empty_dataset`` is not a bool.
      InvalidArgumentError: (when read) a choice out of range.
    """

    _op_name = _OP
    _keeps_random_access = False
    _iterator_class = _ChooseIterator

    def __init__(
        self,
        datasets: Sequence[Dataset],
        choice_dataset: Dataset,
        stop_on_empty_dataset: bool = True,
    ) -> None:
        datasets = _check_datasets(datasets, _OP)
        if not isinstance(choice_dataset, Dataset):
            raise TypeError(
                f"{_OP}: choice_dataset must be a Dataset of int64 scalars, got "
                f"{type(choice_dataset).__name__} {brief(choice_dataset, 80)}"
            )
        spec = choice_dataset._element_spec()
        if spec is not None and spec != TensorSpec((), np.dtype(np.int64)):
            raise TypeError(
                f"{_OP}: elements of choice_dataset must be int64 scalars, got {spec}; "
                "cast them, e.g. choice_dataset.map(lambda c: np.int64(c))"
            )
        super().__init__([choice_dataset, *datasets])
        self._stop = bool(check_bool("stop_on_empty_dataset", stop_on_empty_dataset, op=_OP))
        self._spec = _merged_spec(datasets, _OP)

    def _params(self) -> dict[str, Any]:
        return {"stop_on_empty_dataset": self._stop}

    def _element_spec(self) -> Any:
        return self._spec

    def _cardinality(self) -> int:
        # As tf.data: infinite when the choices and every input are; otherwise unknown.
        sizes = [parent.cardinality() for parent in self._parents]
        if all(n == INFINITE_CARDINALITY for n in sizes):
            return INFINITE_CARDINALITY
        if sizes[0] == 0:
            return 0
        return UNKNOWN_CARDINALITY

    def _check_choice(self, choice: Any) -> int:
        value = np.asarray(choice)
        if value.shape != () or value.dtype != np.int64:
            raise InvalidArgumentError(
                f"{self._op_repr()}: a choice must be an int64 scalar, got "
                f"{value.dtype}{list(value.shape)}"
            )
        index = int(value)
        count = len(self._parents) - 1
        if not 0 <= index < count:
            raise InvalidArgumentError(
                f"{self._op_repr()}: Selector index out of range: choice {index} is not in "
                f"[0, {count}) (one per dataset)"
            )
        return index
