"""``filter``: keeps the elements for which a predicate is true."""

from __future__ import annotations

from collections.abc import Callable
from itertools import compress
from typing import Any, cast

import numpy as np

from pipestate._validate import check_function, check_stateful
from pipestate.data._calls import as_predicate_result, stop_error
from pipestate.data._fingerprint import describe_callable
from pipestate.data.dataset import INFINITE_CARDINALITY, UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import _SINGLE, IndexIterator, StreamIterator


class _FilterIterator(StreamIterator["FilterDataset"]):
    """Reads the input until the predicate holds; state: the input's position.

    On a random-access input that position is one index, counted before the
    filter, so the state stays O(1). There, a pure predicate is applied to a
    window of the input's read-ahead block at once (one loop in C instead of
    one ``next`` per input element; the window doubles from one element while
    the filter is read); the input's position still moves only up to each
    element returned, and an error is raised at its element.
    """

    def _start(self) -> None:
        super()._start()
        parent = self._inputs[0]
        self._by_block = (
            type(parent) is IndexIterator
            and parent._reading != _SINGLE
            and not self._source._stateful
        )
        self._kept: list[Any] = []  # elements that passed, read ahead, and
        self._kept_at: list[int] = []  # their input positions
        self._taken = 0  # kept elements returned
        self._scanned = 0  # input position after the elements tested
        self._failed: tuple[int, BaseException] | None = None  # where the predicate raised
        self._window = 1  # elements tested at once: grows while the filter is read

    def _test(self, element: Any) -> bool:
        """The predicate's verdict on one element, its errors named as the filter's."""
        dataset = self._source
        predicate = dataset._predicate
        try:
            keep = predicate(*element) if type(element) is tuple else predicate(element)
        except StopIteration as err:
            raise stop_error(dataset._op_repr(), predicate, err) from err
        if keep is True or keep is False or type(keep) is np.bool_:
            return bool(keep)
        return as_predicate_result(keep, "filter", predicate)

    def _next(self) -> Any:
        if self._by_block:
            taken = self._taken
            if taken < len(self._kept):
                self._taken = taken + 1
                self._inputs[0]._index = self._kept_at[taken] + 1  # type: ignore[attr-defined]
                return self._kept[taken]
            return self._next_block()
        read, test = self._inputs[0]._next, self._test
        while True:
            element = read()
            if test(element):
                return element

    def _next_block(self) -> Any:
        """Tests the input's next read-ahead block; returns its first element that passes."""
        parent = cast(IndexIterator, self._inputs[0])
        while True:
            if self._kept:  # every kept element was returned: the rest was tested too
                parent._index = self._scanned
                self._kept, self._kept_at, self._taken = [], [], 0
            if self._failed is not None and self._failed[0] == parent._index:
                position, error = self._failed
                self._failed = None
                parent._index = position + 1  # as unblocked: the failing element is consumed
                raise error
            block, offset = parent._read_ahead()
            elements = block[offset : offset + self._window]
            self._window = min(self._window * 2, _MAX_WINDOW)
            start = parent._index
            keeps = self._test_all(elements, start)
            self._scanned = start + len(keeps)
            self._kept = list(compress(elements, keeps))
            if self._kept:
                self._kept_at = list(compress(range(start, self._scanned), keeps))
                self._taken = 1
                parent._index = self._kept_at[0] + 1
                return self._kept[0]
            parent._index = self._scanned

    def _test_all(self, elements: list[Any], start: int) -> list[Any]:
        """Verdicts on ``elements``, up to the first that raises (noted in ``_failed``)."""
        predicate = self._source._predicate
        try:
            if type(elements[0]) is tuple:
                keeps = [predicate(*element) for element in elements]
            else:
                keeps = [predicate(element) for element in elements]
            if _BOOLS.issuperset(map(type, keeps)):
                return keeps
        except Exception:
            pass
        # Tested again one at a time (a pure predicate): errors at their element.
        keeps = []
        for element in elements:
            try:
                keeps.append(self._test(element))
            except Exception as err:
                self._failed = (start + len(keeps), err)
                break
        return keeps


_BOOLS = frozenset({bool, np.bool_})
_MAX_WINDOW = 1024


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
