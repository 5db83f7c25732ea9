"""Property: with prefetch, parallel map and loader workers, any pipeline interrupted anywhere any
number of times, and restored with other worker counts each time, yields the sequential stream —
no element lost, none repeated."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pipestate as ps
from pipestate.data._structure import flatten, map_structure
from pipestate.testing import assert_elements_equal

pytestmark = pytest.mark.timeout(300)

AUTOTUNE = ps.data.AUTOTUNE
LIMIT = 120

Recipe = tuple[Any, ...]
# How one build runs the background ops: (map threads or None, prefetch buffer or None).
Workers = tuple[int | None, int | None]


def _double(*args: object) -> object:
    doubled = map_structure(lambda leaf: leaf * 2, args)
    return doubled[0] if len(args) == 1 else doubled


def _sum_pair(a: object, b: object) -> object:
    return a + b  # type: ignore[operator]


def _keep(*args: object) -> bool:
    return int(np.sum(np.asarray(flatten(args)[0]))) % 3 != 1


def _ops(streaming: bool) -> st.SearchStrategy[Recipe]:
    small = st.integers(0, 6)
    ops = [
        st.just(("map",)),
        st.tuples(st.just("batch"), st.integers(1, 5), st.booleans()),
        st.tuples(st.just("repeat"), st.integers(0, 3)),
        st.tuples(st.just("take"), small),
        st.tuples(st.just("skip"), small),
        st.integers(1, 3).flatmap(
            lambda n: st.tuples(st.just("shard"), st.just(n), st.integers(0, n - 1))
        ),
        st.tuples(st.just("enumerate"), st.integers(-3, 3)),
        st.tuples(st.just("zip"), st.integers(0, 9)),
        st.tuples(st.just("concatenate"), st.integers(0, 9)),
        st.tuples(st.just("global_shuffle"), st.integers(0, 2**31), st.booleans()),
        st.just(("global_shuffle_seedless",)),
        st.just(("prefetch",)),
    ]
    if streaming:
        ops += [
            st.just(("filter",)),
            st.tuples(st.just("shuffle"), st.integers(1, 8), st.integers(0, 2**31)),
        ]
    return st.one_of(*ops)


def _sources() -> st.SearchStrategy[Recipe]:
    return st.one_of(
        st.tuples(st.just("range"), st.integers(0, 40)),
        st.tuples(st.just("slices"), st.integers(0, 25)),
        st.tuples(st.just("zipped"), st.integers(0, 25)),
    )


def build(source: Recipe, ops: list[Recipe], workers: Workers) -> ps.Dataset:
    """The pipeline; ``workers == (None, None)`` builds it with no background work at all."""
    threads, buffer = workers
    kind, n = source
    if kind == "range":
        ds = ps.Dataset.range(n)
    elif kind == "slices":
        ds = ps.Dataset.from_tensor_slices(
            {"x": np.arange(n * 2.0).reshape(n, 2), "y": np.arange(n)}
        )
    else:
        ds = ps.Dataset.zip(ps.Dataset.range(n), ps.Dataset.range(n)).map(_sum_pair)
    for op in ops:
        name, args = op[0], op[1:]
        try:
            if name == "map":
                ds = ds.map(_double, num_parallel_calls=threads)
            elif name == "prefetch":
                ds = ds if buffer is None else ds.prefetch(buffer)
            elif name == "zip":
                ds = ps.Dataset.zip(ds, ps.Dataset.range(100, 100 + args[0]))
            elif name == "concatenate":
                ds = ds.concatenate(ds.take(args[0]))
            elif name == "batch":
                ds = ds.batch(args[0], drop_remainder=args[1])
            elif name == "global_shuffle":
                ds = ds.global_shuffle(seed=args[0], reshuffle_each_iteration=args[1])
            elif name == "global_shuffle_seedless":
                ds = ds.global_shuffle()
            elif name == "filter":
                ds = ds.filter(_keep)
            elif name == "shuffle":
                ds = ds.shuffle(args[0], seed=args[1])
            else:
                ds = getattr(ds, name)(*args)
        except (ValueError, TypeError):
            continue  # e.g. global_shuffle of an infinite dataset: not a valid pipeline
    return ds


def _workers() -> st.SearchStrategy[Workers]:
    return st.tuples(
        st.sampled_from([None, 1, 2, 3, AUTOTUNE]), st.sampled_from([None, 1, 4, AUTOTUNE])
    )


def _reference(ds: ps.Dataset) -> tuple[list[object], dict[str, Any], type[Exception] | None]:
    iterator = iter(ds)
    start = iterator.get_state()
    out: list[object] = []
    try:
        for element in iterator:
            out.append(element)
            if len(out) == LIMIT:
                break
    except (ValueError, TypeError) as err:
        iterator.close()
        return out, start, type(err)
    iterator.close()
    return out, start, None


def _roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(state))  # type: ignore[no-any-return]
    except TypeError:  # a buffer shuffle's saved buffer is an array
        return copy.deepcopy(state)


def _check_resumed(
    make: Callable[[Workers | int], Any],
    reference: list[object],
    start: dict[str, Any],
    failure: type[Exception] | None,
    cuts: list[int],
    configs: list[Any],
) -> None:
    iterator = iter(make(configs[0]))
    iterator.set_state(start)
    resumed: list[object] = []
    for cut, config in zip(sorted(cuts), configs[1:]):
        while len(resumed) < min(cut, len(reference)):
            resumed.append(next(iterator))
        saved = _roundtrip(iterator.get_state())
        iterator.close()
        iterator = iter(make(config))  # a fresh iterator with other worker counts
        iterator.set_state(saved)
    while len(resumed) < len(reference):
        resumed.append(next(iterator))
    if failure is not None:
        with pytest.raises(failure):
            next(iterator)
    for i, (a, b) in enumerate(zip(resumed, reference)):
        assert_elements_equal(a, b, f"element {i}")
    if failure is None and len(reference) < LIMIT:
        assert next(iterator, None) is None, "resumed stream is longer than the sequential one"
    iterator.close()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    source=_sources(),
    ops=st.lists(_ops(streaming=True), max_size=5),
    cuts=st.lists(st.integers(0, LIMIT), max_size=4),
    configs=st.lists(_workers(), min_size=5, max_size=5),
)
def test_threads_resumed_stream_equals_sequential(
    source: Recipe, ops: list[Recipe], cuts: list[int], configs: list[Workers]
) -> None:
    reference, start, failure = _reference(build(source, ops, (None, None)))
    _check_resumed(lambda w: build(source, ops, w), reference, start, failure, cuts, configs)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    source=_sources(),
    ops=st.lists(_ops(streaming=False), max_size=4),
    cuts=st.lists(st.integers(0, LIMIT), max_size=3),
    configs=st.lists(st.integers(0, 3), min_size=4, max_size=4),
)
def test_loader_resumed_stream_equals_sequential(
    source: Recipe, ops: list[Recipe], cuts: list[int], configs: list[int]
) -> None:
    ds = build(source, ops, (None, None))
    reference, start, failure = _reference(ds)

    def make(num_workers: Workers | int) -> ps.data.Loader:
        return ps.data.Loader(ds, num_workers=num_workers, chunk_size=3)  # type: ignore[arg-type]

    _check_resumed(make, reference, start, failure, cuts, configs)


def _jitter(x: np.int64) -> np.int64:
    if x % 5 == 0:
        import time

        time.sleep(0.001)
    return x * 2


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(0, 150),
    below=st.lists(
        st.one_of(
            st.tuples(st.just("global_shuffle"), st.integers(0, 99)),
            st.tuples(st.just("take"), st.integers(0, 120)),
            st.tuples(st.just("skip"), st.integers(0, 10)),
            st.just(("repeat",)),
        ),
        max_size=3,
    ),
    cuts=st.lists(st.integers(0, 150), max_size=5),
    threads=st.lists(st.sampled_from([1, 2, 3, AUTOTUNE]), min_size=6, max_size=6),
)
def test_nondeterministic_map_delivers_each_element_once(
    n: int, below: list[Recipe], cuts: list[int], threads: list[int]
) -> None:
    base = ps.Dataset.range(n)
    for op in below:
        if op[0] == "global_shuffle":
            base = base.global_shuffle(seed=op[1])
        elif op[0] == "repeat":
            base = base.repeat(2)
        else:
            base = getattr(base, op[0])(op[1])
    expected = sorted(int(x) * 2 for x in base)

    def make(workers: int) -> ps.Dataset:
        return base.map(_jitter, num_parallel_calls=workers, deterministic=False).prefetch(2)

    iterator = iter(make(threads[0]))
    out: list[int] = []
    for cut, workers in zip(sorted(cuts), threads[1:]):
        while len(out) < min(cut, len(expected)):
            out.append(int(next(iterator)))
        saved = _roundtrip(iterator.get_state())
        iterator.close()
        iterator = iter(make(workers))
        iterator.set_state(saved)
    out.extend(int(x) for x in iterator)
    assert sorted(out) == expected
