from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.testing import assert_conformant

from ._streaming import (
    STREAMING_INPUTS,
    assert_agree,
    assert_paths_agree,
    filtered,
    filtered_state,
    generated,
    keep_all,
    state_after,
)


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


# -------------------------------------------------------------- the streaming path
# Over a streaming input repeat re-opens the input for each pass; its state is
# the pass number, whether the pass yielded anything, and the input's
# (docs/ops.md).


@pytest.mark.parametrize("count", [0, 1, 3])
def test_streaming_path_yields_the_random_access_elements(count: int) -> None:
    assert_paths_agree(lambda ds: ds.repeat(count), 4)


@pytest.mark.parametrize("count", [None, -1, -3])
def test_streaming_path_repeats_forever(count: int | None) -> None:
    assert_paths_agree(lambda ds: ds.repeat(count).take(11), 3)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("count", [None, 0, 3])
def test_streaming_repeat_of_an_empty_input_is_empty(count: int | None) -> None:
    for ds in (filtered(0), generated(0), ps.Dataset.range(5).filter(lambda x: False)):
        assert list(ds.repeat(count)) == []
        assert_conformant(ds.repeat(count))


def test_streaming_passes_are_epochs_of_the_input() -> None:
    below = ps.Dataset.range(6).global_shuffle(seed=5)
    values = assert_agree(below.filter(keep_all).repeat(2), below.repeat(2))
    assert [int(x) for x in values[:6]] != [int(x) for x in values[6:]]


def test_streaming_state_counts_passes() -> None:
    ds = filtered(3).repeat(2)
    assert state_after(ds, 0) == {
        "pass": 0, "yielded": False, "parent": filtered_state(0), "seed": None
    }  # fmt: skip
    assert state_after(ds, 3) == {
        "pass": 0, "yielded": True, "parent": filtered_state(3), "seed": None
    }  # fmt: skip
    assert state_after(ds, 4) == {
        "pass": 1, "yielded": True, "parent": filtered_state(1), "seed": None
    }  # fmt: skip


@pytest.mark.parametrize("make", STREAMING_INPUTS.values(), ids=STREAMING_INPUTS.keys())
def test_streaming_conformance(make: Callable[[int], ps.Dataset]) -> None:
    assert_conformant(make(4).repeat(3))
    assert_conformant(make(3).repeat().take(10))
    assert_conformant(make(3).batch(2).repeat(2))


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.

PROPERTY_OP = st.integers(0, 3).map(lambda c: lambda ds: ds.repeat(c))
