"""``filter``: keeps the elements for which a predicate is true."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pipestate._validate import check_function, check_stateful
from pipestate.data._calls import as_predicate_result, stop_error
from pipestate.data._fingerprint import describe_callable
from pipestate.data.dataset import INFINITE_CARDINALITY, UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import StreamIterator


class _FilterIterator(StreamIterator["FilterDataset"]):
    """Reads the input until the predicate holds; state: the input's position.

    On a random-access input that position is one index, counted before the
    filter, so the state stays O(1).
    """

    def _next(self) -> Any:
        dataset = self._source
        parent, predicate = self._inputs[0], dataset._predicate
        while True:
            element = parent._next()
            try:
                keep = predicate(*element) if type(element) is tuple else predicate(element)
            except StopIteration as err:
                raise stop_error(dataset._op_repr(), predicate, err) from err
            if type(keep) is not np.bool_ and type(keep) is not bool:
                keep = as_predicate_result(keep, "filter", predicate)
            if keep:
                return element


class FilterDataset(Dataset):
    """The elements for which ``predicate(element)`` is true (a tuple is unpacked).

    Args:
      predicate: returns a scalar bool (Python, NumPy, or a 0-d bool array).
      stateful: ``True`` if the predicate depends on state outside the
        element (a counter, unseeded randomness); the pipeline then has
        external state and saving it follows the external state policy.

    Raises:
      TypeError: ``predicate`` is not callable; it returns something other than
        a scalar bool (raised while iterating).
    """

    _op_name = "filter"
    _keeps_random_access = False
    _passes_elements = True
    _iterator_class = _FilterIterator

    def __init__(
        self, parent: Dataset, predicate: Callable[..., Any], stateful: bool = False
    ) -> None:
        super().__init__([parent])
        self._predicate = check_function("predicate", predicate, "filter")
        self._stateful = check_stateful(stateful, "filter")

    def _cardinality(self) -> int:
        n = self._parents[0].cardinality()
        return n if n in (0, INFINITE_CARDINALITY) else UNKNOWN_CARDINALITY

    def _params(self) -> dict[str, Any]:
        return {"predicate": describe_callable(self._predicate)}

    def _external_state(self) -> str | None:
        return "stateful predicate" if self._stateful else None
