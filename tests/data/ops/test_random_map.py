"""``random_map``: a per-element generator from ``(seed, epoch, index)``, the same under any
threads, workers or restores; and finding ops that read the global generators."""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.data.ops.random_map import element_rng
from pipestate.testing import (
    assert_conformant,
    assert_elements_equal,
    assert_independent_of_global_rng,
    find_global_rng_use,
)

D = ps.Dataset
pytestmark = pytest.mark.timeout(120)


def jitter(x: np.int64, rng: np.random.Generator) -> np.ndarray:
    return np.array([x, rng.integers(1_000_000)], np.int64)


def crop(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    start = rng.integers(0, 3)
    return image[start : start + 2]


def pair(a: np.int64, b: np.int64, rng: np.random.Generator) -> tuple[Any, Any]:
    return a + b, rng.random()


def is_odd(x: np.int64) -> bool:
    return bool(x % 2 == 1)


def global_noise(x: np.int64) -> np.float64:
    noisy: np.float64 = x + np.random.rand()
    return noisy


def draws(ds: Any) -> list[list[int]]:
    return [np.asarray(x).tolist() for x in ds]


def test_each_element_gets_its_own_generator_from_seed_epoch_and_index() -> None:
    ds = D.range(6).random_map(jitter, seed=1)
    out = draws(ds)
    assert [x for x, _ in out] == list(range(6))
    assert len({r for _, r in out}) == 6
    expected = [int(element_rng(1, 0, i).integers(1_000_000)) for i in range(6)]
    assert [r for _, r in out] == expected
    assert draws(D.range(6).random_map(jitter, seed=1)) == out
    assert draws(D.range(6).random_map(jitter, seed=2)) != out
    assert int(ds[4][1]) == out[4][1]


def test_each_pass_of_a_repeat_draws_anew() -> None:
    out = draws(D.range(4).random_map(jitter, seed=3).repeat(2))
    assert [x for x, _ in out[:4]] == [x for x, _ in out[4:]]
    assert [r for _, r in out[:4]] != [r for _, r in out[4:]]


def test_tuple_elements_are_unpacked_before_the_generator() -> None:
    ds = D.zip(D.range(3), D.range(3)).random_map(pair, seed=0)
    values = list(ds)
    assert [int(a) for a, _ in values] == [0, 2, 4]
    assert all(0 <= float(b) < 1 for _, b in values)


@pytest.mark.parametrize(
    ("variant", "ordered"),
    [
        pytest.param(
            lambda d: d.random_map(jitter, seed=5, num_parallel_calls=2), True, id="threads"
        ),
        pytest.param(
            lambda d: d.random_map(jitter, seed=5, num_parallel_calls=2, deterministic=False),
            False,
            id="threads-unordered",
        ),
        pytest.param(lambda d: d.random_map(jitter, seed=5).prefetch(3), True, id="prefetch"),
    ],
)
def test_same_outputs_under_threads(variant: Any, ordered: bool) -> None:
    expected = draws(D.range(300).random_map(jitter, seed=5))
    out = draws(variant(D.range(300)))
    assert sorted(out) == sorted(expected)
    if ordered:
        assert out == expected


def test_same_outputs_under_loader_workers_and_after_restores() -> None:
    ds = D.range(200).random_map(jitter, seed=8)
    expected = draws(ds)
    for workers in (0, 2):
        it = iter(ps.data.Loader(ds, num_workers=workers, chunk_size=16))
        first = [np.asarray(next(it)).tolist() for _ in range(77)]
        state = json.loads(json.dumps(it.get_state()))
        it.close()
        resumed = iter(ps.data.Loader(ds, num_workers=2 - workers, chunk_size=5))
        resumed.set_state(state)
        assert first + draws(resumed) == expected
        resumed.close()


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(D.range(30).random_map(jitter, seed=1), id="random-access"),
        pytest.param(D.range(30).random_map(jitter), id="seedless"),
        pytest.param(D.range(30).filter(is_odd).random_map(jitter, seed=2), id="streaming"),
        pytest.param(
            D.range(12).filter(is_odd).random_map(jitter, seed=2, num_parallel_calls=2),
            id="streaming-threads",
        ),
        pytest.param(D.range(5).random_map(jitter, seed=3).repeat(3), id="repeat"),
        pytest.param(
            D.from_tensor_slices(np.arange(40).reshape(10, 4)).random_map(crop, seed=4).batch(3),
            id="then-batch",
        ),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds, max_elements=40)


def test_draws_before_shard_follow_the_global_index_under_any_world_size() -> None:
    ds = D.range(24).random_map(jitter, seed=6)
    whole: dict[int, int] = dict(draws(ds))  # type: ignore[arg-type]
    for world in (2, 3, 4):
        for rank in range(world):
            for x, r in draws(ds.shard(world, rank)):
                assert whole[x] == r


def test_state_is_one_index_over_a_random_access_input() -> None:
    it = iter(D.range(10**6).random_map(jitter, seed=1).batch(4))
    for _ in range(3):
        next(it)
    assert it.get_state()["iterator"] == {"index": 3, "seed": None}


def test_streaming_path_equals_random_access_path() -> None:
    from pipestate.testing._variants import streaming_variant

    ds = D.range(50).random_map(jitter, seed=7)
    streamed = streaming_variant(ds)
    assert streamed is not None
    for a, b in zip(streamed, ds):
        assert_elements_equal(a, b)


def test_errors_of_the_function_surface_at_their_element() -> None:
    def fail_on_three(x: np.int64, rng: np.random.Generator) -> np.int64:
        if x == 3:
            raise ValueError("bad element 3")
        return x

    it = iter(D.range(6).random_map(fail_on_three, seed=0))
    assert [int(next(it)) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="bad element 3"):
        next(it)
    assert [int(x) for x in it] == [4, 5]

    def stops(x: np.int64, rng: np.random.Generator) -> np.int64:
        raise StopIteration

    with pytest.raises(RuntimeError, match="must not raise StopIteration"):
        next(iter(D.range(3).random_map(stops, seed=0)))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"map_func": 3}, TypeError, "random_map: map_func must be callable"),
        ({"seed": "x"}, TypeError, "random_map: seed must be an integer"),
        ({"num_parallel_calls": 0}, ValueError, "num_parallel_calls must be >= 1"),
        ({"num_parallel_calls": 1.5}, TypeError, "num_parallel_calls must be a positive"),
        ({"deterministic": "no"}, TypeError, "deterministic must be a bool or None"),
        ({"name": ""}, TypeError, "name must be a non-empty string"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    kwargs = {"map_func": jitter, **kwargs}
    with pytest.raises(error, match=match):
        D.range(3).random_map(**kwargs)


# ------------------------------------------------------------- global generators
def test_find_global_rng_use_names_the_op_that_reads_them() -> None:
    ds = D.range(20).shuffle(5).map(global_noise).random_map(jitter).batch(2)
    found = find_global_rng_use(ds)
    assert found == ["map(map_func='global_noise')"]
    with pytest.raises(
        AssertionError, match=r"map\(map_func='global_noise'\) depend on the global"
    ):
        assert_independent_of_global_rng(ds)
    state = np.random.get_state()
    python_state = random.getstate()
    assert_independent_of_global_rng(D.range(20).shuffle(5).random_map(jitter).batch(2))
    assert np.array_equal(np.random.get_state()[1], state[1])  # type: ignore[index]
    assert random.getstate() == python_state
    with pytest.raises(TypeError, match="max_elements must be a positive int"):
        find_global_rng_use(ds, max_elements=0)
    with pytest.raises(TypeError, match="expects a pipestate Dataset"):
        find_global_rng_use([1, 2])  # type: ignore[arg-type]


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.


def _noisy(*args: Any) -> Any:
    *element, rng = args
    rng.random()  # a draw, so the generator is exercised; the element passes unchanged
    return element[0] if len(element) == 1 else tuple(element)


PROPERTY_OP = st.integers(0, 2**20).map(lambda seed: lambda ds: ds.random_map(_noisy, seed=seed))
