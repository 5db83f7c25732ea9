"""``filter`` over a random-access input tests windows of read-ahead elements at once.

What it must keep: the input's position moves only up to each element
returned, errors surface at their element (after the elements before it),
and a stateful predicate is still called exactly when its element is read.
"""

from __future__ import annotations

import numpy as np
import pytest

import pipestate as ps
from pipestate.testing import assert_restorable_at_every_position


def _position(it: ps.data.DatasetIterator) -> int:
    return int(it.get_state()["iterator"]["parent"]["index"])


def test_the_position_is_the_element_after_each_one_returned() -> None:
    ds = ps.Dataset.range(5000).map(lambda x: x * 3).filter(lambda x: x % 7 == 0)
    it = iter(ds)
    for _ in range(400):
        value = int(next(it))
        assert _position(it) == value // 3 + 1


def test_restores_at_every_position_through_growing_windows() -> None:
    ds = ps.Dataset.range(300).map(lambda x: x + 1).filter(lambda x: x % 3 != 0)
    assert_restorable_at_every_position(ds, max_positions=60)


@pytest.mark.parametrize("failing", [0, 1, 5, 40, 299])
def test_an_error_surfaces_at_its_element_and_reading_continues_after_it(failing: int) -> None:
    def keep(x: np.int64) -> bool:
        if int(x) == failing:
            raise ValueError(f"bad {int(x)}")
        return bool(x % 2 == 0)

    it = iter(ps.Dataset.range(300).map(lambda x: x).filter(keep))
    before = [int(next(it)) for _ in range(len([i for i in range(failing) if i % 2 == 0]))]
    assert before == [i for i in range(failing) if i % 2 == 0]
    with pytest.raises(ValueError, match=f"bad {failing}"):
        next(it)
    assert _position(it) == failing + 1  # the failing element counts as consumed
    state = it.get_state()
    rest = [int(x) for x in it]
    assert rest == [i for i in range(failing + 1, 300) if i % 2 == 0]
    again = iter(ps.Dataset.range(300).map(lambda x: x).filter(keep))
    again.set_state(state)
    assert [int(x) for x in again] == rest


def test_stop_iteration_from_the_predicate_is_an_error_at_its_element() -> None:
    def keep(x: np.int64) -> bool:
        if int(x) == 9:
            raise StopIteration
        return True

    it = iter(ps.Dataset.range(20).filter(keep))
    assert [int(next(it)) for _ in range(9)] == list(range(9))
    with pytest.raises(RuntimeError, match="raised StopIteration"):
        next(it)
    assert [int(x) for x in it] == list(range(10, 20))


def test_a_non_bool_verdict_is_a_type_error_at_its_element() -> None:
    it = iter(ps.Dataset.range(10).filter(lambda x: True if x < 4 else int(x)))
    assert [int(next(it)) for _ in range(4)] == [0, 1, 2, 3]
    with pytest.raises(TypeError, match="must return a scalar bool"):
        next(it)


def test_zero_d_bool_arrays_and_tuples_are_accepted() -> None:
    ds = ps.Dataset.zip(ps.Dataset.range(50), ps.Dataset.range(50)).filter(
        lambda a, b: np.array((a + b) % 4 == 0)
    )
    assert [int(a) for a, _ in ds] == [i for i in range(50) if (2 * i) % 4 == 0]


def test_a_stateful_predicate_is_called_exactly_when_its_element_is_read() -> None:
    calls: list[int] = []

    def keep(x: np.int64) -> bool:
        calls.append(int(x))
        return bool(x % 2)

    ds = ps.Dataset.range(1000).filter(keep, stateful=True)
    it = iter(ds)
    for _ in range(10):
        next(it)
    assert calls == list(range(20))
