"""Property: any pipeline, interrupted anywhere any number of times, yields the
uninterrupted stream — no element lost, none repeated."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pipestate as ps
from pipestate.data._structure import flatten, map_structure
from pipestate.testing import assert_elements_equal, roundtrip_state

Op = Callable[[ps.Dataset], ps.Dataset]


def _leaf_double(leaf: object) -> object:
    if np.asarray(leaf).dtype.kind == "S":
        return np.char.multiply(np.asarray(leaf), 2)  # text: repeated
    return leaf * 2  # type: ignore[operator]


def _double(*args: object) -> object:
    doubled = map_structure(_leaf_double, args)
    return doubled[0] if len(args) == 1 else doubled


def _leaf_total(leaf: object) -> int:
    array = np.asarray(leaf)
    if array.dtype.kind == "S":
        return int(np.sum(np.char.str_len(array)))
    return int(np.sum(array))


def _ragged(x: np.int64) -> np.ndarray:
    """A vector whose length varies by element: batching it is an error, as in tf.data."""
    return np.arange(int(x) % 4, dtype=np.int64)


def _record(x: np.int64) -> dict[str, object]:
    """Text of varying length and a ragged vector."""
    return {"text": "w" * (int(x) % 5) + "é", "ids": _ragged(x)}


def _sum_pair(a: object, b: object) -> object:
    return a + b  # type: ignore[operator]


def _keep(*args: object) -> bool:
    """A predicate for any element: drops about a third of them."""
    total = sum(_leaf_total(leaf) for leaf in flatten(args))
    return total % 3 != 1


def _total(args: tuple[object, ...]) -> int:
    return sum(_leaf_total(leaf) for leaf in flatten(args))


def _inner(*args: object) -> ps.Dataset:
    """A small dataset made from an element, for interleave and flat_map."""
    n = _total(args) % 4
    return ps.Dataset.range(n).map(lambda x: x * 10 + n)


def _running_sum(state: np.int64, element: object) -> tuple[np.int64, object]:
    state = np.int64(state + _total((element,)) % 1000)
    return state, (state, element)


def _small(*args: object) -> bool:
    return _total(args) % 17 != 16


def _generate(n: int) -> object:
    for i in range(n):
        yield np.int64(i * 3)


def _ops() -> st.SearchStrategy[Op]:
    small = st.integers(0, 6)
    return st.one_of(
        st.just(lambda ds: ds.map(_double)),
        st.integers(1, 5).flatmap(
            lambda k: st.sampled_from([True, False]).map(
                lambda d: lambda ds: ds.batch(k, drop_remainder=d)
            )
        ),
        st.integers(0, 3).map(lambda c: lambda ds: ds.repeat(c)),
        st.integers(0, 25).map(lambda n: lambda ds: ds.take(n)),
        small.map(lambda n: lambda ds: ds.skip(n)),
        st.integers(1, 3).flatmap(
            lambda n: st.integers(0, n - 1).map(lambda i: lambda ds: ds.shard(n, i))
        ),
        st.integers(-3, 3).map(lambda s: lambda ds: ds.enumerate(s)),
        st.integers(0, 9).map(
            lambda n: lambda ds: ps.Dataset.zip(ds, ps.Dataset.range(100, 100 + n))
        ),
        st.integers(0, 9).map(lambda n: lambda ds: ds.concatenate(ds.take(n))),
        st.integers(0, 2**31).flatmap(
            lambda seed: st.booleans().map(
                lambda r: lambda ds: ds.global_shuffle(seed=seed, reshuffle_each_iteration=r)
            )
        ),
        st.just(lambda ds: ds.global_shuffle()),
        st.just(lambda ds: ds.filter(_keep)),
        st.just(lambda ds: ds.unbatch()),
        st.integers(1, 4).flatmap(
            lambda k: st.sampled_from([True, False]).map(
                lambda d: lambda ds: ds.padded_batch(k, drop_remainder=d)
            )
        ),
        st.integers(1, 3).flatmap(
            lambda c: st.integers(1, 3).map(lambda b: lambda ds: ds.interleave(_inner, c, b))
        ),
        st.just(lambda ds: ds.flat_map(_inner)),
        st.just(lambda ds: ds.scan(np.int64(0), _running_sum)),
        st.just(lambda ds: ds.take_while(_small)),
        st.integers(1, 8).flatmap(
            lambda size: st.one_of(st.none(), st.integers(0, 2**31)).flatmap(
                lambda seed: st.booleans().map(
                    lambda r: lambda ds: ds.shuffle(size, seed, reshuffle_each_iteration=r)
                )
            )
        ),
    )


def _sources() -> st.SearchStrategy[ps.Dataset]:
    return st.one_of(
        st.integers(0, 40).map(ps.Dataset.range),
        st.integers(0, 25).map(
            lambda n: ps.Dataset.from_tensor_slices(
                {"x": np.arange(n * 2.0).reshape(n, 2), "y": np.arange(n)}
            )
        ),
        st.integers(0, 25).map(
            lambda n: ps.Dataset.zip(ps.Dataset.range(n), ps.Dataset.range(n)).map(_sum_pair)
        ),
        st.integers(0, 25).map(lambda n: ps.Dataset.range(n).map(_ragged)),
        st.integers(0, 25).map(
            lambda n: (
                ps.Dataset.from_tensor_slices(np.array([f"s{i % 7}é" for i in range(n)]))
                if n
                else ps.Dataset.range(0).map(lambda x: b"")
            )
        ),
        st.integers(0, 25).map(lambda n: ps.Dataset.range(n).map(_record)),
        st.integers(0, 30).map(
            lambda n: ps.Dataset.from_generator(_generate, args=(n,)).with_options(
                ps.data.Options(external_state_policy="ignore")
            )
        ),
    )


@st.composite
def pipelines(draw: st.DrawFn) -> ps.Dataset:
    ds = draw(_sources())
    for op in draw(st.lists(_ops(), max_size=4)):
        try:
            ds = op(ds)
        except (ValueError, TypeError):
            continue  # e.g. global_shuffle of an infinite dataset: not a valid pipeline
    return ds


LIMIT = 150


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ds=pipelines(), cuts=st.lists(st.integers(0, LIMIT), max_size=5))
def test_resumed_stream_equals_uninterrupted(ds: ps.Dataset, cuts: list[int]) -> None:
    reference_iterator = iter(ds)
    start_state = reference_iterator.get_state()
    reference = []
    # An invalid pipeline (e.g. batching ragged batches) fails where tf.data would;
    # the resumed run must then fail at the very same element.
    failure: type[Exception] | None = None
    try:
        for element in reference_iterator:
            reference.append(element)
            if len(reference) == LIMIT:
                break
    except (ValueError, TypeError) as err:
        failure = type(err)

    iterator = iter(ds)
    iterator.set_state(start_state)
    resumed: list[object] = []
    for cut in sorted(cuts):
        while len(resumed) < min(cut, len(reference)):
            resumed.append(next(iterator))
        saved = roundtrip_state(iterator.get_state())
        iterator = iter(ds)  # a fresh iterator, as in a new process
        iterator.set_state(saved)
    while len(resumed) < len(reference):
        resumed.append(next(iterator))
    if failure is not None:
        with pytest.raises(failure):
            next(iterator)
    assert len(resumed) == len(reference)
    for i, (a, b) in enumerate(zip(resumed, reference)):
        assert_elements_equal(a, b, f"element {i} of {ds!r}")
    if failure is None and len(reference) < LIMIT:
        assert next(iterator, None) is None, "resumed stream is longer than the uninterrupted one"
