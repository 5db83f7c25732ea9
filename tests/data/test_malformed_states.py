"""Malformed iterator states: every one is refused at ``set_state`` with a typed, bounded
error, and the iterator keeps its position; a state that is accepted reads cleanly."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pipestate as ps
from pipestate.errors import StateMismatchError
from pipestate.testing import assert_elements_equal

PIPELINES: dict[str, Callable[[], ps.Dataset]] = {
    "range-repeat": lambda: ps.Dataset.range(7).repeat(),
    "global-shuffle-batch": lambda: ps.Dataset.range(50).global_shuffle(seed=3).batch(4),
    "filter-scan": lambda: (
        ps.Dataset.range(40)
        .filter(lambda x: x % 3 != 0)
        .scan(np.int64(0), lambda s, x: (s + x, (s, x)))
    ),
    "shuffle-buffer": lambda: ps.Dataset.range(30).filter(lambda x: True).shuffle(5, seed=1),
    "interleave": lambda: ps.Dataset.range(6).interleave(
        lambda x: ps.Dataset.range(x), cycle_length=2
    ),
    "generator": lambda: ps.Dataset.from_generator(lambda: iter(range(20))).with_options(
        ps.data.Options(external_state_policy="ignore")
    ),
    "seedless-shuffle": lambda: ps.Dataset.range(20).global_shuffle().take(15),
    "zip-enumerate": lambda: (
        ps.Dataset.zip(ps.Dataset.range(9), ps.Dataset.range(9))
        .filter(lambda a, b: True)
        .enumerate()
    ),
    "window": lambda: (
        ps.Dataset.range(30).filter(lambda x: True).window(3, 2).flat_map(lambda w: w)
    ),
    "group-by-window": lambda: ps.Dataset.range(30).group_by_window(
        lambda x: x % 3, lambda key, w: w, window_size=4
    ),
    "bucket": lambda: ps.Dataset.range(30).bucket_by_sequence_length(
        lambda x: x % 5, [2], [3, 2], no_padding=True
    ),
    "group-by-reducer": lambda: ps.Dataset.range(30).group_by_reducer(
        lambda x: x % 4,
        ps.data.Reducer(lambda key: np.int64(0), lambda s, x: s + x, lambda s: s),
    ),
    "unique": lambda: ps.Dataset.range(30).map(lambda x: x % 7).filter(lambda x: True).unique(),
    "rebatch": lambda: ps.Dataset.range(30).batch(4).rebatch([3, 2]),
    "index-flat-map": lambda: (
        ps.Dataset.range(30)
        .filter(lambda x: True)
        .index_flat_map(lambda x: np.array([x, x]), lambda i: (i // 2, i % 2))
    ),
    "rejection-resample": lambda: ps.Dataset.range(30).rejection_resample(
        lambda x: x % 2, [0.3, 0.7], seed=1
    ),
}


def _shared(depth: int) -> Any:
    """A list that shares itself 2**depth times: its full repr never ends."""
    value: Any = [0]
    for _ in range(depth):
        value = [value, value]
    return value


def _deep(depth: int) -> Any:
    value: Any = {}
    for _ in range(depth):
        value = {"parent": value}
    return value


HOSTILE = st.one_of(
    st.just(10**39),
    st.just(-(10**39)),
    st.just(2**63),
    st.integers(-3, 3),
    st.just(1.5),
    st.just(float("nan")),
    st.just(True),
    st.just(None),
    st.just("x" * 10_000),
    st.just(b"bytes"),
    st.just(np.array([1, 2])),
    st.just(np.int64(1)),
    st.just([]),
    st.just({}),
    st.just(_shared(60)),
    st.just(_deep(50_000)),
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a state's nested dicts and lists."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _paths(item, (*prefix, i))
    return found


def _replace(state: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    parent = state
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = new
    return state


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(PIPELINES)),
    consumed=st.integers(0, 12),
    choice=st.integers(0, 10_000),
    action=st.sampled_from(["replace", "delete", "add"]),
    value=HOSTILE,
)
def test_malformed_states_are_refused_and_keep_the_position(
    name: str, consumed: int, choice: int, action: str, value: Any
) -> None:
    ds = PIPELINES[name]()
    it = iter(ds)
    for _ in range(consumed):
        next(it, None)
    state = it.get_state()
    paths = _paths(state)
    path = paths[choice % len(paths)]
    bad = copy.deepcopy(state)
    target = bad
    for key in path:
        target = target[key]
    if action == "delete" and path:
        parent = bad
        for key in path[:-1]:
            parent = parent[key]
        del parent[path[-1]]
    elif action == "add" and isinstance(target, dict):
        target["unexpected"] = value
    else:
        bad = _replace(bad, path, value)

    reference = iter(ds)
    reference.set_state(state)
    expected = [next(reference, None) for _ in range(3)]
    refused: Exception | None = None
    try:
        it.set_state(bad)
    except (StateMismatchError, TypeError) as err:
        refused = err
    if refused is not None:
        assert len(str(refused)) < 2_000  # bounded, however big the state
        got = [next(it, None) for _ in range(3)]  # the position is the one before
        for a, b in zip(got, expected):
            if a is None or b is None:
                assert a is b
            else:
                assert_elements_equal(a, b)
    else:
        # An accepted state is one the pipeline could have saved: it reads cleanly.
        for _ in range(3):
            next(it, None)
    it.close()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        pytest.param(
            lambda s: s.update(version=np.array([1, 2])), "Unsupported iterator state version"
        ),
        pytest.param(lambda s: s.update(fingerprint=np.array([1])), "fingerprint must be a str"),
        pytest.param(lambda s: s["iterator"].update(index=10**39), "out of range"),
        pytest.param(lambda s: s["iterator"].update(seed=2**64), r"state\['seed'\] must be"),
        pytest.param(lambda s: s.update(iterator=_deep(100_000)), "keys|nested too deeply"),
        pytest.param(lambda s: s["iterator"].update(index=_shared(80)), "must be an int"),
    ],
)
def test_each_known_gap_is_a_state_mismatch(mutate: Callable[[Any], None], message: str) -> None:
    ds = ps.Dataset.range(10).map(lambda x: x).global_shuffle().repeat()
    it = iter(ds)
    next(it)
    state = it.get_state()
    mutate(state)
    with pytest.raises(StateMismatchError, match=message):
        it.set_state(state)


def test_a_float_never_becomes_an_int_scan_state() -> None:
    ds = ps.Dataset.range(5).filter(lambda x: True).scan(np.int64(0), lambda s, x: (s + x, s))
    it = iter(ds)
    next(it)
    state = it.get_state()
    state["iterator"]["scan_state"][0]["data"] = [1.5]
    with pytest.raises(StateMismatchError, match="float64 values"):
        it.set_state(state)
    assert int(next(it)) == 0  # position unchanged


def test_an_infinite_source_refuses_positions_past_int64() -> None:
    for ds in (ps.Dataset.range(3).repeat(), ps.Dataset.range(3).filter(lambda x: True).repeat()):
        it = iter(ds)
        state = it.get_state()
        text = str(state)
        assert "index" in text
        huge = copy.deepcopy(state)

        def bump(value: Any) -> None:
            if isinstance(value, dict):
                for key, item in value.items():
                    if key in ("index", "epoch") and isinstance(item, int):
                        value[key] = 10**39
                    else:
                        bump(item)

        bump(huge)
        with pytest.raises(StateMismatchError, match="out of range"):
            it.set_state(huge)
        assert [int(next(it)) for _ in range(4)] == [0, 1, 2, 0]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("key", ["dtype", "data", "shape"])
def test_shared_lists_in_a_scan_state_are_refused_quickly(key: str) -> None:
    ds = PIPELINES["filter-scan"]()
    it = iter(ds)
    next(it)
    state = it.get_state()
    state["iterator"]["scan_state"][0][key] = _shared(60)
    with pytest.raises(StateMismatchError, match="scan"):
        it.set_state(state)


@pytest.mark.timeout(30)
def test_shared_lists_in_a_buffer_are_refused_quickly() -> None:
    for name in ("shuffle-buffer", "seedless-shuffle"):
        it = iter(PIPELINES[name]())
        next(it)
        state = it.get_state()
        inner = state["iterator"]
        if "buffer" in inner:
            inner["buffer"] = _shared(60)
            with pytest.raises(StateMismatchError):
                it.set_state(state)
