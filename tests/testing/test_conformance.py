"""The kit itself: it passes correct pipelines and catches broken ones."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import pipestate as ps
from pipestate.data.dataset import Dataset
from pipestate.data.iterator import DatasetIterator, IndexIterator, State
from pipestate.testing import (
    assert_chained_resumes,
    assert_conformant,
    assert_elements_equal,
    assert_epoch_boundaries,
    assert_exhausted_restores_exhausted,
    assert_restorable_at_every_position,
    walk,
)


class _ReplaysOne(IndexIterator):
    def _set_state(self, state: State) -> None:
        super()._set_state(state)
        self._index = max(0, self._index - 1)


class _ForgetsAtEnd(IndexIterator):
    def _set_state(self, state: State) -> None:
        super()._set_state(state)
        if self._index == self._length:
            self._index = 0


class _Broken(Dataset):
    """range(n) whose iterator class is chosen by the test."""

    _op_name = "broken"

    def __init__(self, n: int, iterator: type[IndexIterator]) -> None:
        super().__init__([ps.Dataset.range(n)])
        self._iterator = iterator

    def _cardinality(self) -> int:
        return self._parents[0]._cardinality()

    def _get(self, epoch: int, position: int) -> Any:
        return self._parents[0]._get(epoch, position)

    def _make_iterator(self, entropy: int | None) -> DatasetIterator:
        return self._iterator(self, entropy)


class _Unseeded(Dataset):
    """An op whose output is not a function of its position."""

    _op_name = "unseeded"

    def __init__(self) -> None:
        super().__init__([ps.Dataset.range(10)])
        self._rng = np.random.default_rng()

    def _cardinality(self) -> int:
        return 10

    def _get(self, epoch: int, position: int) -> Any:
        return np.int64(self._rng.integers(1000))


def test_correct_pipeline_passes() -> None:
    assert_conformant(ps.Dataset.range(20).global_shuffle(seed=1).batch(3))


def test_replaying_iterator_is_caught() -> None:
    with pytest.raises(AssertionError, match="state after set_state differs"):
        assert_restorable_at_every_position(_Broken(5, _ReplaysOne))
    with pytest.raises(AssertionError, match="elements differ"):
        assert_chained_resumes(_Broken(30, _ReplaysOne), seed=1)


def test_exhausted_state_that_restarts_is_caught() -> None:
    with pytest.raises(AssertionError, match="expected the end of the data"):
        assert_exhausted_restores_exhausted(_Broken(4, _ForgetsAtEnd))


def test_nondeterministic_op_is_caught() -> None:
    with pytest.raises(AssertionError, match="a second iteration"):
        assert_restorable_at_every_position(_Unseeded())


def test_epoch_boundaries_checks_repeat() -> None:
    assert_epoch_boundaries(ps.Dataset.range(4).global_shuffle(seed=1))
    with pytest.raises(AssertionError):
        assert_epoch_boundaries(_Unseeded())


def test_walk_records_states_before_each_element() -> None:
    elements, states, exhausted = walk(ps.Dataset.range(3))
    assert [int(e) for e in elements] == [0, 1, 2]
    assert [s["iterator"]["index"] for s in states] == [0, 1, 2, 3]
    assert exhausted
    elements, states, exhausted = walk(ps.Dataset.range(3).repeat(), max_elements=5)
    assert len(elements) == 5
    assert len(states) == 6
    assert not exhausted


def test_assert_elements_equal_is_exact() -> None:
    assert_elements_equal({"a": (np.int64(1),)}, {"a": (np.int64(1),)})
    for a, b in [
        (np.int64(1), np.int32(1)),
        (np.array([1.0]), np.array([[1.0]])),
        ((np.int64(1),), [np.int64(1)]),
        ({"a": np.int64(1)}, {"b": np.int64(1)}),
        (np.array([np.nan, 1.0]), np.array([np.nan, 2.0])),
    ]:
        with pytest.raises(AssertionError, match="elements differ"):
            assert_elements_equal(a, b)
    assert_elements_equal(np.array([np.nan]), np.array([np.nan]))
