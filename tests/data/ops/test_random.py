"""``Dataset.random``: infinite pseudo-random int64 values, random access."""

from __future__ import annotations

import concurrent.futures

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.testing import assert_conformant, assert_restorable_at_every_position


def _values(ds: ps.Dataset, count: int) -> list[int]:
    it = iter(ds)
    return [int(next(it)) for _ in range(count)]


def test_int64_scalars_in_the_uint32_range() -> None:
    values = [next(iter(ps.Dataset.random(seed=s))) for s in range(5)]
    values += list(ps.Dataset.random(seed=9).take(500))
    assert all(type(v) is np.int64 for v in values)
    array = np.array(values)
    assert array.min() >= 0
    assert array.max() < 2**32
    assert array.max() > 2**31  # the whole range is used
    assert len(set(array.tolist())) == len(array)


def test_infinite_and_random_access() -> None:
    ds = ps.Dataset.random(seed=4)
    assert ds.cardinality() == ps.data.INFINITE_CARDINALITY
    first = _values(ds, 20)
    assert [int(ds[i]) for i in range(20)] == first
    assert int(ds[10**12]) == int(ds[10**12])
    # Strided and sparse reads give the same values as reading in order.
    assert [int(x) for x in ds.shard(3, 1).take(6)] == first[1:19:3]
    assert [int(x) for x in ds.skip(5).take(3)] == first[5:8]


def test_same_seed_same_values_and_different_seeds_differ() -> None:
    assert _values(ps.Dataset.random(seed=7), 10) == _values(ps.Dataset.random(seed=7), 10)
    assert _values(ps.Dataset.random(seed=7), 10) != _values(ps.Dataset.random(seed=8), 10)
    assert _values(ps.Dataset.random(seed=-1), 3) != _values(
        ps.Dataset.random(seed=2**64 - 1 - 2**63), 3
    )


@pytest.mark.parametrize(("rerandomize", "same"), [(None, True), (False, True), (True, False)])
def test_rerandomize_each_pass_of_repeat(rerandomize: bool | None, same: bool) -> None:
    ds = ps.Dataset.random(seed=42, rerandomize_each_iteration=rerandomize).take(10).repeat(2)
    values = [int(x) for x in ds]
    assert (values[:10] == values[10:]) == same


def test_seed_none_is_drawn_and_saved() -> None:
    ds = ps.Dataset.random().take(10)
    # rerandomize_each_iteration=False: one draw for the dataset's life.
    assert [int(x) for x in ds] == [int(x) for x in ds]
    assert [int(x) for x in ds] != [int(x) for x in ps.Dataset.random().take(10)]
    fresh = ps.Dataset.random(rerandomize_each_iteration=True).take(10)
    assert [int(x) for x in fresh] != [int(x) for x in fresh]
    it = iter(fresh)
    head = [int(next(it)) for _ in range(4)]
    state = it.get_state()
    assert isinstance(state["iterator"]["seed"], int)
    rest = [int(x) for x in it]
    other = iter(fresh)
    other.set_state(state)
    assert [int(x) for x in other] == rest
    assert len(head + rest) == 10
    with pytest.raises(ValueError, match="seed=None"):
        fresh[0]


def test_values_do_not_depend_on_the_order_of_reads() -> None:
    ds = ps.Dataset.random(seed=3)
    expected = _values(ds, 600)
    first, second = iter(ds), iter(ds.batch(7).unbatch())
    pairs = [(int(next(first)), int(next(second))) for _ in range(600)]
    assert [a for a, _ in pairs] == expected
    assert [b for _, b in pairs] == expected
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: _values(ds.skip(100), 300), range(4)))
    assert all(r == expected[100:400] for r in results)


def test_state_is_one_index() -> None:
    it = iter(ps.Dataset.random(seed=3))
    state = it.get_state()
    state["iterator"]["index"] = 10**9
    it.set_state(state)
    assert int(next(it)) == int(ps.Dataset.random(seed=3)[10**9])
    assert it.get_state()["iterator"] == {"index": 10**9 + 1, "seed": None}


def test_conformance() -> None:
    assert_conformant(ps.Dataset.random(seed=1).take(40))
    assert_conformant(ps.Dataset.random().take(20))
    assert_conformant(ps.Dataset.random(seed=2, rerandomize_each_iteration=True).take(6).repeat(3))
    assert_restorable_at_every_position(ps.Dataset.random(seed=5).batch(3), max_elements=20)


def test_element_spec_and_name() -> None:
    ds = ps.Dataset.random(seed=42, name="random")
    assert ds.element_spec == ps.data.TensorSpec((), np.int64)
    assert ds.name == "random"
    assert "name='random'" in repr(ds)
    assert ds.fingerprint == ps.Dataset.random(seed=42).fingerprint


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"seed": 1.5}, TypeError, "random: seed must be an integer"),
        ({"seed": 2**63}, ValueError, "random: seed must fit in int64"),
        ({"rerandomize_each_iteration": 1}, TypeError, "rerandomize_each_iteration must be a bool"),
        ({"name": ""}, TypeError, "name must be a non-empty string"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        ps.Dataset.random(**kwargs)  # type: ignore[arg-type]


PROPERTY_SOURCE = st.tuples(
    st.integers(0, 2**20), st.sampled_from([None, True]), st.integers(0, 25)
).map(lambda a: ps.Dataset.random(seed=a[0], rerandomize_each_iteration=a[1]).take(a[2]))
