"""``map(num_parallel_calls=...)``: the op's name is ``map``; its state is ``map``'s."""

from __future__ import annotations

import copy
import gc
import json
import random
import time
import traceback

import numpy as np
import pytest

import pipestate as ps
from pipestate.data._engine import available_cores
from pipestate.data.ops.parallel_map import ParallelMapDataset
from pipestate.testing import assert_conformant, assert_elements_equal, walk

from ._threads import (  # noqa: F401  (an autouse fixture)
    no_threads_left_from_other_tests,
    pipestate_threads,
    wait_for_no_threads,
)

pytestmark = pytest.mark.timeout(60)

AUTOTUNE = ps.data.AUTOTUNE


def slow(x: np.int64) -> np.int64:
    time.sleep(0.001)  # work that releases the GIL, as NumPy or I/O would
    return x


def double(x: np.int64) -> np.int64:
    return x * 2


def is_even(x: np.int64) -> bool:
    return bool(x % 2 == 0)


def nested(x: np.int64) -> tuple[np.int64, dict[str, np.ndarray]]:
    return x, {"sq": np.full(3, x * x)}


def slow_first(x: np.int64) -> np.int64:
    if x == 0:
        time.sleep(0.3)  # the first chunk finishes last
    return x


def jitter(x: np.int64) -> np.int64:
    if x % 7 == 0:
        time.sleep(0.002)
    return x


def fails_at(x: np.int64) -> np.int64:
    if x == 13:
        raise ZeroDivisionError("element thirteen")
    return x


PIPELINES = {
    "random-access": lambda n: ps.Dataset.range(30).map(double, num_parallel_calls=n),
    "batched": lambda n: ps.Dataset.range(30).map(nested, num_parallel_calls=n).batch(4),
    "shuffled": lambda n: ps.Dataset.range(25).global_shuffle().map(double, num_parallel_calls=n),
    "streaming": lambda n: ps.Dataset.range(40).filter(is_even).map(double, num_parallel_calls=n),
    "streaming-batched": lambda n: (
        ps.Dataset.range(40).shuffle(7, seed=2).map(nested, num_parallel_calls=n).batch(3)
    ),
    "infinite": lambda n: ps.Dataset.range(3).repeat().map(double, num_parallel_calls=n),
}


@pytest.mark.parametrize("make", PIPELINES.values(), ids=PIPELINES.keys())
@pytest.mark.parametrize("workers", [1, 3, AUTOTUNE], ids=["1", "3", "autotune"])
def test_conformance(make, workers: int) -> None:
    assert_conformant(make(workers), max_elements=40)


@pytest.mark.parametrize("make", PIPELINES.values(), ids=PIPELINES.keys())
def test_elements_and_states_equal_sequential_map(make) -> None:
    sequential = PIPELINES_SEQUENTIAL[make]
    parallel = make(2)
    assert parallel.fingerprint == sequential.fingerprint
    elements, states, _ = walk(parallel, 40)
    expected, expected_states, _ = walk(sequential, 40)
    assert len(elements) == len(expected)
    if sequential.draws_seed:
        return
    for a, b in zip(elements, expected):
        assert_elements_equal(a, b)
    np.testing.assert_equal(states, expected_states)


def _sequential(make):
    ds = make(1)

    # the same pipeline with every parallel map replaced by a plain map
    def rebuild(node):
        parents = tuple(rebuild(p) for p in node._parents)
        if isinstance(node, ParallelMapDataset):
            return parents[0].map(node._fn)
        return node._with_parents(parents) if parents else node

    return rebuild(ds)


PIPELINES_SEQUENTIAL = {make: _sequential(make) for make in PIPELINES.values()}


@pytest.mark.parametrize("make", PIPELINES.values(), ids=PIPELINES.keys())
def test_restore_with_another_number_of_threads(make) -> None:
    rng = random.Random(0)
    ds = make(3)
    reference = [e for e, _ in zip(iter(ds.take(40)), range(40))]
    it = iter(ds)
    start = it.get_state()
    out: list[object] = []
    for cut in sorted(rng.sample(range(len(reference) + 1), 4)):
        while len(out) < cut:
            out.append(next(it))
        state = copy.deepcopy(it.get_state())  # a shuffle buffer is an array: not JSON
        workers = rng.choice([None, 1, 2, 5, AUTOTUNE])
        it = iter(make(workers) if workers else PIPELINES_SEQUENTIAL[make])
        it.set_state(state)
    while len(out) < len(reference):
        out.append(next(it))
    if not ds.draws_seed:
        for a, b in zip(out, reference):
            assert_elements_equal(a, b)
    fresh = iter(ds)
    fresh.set_state(start)
    assert len([e for e, _ in zip(fresh, range(40))]) == len(reference)


def test_deterministic_false_delivers_out_of_order_and_restores_exactly() -> None:
    ds = ps.Dataset.range(200).map(slow_first, num_parallel_calls=2, deterministic=False)
    it = iter(ds)
    first = int(next(it))
    assert first != 0  # element 0's chunk is still being computed
    state = it.get_state()["iterator"]
    assert state["index"] == 0
    assert state["ahead"] == [first, first + 1]
    it.close()


@pytest.mark.parametrize("seed", range(4))
def test_deterministic_false_exactly_once_over_restores(seed: int) -> None:
    rng = random.Random(seed)
    ds = ps.Dataset.range(300).map(jitter, num_parallel_calls=3, deterministic=False)
    it = iter(ds)
    out: list[int] = []
    while True:
        try:
            out.append(int(next(it)))
        except StopIteration:
            break
        if rng.random() < 0.05:
            state = json.loads(json.dumps(it.get_state()))
            it.close()
            it = iter(
                ps.Dataset.range(300).map(
                    jitter, num_parallel_calls=rng.choice([1, 2, 4]), deterministic=False
                )
            )
            it.set_state(state)
            assert it.get_state() == state
    assert sorted(out) == list(range(300)), f"lost or repeated elements, seed {seed}"
    it.close()


def test_deterministic_false_state_is_validated() -> None:
    ds = ps.Dataset.range(20).map(double, num_parallel_calls=2, deterministic=False)
    it = iter(ds)
    good = it.get_state()
    for ahead in ([3], [5, 4], [0, 2], [3, 5, 4, 6], [3, 25], ["a", "b"]):
        bad = json.loads(json.dumps(good))
        bad["iterator"]["ahead"] = ahead
        with pytest.raises(ps.errors.StateMismatchError, match="ahead"):
            it.set_state(bad)
    assert it.get_state() == good


def test_deterministic_false_keeps_order_where_reordering_would_change_elements() -> None:
    # Not the iterator's own elements (batched after it), or a streaming input: in order.
    batched = ps.Dataset.range(40).map(slow_first, num_parallel_calls=2, deterministic=False)
    assert [int(x) for x in batched.batch(4).unbatch()] == list(range(40))
    streaming = ps.Dataset.range(40).filter(is_even)
    mapped = streaming.map(slow_first, num_parallel_calls=2, deterministic=False)
    assert [int(x) for x in mapped] == list(range(0, 40, 2))


def test_deterministic_false_is_part_of_the_definition() -> None:
    base = ps.Dataset.range(5)
    assert base.map(double, num_parallel_calls=2).fingerprint == base.map(double).fingerprint
    assert (
        base.map(double, num_parallel_calls=2, deterministic=False).fingerprint
        != base.map(double).fingerprint
    )


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: ps.Dataset.range(40), id="random-access"),
        pytest.param(lambda: ps.Dataset.range(40).filter(lambda x: True), id="streaming"),
    ],
)
def test_exception_surfaces_at_the_same_element_with_its_traceback(make) -> None:
    it = iter(make().map(fails_at, num_parallel_calls=3))
    assert [int(next(it)) for _ in range(13)] == list(range(13))
    with pytest.raises(ZeroDivisionError, match="element thirteen") as info:
        next(it)
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "fails_at" in frames
    sequential = iter(make().map(fails_at))
    for _ in range(13):
        next(sequential)
    with pytest.raises(ZeroDivisionError):
        next(sequential)
    # As without threads (and in tf.data): the failing element is consumed, the next follows.
    np.testing.assert_equal(it.get_state(), sequential.get_state())
    assert [int(x) for x in it] == [int(x) for x in sequential] == list(range(14, 40))
    it.close()


@pytest.mark.parametrize(("workers", "expected"), [(1, 1), (3, 3), (AUTOTUNE, available_cores())])
def test_thread_count(workers: int, expected: int) -> None:
    it = iter(ps.Dataset.range(100_000).map(slow, num_parallel_calls=workers))
    for _ in range(200):  # a consumer with work of its own: a lone thread has something to overlap
        next(it)
        time.sleep(0.001)
    assert len(pipestate_threads()) == expected
    it.close()
    assert not pipestate_threads()


def test_autotune_uses_the_available_cores() -> None:
    ds = ps.Dataset.range(3).map(double, num_parallel_calls=AUTOTUNE)
    assert ds._background().threads == available_cores() >= 1


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: ps.Dataset.range(10**6), id="random-access"),
        pytest.param(lambda: ps.Dataset.range(10**6).filter(is_even), id="streaming"),
    ],
)
def test_garbage_collection_stops_the_threads(make) -> None:
    it = iter(make().map(double, num_parallel_calls=2))
    next(it)
    assert pipestate_threads()
    del it
    gc.collect()
    deadline = time.monotonic() + 5
    while pipestate_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not pipestate_threads()


def test_stays_random_access() -> None:
    ds = ps.Dataset.range(10).map(double, num_parallel_calls=2)
    assert len(ds) == 10
    assert ds[4] == 8
    assert ds.global_shuffle(seed=1).cardinality() == 10


def test_repr() -> None:
    ds = ps.Dataset.range(3).map(double, num_parallel_calls=4, deterministic=False)
    assert repr(ds).endswith(".map(map_func='double', num_parallel_calls=4, deterministic=False)")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"num_parallel_calls": 0}, ValueError, "num_parallel_calls must be >= 1"),
        ({"num_parallel_calls": "2"}, TypeError, "num_parallel_calls must be a positive"),
        ({"num_parallel_calls": 2, "deterministic": "yes"}, TypeError, "deterministic"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        ps.Dataset.range(3).map(double, **kwargs)  # type: ignore[arg-type]
