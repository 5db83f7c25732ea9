from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.errors import StateMismatchError
from pipestate.testing import assert_conformant, assert_elements_equal


def is_even(x: np.int64) -> bool:
    return bool(x % 2 == 0)


def ints(ds: ps.Dataset) -> list[int]:
    return [int(x) for x in ds]


def test_is_a_permutation_and_deterministic_with_seed() -> None:
    a = ints(ps.Dataset.range(100).shuffle(10, seed=7))
    assert sorted(a) == list(range(100))
    assert a != list(range(100))
    assert a == ints(ps.Dataset.range(100).shuffle(10, seed=7))
    assert a != ints(ps.Dataset.range(100).shuffle(10, seed=8))


def test_buffer_bounds_displacement_like_tf() -> None:
    # The k-th output is one of the first k + buffer_size inputs.
    out = ints(ps.Dataset.range(200).shuffle(5, seed=1))
    assert all(value < k + 5 for k, value in enumerate(out))
    assert ints(ps.Dataset.range(20).shuffle(1, seed=1)) == list(range(20))


def test_reshuffle_each_iteration() -> None:
    both = ints(ps.Dataset.range(20).shuffle(20, seed=3).repeat(2))
    assert sorted(both[:20]) == sorted(both[20:]) == list(range(20))
    assert both[:20] != both[20:]
    same = ints(ps.Dataset.range(20).shuffle(20, seed=3, reshuffle_each_iteration=False).repeat(2))
    assert same[:20] == same[20:]


def test_seedless_iterators_differ_and_record_their_seed() -> None:
    ds = ps.Dataset.range(50).shuffle(50)
    a, b = iter(ds), iter(ds)
    assert ints(ps.Dataset.range(0)) == []
    first_a, first_b = [int(next(a)) for _ in range(50)], [int(next(b)) for _ in range(50)]
    assert first_a != first_b
    assert isinstance(iter(ds).get_state()["iterator"]["seed"], int)


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(ps.Dataset.range(30).shuffle(7, seed=1), id="random-access-input"),
        pytest.param(ps.Dataset.range(30).shuffle(100, seed=1), id="buffer-larger-than-input"),
        pytest.param(ps.Dataset.range(0).shuffle(3, seed=1), id="empty"),
        pytest.param(ps.Dataset.range(40).filter(is_even).shuffle(6, seed=2), id="streaming"),
        pytest.param(ps.Dataset.range(25).shuffle(6), id="seedless"),
        pytest.param(
            ps.Dataset.range(12).filter(is_even).shuffle(4).repeat(2).batch(3),
            id="seedless-streaming-repeat-batch",
        ),
        pytest.param(
            ps.Dataset.range(30).map(lambda x: x * 3).shuffle(5, seed=4).batch(4),
            id="map-input",
        ),
        pytest.param(
            ps.Dataset.from_tensor_slices({"a": np.arange(40.0).reshape(20, 2), "b": np.arange(20)})
            .filter(lambda d: d["b"] != 3)
            .shuffle(5, seed=3),
            id="dict-elements-streaming",
        ),
        pytest.param(
            ps.Dataset.from_tensor_slices(np.array([b"a", b"bb", b"ccc", b"d", b"e"] * 3))
            .filter(lambda s: s != b"d")
            .shuffle(4, seed=0),
            id="bytes-elements-streaming",
        ),
        pytest.param(
            ps.Dataset.range(1, 12)
            .filter(is_even)
            .map(lambda n: (np.arange(n), n))
            .shuffle(3, seed=9),
            id="ragged-elements-streaming",
        ),
        pytest.param(
            ps.Dataset.range(10).shuffle(4, seed=1).shuffle(3, seed=2), id="shuffle-of-shuffle"
        ),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds)


def test_random_access_input_saves_indices_not_data() -> None:
    rows = np.random.default_rng(0).standard_normal((10_000, 128)).astype(np.float32)
    ds = ps.Dataset.from_tensor_slices(rows).shuffle(1000, seed=1)
    it = iter(ds)
    seen = [next(it) for _ in range(10)]
    inner = it.get_state()["iterator"]
    assert inner["buffer"].dtype == np.int64
    assert inner["buffer"].shape == (1000,)
    assert inner["parent"] == {"index": 1010, "seed": None}
    restored = iter(ds)
    restored.set_state(it.get_state())
    for _ in range(50):
        assert_elements_equal(next(restored), next(it))
    assert all(any(np.array_equal(s, r) for r in rows[:1010]) for s in seen)


def test_streaming_input_saves_stacked_elements() -> None:
    rows = np.arange(3000.0, dtype=np.float32).reshape(100, 30)
    ds = ps.Dataset.from_tensor_slices(rows).filter(lambda r: r[0] >= 0).shuffle(10, seed=1)
    it = iter(ds)
    next(it)
    packed = it.get_state()["iterator"]["buffer"]
    assert packed["count"] == 10
    (column,) = packed["columns"]
    assert column.shape == (10, 30)
    assert column.dtype == np.float32


def test_state_with_arrays_restores_through_a_checkpoint(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ds = ps.Dataset.range(100).filter(is_even).shuffle(8, seed=5)
    it = iter(ds)
    for _ in range(7):
        next(it)
    path = ps.Checkpoint(iterator=it).save(str(tmp_path / "ckpt"))
    expected = [int(x) for x in it]
    fresh = iter(ds)
    next(fresh)
    ps.Checkpoint(iterator=fresh).restore(path).assert_consumed()
    assert [int(x) for x in fresh] == expected


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="shuffle: buffer_size must be >= 1, got buffer_size=0"):
        ps.Dataset.range(3).shuffle(0)
    with pytest.raises(TypeError, match="shuffle: buffer_size must be an integer, got float"):
        ps.Dataset.range(3).shuffle(2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="shuffle: seed must be an integer"):
        ps.Dataset.range(3).shuffle(2, seed="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="reshuffle_each_iteration must be a bool"):
        ps.Dataset.range(3).shuffle(2, reshuffle_each_iteration=1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        pytest.param(
            lambda inner: {**inner, "buffer": np.arange(9)},
            "at most 4 input indices",
            id="buffer-too-long",
        ),
        pytest.param(
            lambda inner: {**inner, "buffer": np.array([0, 99])},
            "indices out of range",
            id="index-out-of-range",
        ),
        pytest.param(
            lambda inner: {**inner, "produced": -1},
            r"state\['produced'\]=-1 is out of range",
            id="negative-count",
        ),
        pytest.param(
            lambda inner: {**inner, "filled": 1},
            r"state\['filled'\] must be a bool",
            id="filled-type",
        ),
    ],
)
def test_malformed_state(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    ds = ps.Dataset.range(20).shuffle(4, seed=1)
    it = iter(ds)
    next(it)
    good = it.get_state()
    expected = [int(x) for x in iter_from(ds, good)]
    with pytest.raises(StateMismatchError, match=message):
        it.set_state({**good, "iterator": mutate(good["iterator"])})
    assert [int(x) for x in it] == expected


def iter_from(ds: ps.Dataset, state: dict) -> ps.data.DatasetIterator:  # type: ignore[type-arg]
    it = iter(ds)
    it.set_state(state)
    return it


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.

PROPERTY_OP = st.integers(1, 8).flatmap(
    lambda size: st.one_of(st.none(), st.integers(0, 2**31)).flatmap(
        lambda seed: st.booleans().map(
            lambda r: lambda ds: ds.shuffle(size, seed, reshuffle_each_iteration=r)
        )
    )
)
