"""``filter``: keeps the elements for which a predicate is true."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pipestate.data import _structure
from pipestate.data._fingerprint import describe_callable
from pipestate.data.dataset import INFINITE_CARDINALITY, UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import StreamIterator


def check_function(name: str, fn: Any, op: str) -> Callable[..., Any]:
    """Validates a user function argument."""
    if not callable(fn):
        raise TypeError(f"{op}: {name} must be callable, got {type(fn).__name__} {fn!r:.80}")
    return fn  # type: ignore[no-any-return]


def check_stateful(stateful: Any, op: str) -> bool:
    """Validates the ``stateful`` flag of ops taking a user function."""
    if not isinstance(stateful, (bool, np.bool_)):
        raise TypeError(f"{op}: stateful must be a bool, got {stateful!r:.80}")
    return bool(stateful)


def call(fn: Callable[..., Any], element: Any) -> Any:
    """Calls a user function on an element, unpacking a plain tuple into arguments."""
    return fn(*element) if type(element) is tuple else fn(element)


def as_predicate_result(value: Any, op: str, fn: Callable[..., Any]) -> bool:
    """A predicate's result as a bool: a Python, NumPy or 0-d array bool."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype == np.bool_:
        return bool(value)
    raise TypeError(
        f"{op}: predicate {describe_callable(fn)} must return a scalar bool, got "
        f"{_structure.describe(value) if isinstance(value, np.ndarray) else repr(value)[:80]}"
    )


class _FilterIterator(StreamIterator):
    """Reads the input until the predicate holds; state: the input's position.

    On a random-access input that position is one index, counted before the
    filter, so the state stays O(1).
    """

    def _next(self) -> Any:
        dataset: FilterDataset = self._source  # type: ignore[assignment]
        parent, predicate = self._inputs[0], dataset._predicate
        while True:
            element = parent._next()
            keep = predicate(*element) if type(element) is tuple else predicate(element)
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
    _iterator_class = _FilterIterator

    def __init__(
        self, parent: Dataset, predicate: Callable[..., Any], stateful: bool = False
    ) -> None:
        super().__init__([parent])
        self._predicate = check_function("predicate", predicate, "filter")
        self._stateful = check_stateful(stateful, "filter")

    @property
    def _random_access(self) -> bool:
        return False

    def _cardinality(self) -> int:
        n = self._parents[0]._cardinality()
        return n if n in (0, INFINITE_CARDINALITY) else UNKNOWN_CARDINALITY

    def _params(self) -> dict[str, Any]:
        return {"predicate": describe_callable(self._predicate)}

    def _external_state(self) -> str | None:
        return "stateful predicate" if self._stateful else None
