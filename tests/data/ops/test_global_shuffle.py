from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.data._permutation import Permutation
from pipestate.testing import assert_conformant


@pytest.mark.parametrize(
    "n", [0, 1, 2, 3, 255, 256, 257, 65_535, 65_536, 65_537, 262_143, 262_144, 262_145]
)
def test_true_permutation_for_every_length(n: int) -> None:
    perm = Permutation(n, seed=7, epoch=0)
    image = perm.apply(np.arange(n, dtype=np.int64))
    assert np.array_equal(np.sort(image), np.arange(n))
    if n > 1:
        sample = range(0, n, max(1, n // 97))
        assert [perm(i) for i in sample] == image[list(sample)].tolist()  # scalar == vectorised
    if n >= 256:
        assert np.mean(image == np.arange(n)) < 0.05  # not close to the identity


def test_dataset_is_a_permutation_each_epoch() -> None:
    n = 1000
    ds = ps.Dataset.range(n).global_shuffle(seed=42).repeat(3)
    values = np.array([int(x) for x in ds])
    epochs = values.reshape(3, n)
    for epoch in epochs:
        assert np.array_equal(np.sort(epoch), np.arange(n))
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[1], epochs[2])


def test_seed_and_epoch_do_not_alias() -> None:
    n = 500
    seed43_epoch0 = Permutation(n, seed=43, epoch=0).apply(np.arange(n))
    seed42_epoch1 = Permutation(n, seed=42, epoch=1).apply(np.arange(n))
    assert not np.array_equal(seed43_epoch0, seed42_epoch1)


def test_no_reshuffle_repeats_the_first_order() -> None:
    ds = ps.Dataset.range(30).global_shuffle(seed=1, reshuffle_each_iteration=False).repeat(2)
    values = [int(x) for x in ds]
    assert values[:30] == values[30:]
    assert values[:30] != list(range(30))


def test_same_seed_same_order_different_seed_different_order() -> None:
    a = [int(x) for x in ps.Dataset.range(100).global_shuffle(seed=1)]
    b = [int(x) for x in ps.Dataset.range(100).global_shuffle(seed=1)]
    c = [int(x) for x in ps.Dataset.range(100).global_shuffle(seed=2)]
    assert a == b != c


def test_seed_none_draws_per_iterator_and_state_keeps_it() -> None:
    ds = ps.Dataset.range(100).global_shuffle()
    first, second = iter(ds), iter(ds)
    a = [int(next(first)) for _ in range(10)]
    assert a != [int(next(second)) for _ in range(10)]
    state = first.get_state()
    assert isinstance(state["iterator"]["seed"], int)
    rest = [int(x) for x in first]
    resumed = iter(ds)
    resumed.set_state(state)
    assert [int(x) for x in resumed] == rest
    with pytest.raises(ValueError, match="pass a seed to index it"):
        ds[0]


def test_two_seedless_shuffles_in_one_pipeline_differ() -> None:
    base = ps.Dataset.range(64)
    ds = ps.Dataset.zip(base.global_shuffle(), base.global_shuffle().map(lambda x: x))
    pairs = list(ds)
    assert any(a != b for a, b in pairs)


def test_batches_use_the_same_order_as_elements() -> None:
    ds = ps.Dataset.range(1000).global_shuffle(seed=3)
    elements = [int(x) for x in ds]
    batched = np.concatenate(list(ds.batch(64))).tolist()
    assert batched == elements
    assert [int(ds[i]) for i in range(0, 1000, 37)] == elements[::37]


def test_state_is_small() -> None:
    it = iter(
        ps.Dataset.from_tensor_slices(np.zeros((1_000_000, 1), np.uint8)).global_shuffle(seed=1)
    )
    next(it)
    import json

    assert len(json.dumps(it.get_state())) < 1024


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(ps.Dataset.range(13).global_shuffle(seed=8), id="seeded"),
        pytest.param(ps.Dataset.range(13).global_shuffle(), id="seedless"),
        pytest.param(ps.Dataset.range(40).global_shuffle(seed=1).batch(7), id="batched"),
        pytest.param(
            ps.Dataset.range(2).global_shuffle(seed=1, reshuffle_each_iteration=False),
            id="no-reshuffle",
        ),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds)


def test_requires_finite_input() -> None:
    with pytest.raises(ValueError, match="global_shuffle needs a finite input, got cardinality -1"):
        ps.Dataset.range(3).repeat().global_shuffle()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed": 1.5}, "seed must be an integer, got float 1.5"),
        ({"reshuffle_each_iteration": 1}, "reshuffle_each_iteration must be a bool, got 1"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        ps.Dataset.range(3).global_shuffle(**kwargs)  # type: ignore[arg-type]


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.

PROPERTY_OP = (
    st.integers(0, 2**31).flatmap(
        lambda seed: st.booleans().map(
            lambda r: lambda ds: ds.global_shuffle(seed=seed, reshuffle_each_iteration=r)
        )
    ),
    st.just(lambda ds: ds.global_shuffle()),
)
