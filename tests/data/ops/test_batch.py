from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.testing import (
    assert_conformant,
    assert_elements_equal,
    assert_restorable_at_every_position,
)

from ._streaming import (
    STREAMING_INPUTS,
    assert_paths_agree,
    filtered,
    filtered_state,
    state_after,
)
from ._threads import (  # noqa: F401  (an autouse fixture)
    no_threads_left_from_other_tests,
    pipestate_threads,
    wait_for_no_threads,
)


def test_keeps_partial_last_batch() -> None:
    batches = list(ps.Dataset.range(7).batch(3))
    assert [b.tolist() for b in batches] == [[0, 1, 2], [3, 4, 5], [6]]
    assert all(b.dtype == np.int64 for b in batches)
    assert len(ps.Dataset.range(7).batch(3)) == 3


def test_drop_remainder() -> None:
    ds = ps.Dataset.range(7).batch(3, drop_remainder=True)
    assert [b.tolist() for b in ds] == [[0, 1, 2], [3, 4, 5]]
    assert len(ds) == 2


def test_stacks_leaves_of_nested_elements() -> None:
    ds = ps.Dataset.from_tensor_slices(
        {"x": np.arange(8).reshape(4, 2), "y": ([1, 2, 3, 4],)}
    ).batch(3)
    first = next(iter(ds))
    assert_elements_equal(first, {"x": np.arange(6).reshape(3, 2), "y": (np.array([1, 2, 3]),)})


def test_batch_of_batches() -> None:
    ds = ps.Dataset.range(8).batch(2).batch(2)
    assert_elements_equal(list(ds)[1], np.array([[4, 5], [6, 7]]))


def test_batch_of_infinite() -> None:
    ds = ps.Dataset.range(3).repeat().batch(2)
    assert ds.cardinality() == ps.data.INFINITE_CARDINALITY
    it = iter(ds)
    assert [next(it).tolist() for _ in range(3)] == [[0, 1], [2, 0], [1, 2]]


def test_different_shapes_cannot_be_stacked() -> None:
    ds = ps.Dataset.range(1, 4).map(lambda n: np.zeros(int(n))).batch(3)
    with pytest.raises(
        ps.errors.InvalidArgumentError,
        match=r"batch\(batch_size=3.*input elements 0 to 2.*different shapes in component 0: "
        r"the first element has shape \[1\] and element 1 has shape \[2\]",
    ):
        next(iter(ds))


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(ps.Dataset.range(10).batch(3), id="remainder"),
        pytest.param(ps.Dataset.range(10).batch(3, drop_remainder=True), id="drop"),
        pytest.param(ps.Dataset.range(10).batch(2).batch(2), id="nested"),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        pytest.param(
            {"batch_size": 0}, ValueError, "batch_size must be >= 1, got batch_size=0", id="zero"
        ),
        pytest.param(
            {"batch_size": 2.0},
            TypeError,
            "batch_size must be an integer, got float 2.0",
            id="float",
        ),
        pytest.param(
            {"batch_size": 2, "drop_remainder": "yes"},
            TypeError,
            "drop_remainder must be a bool",
            id="flag",
        ),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        ps.Dataset.range(3).batch(**kwargs)  # type: ignore[arg-type]


def _twice(x: np.int64) -> np.int64:
    return x * 2


def test_batches_read_ahead_under_global_shuffle_are_the_batches_asked_for() -> None:
    ds = ps.Dataset.range(60).map(_twice).batch(2).global_shuffle(seed=6)
    assert_elements_equal(tuple(ds), tuple(ds[i] for i in range(len(ds))))
    assert_restorable_at_every_position(
        ps.Dataset.range(5).map(_twice).batch(1).global_shuffle(seed=1), variants=()
    )


# -------------------------------------------------------------- the streaming path
# Over a streaming input a batch is read whole within one next(): the state is
# the input's (docs/ops.md).


@pytest.mark.parametrize(
    ("n", "size", "drop"),
    [
        pytest.param(7, 3, False, id="remainder"),
        pytest.param(7, 3, True, id="drop-remainder"),
        pytest.param(6, 3, True, id="exact"),
        pytest.param(2, 5, False, id="one-short-batch"),
        pytest.param(2, 5, True, id="short-batch-dropped"),
        pytest.param(0, 2, False, id="empty"),
        pytest.param(5, 1, False, id="size-1"),
    ],
)
def test_streaming_path_yields_the_random_access_batches(n: int, size: int, drop: bool) -> None:
    batches = assert_paths_agree(lambda ds: ds.batch(size, drop_remainder=drop), n)
    assert [len(b) for b in batches] == (
        [size] * (n // size) + ([] if drop or n % size == 0 else [n % size])
    )


def test_streaming_path_stacks_nested_elements() -> None:
    assert_paths_agree(lambda ds: ds.map(lambda x: {"x": x, "pair": (x, x * 1.5)}).batch(3), 7)
    assert_paths_agree(lambda ds: ds.batch(2).batch(2), 9)


def test_streaming_state_is_the_input_s() -> None:
    ds = filtered(7).batch(3)
    assert state_after(ds, 2) == {"parent": filtered_state(6), "seed": None}
    assert state_after(ds, 3) == {"parent": filtered_state(7), "seed": None}


def test_streaming_path_refuses_different_shapes() -> None:
    ds = filtered(4).map(lambda n: np.zeros(int(n))).batch(3)
    with pytest.raises(ps.errors.InvalidArgumentError, match="different shapes in component 0"):
        next(iter(ds))


@pytest.mark.parametrize("make", STREAMING_INPUTS.values(), ids=STREAMING_INPUTS.keys())
def test_streaming_conformance(make: Callable[[int], ps.Dataset]) -> None:
    assert_conformant(make(10).batch(3))
    assert_conformant(make(10).batch(3, drop_remainder=True))
    assert_conformant(make(2).batch(5))


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.

PROPERTY_OP = st.integers(1, 5).flatmap(
    lambda k: st.sampled_from([True, False]).map(lambda d: lambda ds: ds.batch(k, drop_remainder=d))
)


# ------------------------------------------------------- num_parallel_calls
def _plus_one(x: Any) -> Any:
    return x + 1


def _slow_first(x: Any) -> Any:
    if x == 0:
        time.sleep(0.3)  # the first chunk finishes last
    return x


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: ps.Dataset.range(23).map(_plus_one), id="random-access"),
        pytest.param(lambda: filtered(23).map(_plus_one), id="streaming"),
    ],
)
@pytest.mark.parametrize("threads", [1, 2, ps.data.AUTOTUNE])
def test_parallel_batches_equal_sequential_ones(
    make: Callable[[], ps.Dataset], threads: int
) -> None:
    sequential = list(make().batch(4))
    parallel = make().batch(4, num_parallel_calls=threads)
    assert len(list(parallel)) == len(sequential)
    for a, b in zip(parallel, sequential):
        assert_elements_equal(a, b)
    assert parallel.fingerprint == make().batch(4).fingerprint
    assert_conformant(parallel)


def test_parallel_batches_run_on_threads_and_save_one_index() -> None:
    ds = ps.Dataset.range(64).map(_plus_one).batch(4, num_parallel_calls=2)
    it = iter(ds)
    assert next(it).tolist() == [1, 2, 3, 4]
    assert type(it).__name__ == "ThreadedIndexIterator"
    assert it._threads == 2  # type: ignore[attr-defined]
    assert it.get_state()["iterator"] == {"index": 1, "seed": None}
    it.close()
    assert not wait_for_no_threads()


def test_position_restores_across_thread_counts() -> None:
    it = iter(filtered(30).batch(4, num_parallel_calls=2))
    for _ in range(3):
        next(it)
    state = it.get_state()
    it.close()
    sequential = iter(filtered(30).batch(4))
    sequential.set_state(state)
    assert next(sequential).tolist() == [12, 13, 14, 15]


def test_deterministic_false_delivers_batches_out_of_order_exactly_once() -> None:
    ds = ps.Dataset.range(80).map(_slow_first).batch(2, num_parallel_calls=2, deterministic=False)
    assert ds.fingerprint != ps.Dataset.range(80).map(_slow_first).batch(2).fingerprint
    it = iter(ds)
    first = next(it)
    assert first.tolist() != [0, 1]  # batch 0 is still being computed
    state = it.get_state()
    assert state["iterator"]["index"] == 0
    assert "ahead" in state["iterator"]
    rest = list(it)
    it.close()
    restored = iter(ds)
    restored.set_state(state)
    again = list(restored)
    restored.close()
    flat = sorted(int(x) for b in [first, *rest] for x in b)
    assert flat == list(range(80))
    assert sorted(int(x) for b in again for x in b) == sorted(int(x) for b in rest for x in b)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_parallel_calls": 0}, ValueError, "batch: num_parallel_calls must be >= 1"),
        ({"num_parallel_calls": "2"}, TypeError, "batch: num_parallel_calls must be a positive"),
        ({"num_parallel_calls": 2, "deterministic": "no"}, TypeError, "deterministic must be"),
        ({"deterministic": 1}, TypeError, "batch: deterministic must be a bool or None"),
    ],
)
def test_bad_parallel_arguments(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        ps.Dataset.range(4).batch(2, **kwargs)


def test_parallel_repr() -> None:
    ds = ps.Dataset.range(4).batch(2, num_parallel_calls=3, deterministic=False, name="b")
    assert repr(ds).endswith(
        "batch(batch_size=2, drop_remainder=False, deterministic=False, num_parallel_calls=3, "
        "name='b')"
    )
