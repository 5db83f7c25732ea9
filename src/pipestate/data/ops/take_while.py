"""``take_while``: the elements before the first for which a predicate is false."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pipestate._validate import check_function, check_stateful
from pipestate.data._calls import as_predicate_result, stop_error
from pipestate.data._fingerprint import describe_callable
from pipestate.data.dataset import UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import EndingIterator, StreamIterator


class _TakeWhileIterator(EndingIterator["TakeWhileDataset"]):
    """Passes elements on until the predicate fails; state: the input's position and ``ended``.

    Once the predicate has failed the iterator reads no further input, and a
    restored one does not either.
    """

    _STATE_KEYS = (EndingIterator._ENDED, StreamIterator._PARENT)

    def _read(self) -> Any:
        element = self._inputs[0]._next()
        predicate = self._source._predicate
        try:
            keep = predicate(*element) if type(element) is tuple else predicate(element)
        except StopIteration as err:
            raise stop_error(self._source._op_repr(), predicate, err) from err
        if type(keep) is not np.bool_ and type(keep) is not bool:
            keep = as_predicate_result(keep, "take_while", predicate)
        if not keep:
            self._end()
        return element


class TakeWhileDataset(Dataset):
    """The input's elements up to (not including) the first for which ``predicate`` is false.

    A plain tuple element is unpacked into the predicate's arguments. The
    cardinality is unknown, as in tf.data.

    Args:
      predicate: returns a scalar bool (Python, NumPy, or a 0-d bool array).
      stateful: ``True`` if the predicate depends on state outside the
        element; the pipeline then has external state.

    Raises:
      TypeError: ``predicate`` is not callable, or returns something other
        than a scalar bool (raised while iterating).

    Example:
      >>> import pipestate as ps
      >>> [int(x) for x in ps.Dataset.range(10).take_while(lambda x: x < 3)]
      [0, 1, 2]
    """

    _op_name = "take_while"
    _keeps_random_access = False
    _passes_elements = True
    _iterator_class = _TakeWhileIterator

    def __init__(
        self, parent: Dataset, predicate: Callable[..., Any], *, stateful: bool = False
    ) -> None:
        super().__init__([parent])
        self._predicate = check_function("predicate", predicate, "take_while")
        self._stateful = check_stateful(stateful, "take_while")

    def _cardinality(self) -> int:
        return UNKNOWN_CARDINALITY

    def _params(self) -> dict[str, Any]:
        return {"predicate": describe_callable(self._predicate)}

    def _external_state(self) -> str | None:
        return "stateful predicate" if self._stateful else None
