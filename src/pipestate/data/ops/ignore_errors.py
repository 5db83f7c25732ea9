"""``ignore_errors``: drops the elements whose computation raised, counting them."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pipestate._validate import check_bool
from pipestate.data.dataset import INFINITE_CARDINALITY, UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import CountingIterator, State

_logger = logging.getLogger("pipestate.data")


def _same_state(a: Any, b: Any) -> bool:
    """Whether two input states are equal (arrays compared by value)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(a, b))
    return type(a) is type(b) and bool(a == b)


class _IgnoreErrorsIterator(CountingIterator["IgnoreErrorsDataset"]):
    """Passes on the input's elements, skipping those whose reading raised.

    The state is the input's position (past the skipped elements, which count
    as consumed everywhere in pipestate) and ``"count"``, the number of
    elements skipped so far, so a restored iterator continues after them and
    keeps counting.
    """

    def _next(self) -> Any:
        read = self._inputs[0]._next
        stuck: State | None = None
        while True:
            try:
                return read()
            except StopIteration:
                raise
            except Exception as err:
                self._count += 1
                if self._source._log_warning:
                    _logger.warning(
                        "%s skipped an element whose computation raised %s: %s "
                        "(%d skipped by this iterator's position so far)",
                        self._source._op_repr(),
                        type(err).__name__,
                        err,
                        self._count,
                    )
                # Every op moves past a failing element; an input that raises again
                # without moving would loop here for ever.
                after = self._inputs[0]._get_state()
                if stuck is not None and _same_state(stuck, after):
                    self._count -= 1
                    raise RuntimeError(
                        f"{self._source._op_repr()}: the input raised again without moving "
                        f"past the failing element ({type(err).__name__}: {err}), so the "
                        "element can't be skipped. Fix what fails, or filter it out before "
                        "the op that fails."
                    ) from err
                stuck = after


class IgnoreErrorsDataset(Dataset):
    """The input's elements, without those whose computation raised an error.

    **This op drops data on purpose**, as tf.data's ``ignore_errors``: an
    element whose computation raised (a user function of ``map``, ``filter``,
    ``flat_map`` ... below it, a damaged record of a file source) is skipped
    instead of reaching the caller of ``next()``. Everywhere else pipestate
    raises such errors. The number of skipped elements is in the iterator's
    state (``"count"``, restored with the position, so a resumed run neither
    repeats nor re-counts them), and ``log_warning=True`` logs each one on the
    ``pipestate.data`` logger with the error. Only ``Exception``\\ s are
    skipped (``KeyboardInterrupt`` is not). A file source skips the rest of a
    file it can't read (missing, damaged), as tf.data does, and counts it as
    one element. An input that raises again without moving past the failing
    element raises ``RuntimeError`` rather than loop.

    The op is streaming (the elements left are known only by reading them);
    its cardinality is unknown, or infinite for an infinite input.

    Args:
      log_warning: log a warning naming the op and the error for each
        skipped element.

    Raises:
      TypeError: ``log_warning`` is not a bool.
      RuntimeError: (while iterating) the input fails at the same position twice.

    Example:
      >>> import pipestate as ps
      >>> ds = ps.Dataset.from_tensor_slices([1.0, 2.0, 0.0, 4.0])
      >>> ds = ds.map(lambda x: 1 / x if x else 1 / int(x)).ignore_errors()
      >>> [float(x) for x in ds]
      [1.0, 0.5, 0.25]
    """

    _op_name = "ignore_errors"
    _keeps_random_access = False
    _passes_elements = True
    _iterator_class = _IgnoreErrorsIterator

    def __init__(self, parent: Dataset, log_warning: bool = False) -> None:
        super().__init__([parent])
        self._log_warning = bool(check_bool("log_warning", log_warning, op="ignore_errors"))

    def _cardinality(self) -> int:
        if self._parents[0].cardinality() == INFINITE_CARDINALITY:
            return INFINITE_CARDINALITY
        return UNKNOWN_CARDINALITY

    def _params(self) -> dict[str, Any]:
        # log_warning changes logging, not elements: a state restores across it.
        return {}

    def _op_repr(self) -> str:
        items = ["log_warning=True"] if self._log_warning else []
        if self._name is not None:
            items.append(f"name={self._name!r}")
        return f"ignore_errors({', '.join(items)})"
