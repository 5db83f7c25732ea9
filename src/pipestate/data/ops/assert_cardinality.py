"""``assert_cardinality``: declares the input's length and fails when it is wrong."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipestate._validate import check_int
from pipestate.data.dataset import INFINITE_CARDINALITY, UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import CountingIterator
from pipestate.errors import FailedPreconditionError


def _elements(count: int) -> str:
    """``count`` elements, in tf.data's words."""
    if count == INFINITE_CARDINALITY:
        return "an infinite number of elements"
    return "1 element" if count == 1 else f"{count} elements"


class _AssertCardinalityIterator(CountingIterator["AssertCardinalityDataset"]):
    """Counts the elements passed on; state: that count and the input's position.

    The input ending before the expected count, or an element past it, raises
    ``FailedPreconditionError`` (and raises again if asked again).
    """

    def _count_limit(self) -> int | None:
        expected = self._source._expected
        return None if expected == INFINITE_CARDINALITY else expected

    def _next(self) -> Any:
        expected = self._source._expected
        try:
            element = self._inputs[0]._next()
        except StopIteration:
            if self._count != expected:
                raise FailedPreconditionError(
                    f"{self._source._op_repr()}: Input dataset was expected to contain "
                    f"{_elements(expected)} but contained only {_elements(self._count)}. Fix "
                    "the expected cardinality, or the input."
                ) from None
            raise
        if self._count == expected:
            raise FailedPreconditionError(
                f"{self._source._op_repr()}: Input dataset was expected to contain "
                f"{_elements(expected)} but contained at least {_elements(expected + 1)}. "
                "Fix the expected cardinality, or the input."
            )
        self._count += 1
        return element


class AssertCardinalityDataset(Dataset):
    """The input's elements, checked to number exactly ``expected_cardinality``.

    ``cardinality()`` reports the expected count, as tf.data's
    ``assert_cardinality`` does, so ops after it (``batch``, ``repeat``, a
    ``Loader``) can plan with it. While iterating, an input that ends early
    or has an element past the expected count raises
    :class:`~pipestate.errors.FailedPreconditionError`; the elements before
    that are delivered. When the input is random access and its length is the
    expected one, the op changes nothing and the pipeline stays random access;
    otherwise it is streaming and its state counts the elements passed on.

    Args:
      expected_cardinality: the number of elements (>= 0), or
        ``INFINITE_CARDINALITY`` for an input that must never end.

    Raises:
      TypeError: ``expected_cardinality`` is not an integer.
      ValueError: ``expected_cardinality`` is negative (other than
        ``INFINITE_CARDINALITY``), e.g. ``UNKNOWN_CARDINALITY``.
      FailedPreconditionError: (while iterating) the input has another number
        of elements.

    Example:
      >>> import pipestate as ps
      >>> ds = ps.Dataset.range(10).filter(lambda x: x % 2 == 0).assert_cardinality(5)
      >>> ds.cardinality()
      5
    """

    _op_name = "assert_cardinality"
    _passes_elements = True
    _iterator_class = _AssertCardinalityIterator

    def __init__(self, parent: Dataset, expected_cardinality: int) -> None:
        super().__init__([parent])
        expected = check_int(
            "expected_cardinality", expected_cardinality, minimum=-2, op="assert_cardinality"
        )
        if expected == UNKNOWN_CARDINALITY:
            raise ValueError(
                "assert_cardinality: expected_cardinality must be a count >= 0 or "
                "INFINITE_CARDINALITY, got UNKNOWN_CARDINALITY (-2)"
            )
        self._expected = expected

    @property
    def _random_access(self) -> bool:
        parent = self._parents[0]
        return parent._random_access and parent.cardinality() == self._expected

    def _cardinality(self) -> int:
        return self._expected

    def _params(self) -> dict[str, Any]:
        return {"expected_cardinality": self._expected}

    def _get(self, epoch: int, position: int) -> Any:
        return self._parents[0]._get(epoch, position)

    def _get_batch(self, epochs: np.ndarray, positions: np.ndarray) -> Any:
        return self._parents[0]._get_batch(epochs, positions)

    def _get_list(self, epoch: int, positions: np.ndarray) -> list[Any]:
        return self._parents[0]._get_list(epoch, positions)
