from __future__ import annotations

import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.testing import assert_conformant


def test_finite_count() -> None:
    ds = ps.Dataset.range(3).repeat(2)
    assert [int(x) for x in ds] == [0, 1, 2, 0, 1, 2]
    assert len(ds) == 6


@pytest.mark.parametrize("count", [None, -1])
def test_forever(count: int | None) -> None:
    ds = ps.Dataset.range(2).repeat(count)
    assert ds.cardinality() == ps.data.INFINITE_CARDINALITY
    with pytest.raises(TypeError, match="The dataset is infinite"):
        len(ds)
    it = iter(ds)
    assert [int(next(it)) for _ in range(5)] == [0, 1, 0, 1, 0]


def test_zero_and_empty() -> None:
    assert list(ps.Dataset.range(3).repeat(0)) == []
    assert ps.Dataset.range(0).repeat().cardinality() == 0
    assert list(ps.Dataset.range(0).repeat()) == []


def test_each_pass_reshuffles() -> None:
    ds = ps.Dataset.range(50).global_shuffle(seed=1).repeat(3)
    values = [int(x) for x in ds]
    passes = [values[i * 50 : (i + 1) * 50] for i in range(3)]
    assert all(sorted(p) == list(range(50)) for p in passes)
    assert passes[0] != passes[1] != passes[2]


def test_nested_repeat_gives_distinct_epochs() -> None:
    ds = ps.Dataset.range(20).global_shuffle(seed=1).repeat(2).repeat(2)
    values = [int(x) for x in ds]
    passes = {tuple(values[i * 20 : (i + 1) * 20]) for i in range(4)}
    assert len(passes) == 4


def test_state_is_one_index_far_into_the_run() -> None:
    ds = ps.Dataset.range(1000).global_shuffle(seed=3).repeat()
    it = iter(ds)
    it.set_state({**it.get_state(), "iterator": {"index": 10**12, "seed": None}})
    value = next(it)
    assert value == ds[10**12]


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(ps.Dataset.range(5).repeat(3), id="finite"),
        pytest.param(ps.Dataset.range(4).repeat(), id="forever"),
        pytest.param(ps.Dataset.range(6).global_shuffle(seed=2).repeat(3), id="reshuffled"),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds, max_elements=40)


@pytest.mark.parametrize("count", [-1, -2, -100])
def test_any_negative_count_repeats_forever_as_in_tf_data(count: int) -> None:
    ds = ps.Dataset.range(3).repeat(count)
    assert ds.cardinality() == ps.data.INFINITE_CARDINALITY
    assert [int(x) for x in ds.take(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_bad_count() -> None:
    with pytest.raises(TypeError, match="count must be an integer"):
        ps.Dataset.range(3).repeat(1.5)  # type: ignore[arg-type]


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.

PROPERTY_OP = st.integers(0, 3).map(lambda c: lambda ds: ds.repeat(c))
