from __future__ import annotations

import collections
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.errors import InvalidArgumentError, StateMismatchError
from pipestate.testing import assert_conformant

from .._strategies import total
from ._streaming import filtered

D = ps.Dataset


def mod2(x: Any) -> Any:
    return x % 2


def mod3(x: Any) -> Any:
    return x % 3


def pairs(ds: ps.Dataset) -> list[tuple[int, int]]:
    return [(int(c), int(x)) for c, x in ds]


def test_target_equal_to_initial_passes_everything_through() -> None:
    ds = D.range(6).rejection_resample(mod2, [0.5, 0.5], [0.5, 0.5], seed=1)
    assert pairs(ds) == [(0, 0), (1, 1), (0, 2), (1, 3), (0, 4), (1, 5)]
    assert ds.cardinality() == 6
    assert D.range(6).rejection_resample(mod2, [0.4, 0.6], seed=1).cardinality() == (
        ps.data.UNKNOWN_CARDINALITY
    )


def test_a_class_never_wanted_is_filtered_out() -> None:
    for initial in ([0.5, 0.5], None):
        ds = D.range(8).rejection_resample(mod2, [0.0, 1.0], initial, seed=1)
        assert pairs(ds) == [(1, 1), (1, 3), (1, 5), (1, 7)]


@pytest.mark.parametrize("initial", [[0.75, 0.25], None], ids=["known", "estimated"])
def test_resampled_classes_follow_the_target(initial: Any) -> None:
    source = D.range(20_000).map(lambda x: x % 4 // 3)  # classes 0, 0, 0, 1
    ds = source.rejection_resample(lambda c: c, [0.5, 0.5], initial, seed=3)
    counts = collections.Counter(int(c) for c, _ in ds.take(4000))
    assert abs(counts[1] / 4000 - 0.5) < 0.04


def test_a_seed_fixes_the_order_and_seed_none_saves_the_drawn_seed() -> None:
    ds = D.range(40).rejection_resample(mod3, [0.2, 0.3, 0.5], [1 / 3, 1 / 3, 1 / 3], seed=5)
    assert pairs(ds) == pairs(ds)
    seedless = D.range(40).rejection_resample(mod3, [0.2, 0.3, 0.5], [1 / 3, 1 / 3, 1 / 3])
    it = iter(seedless)
    state = it.get_state()
    assert isinstance(state["iterator"]["seed"], int)
    again = iter(seedless)
    again.set_state(state)
    assert pairs(again) == pairs(it)


@pytest.mark.parametrize(
    ("ds", "limit"),
    [
        pytest.param(
            D.range(30).rejection_resample(mod3, [0.2, 0.3, 0.5], [1 / 3, 1 / 3, 1 / 3], seed=2),
            30,
            id="known",
        ),
        pytest.param(
            D.range(30).rejection_resample(mod3, [0.1, 0.1, 0.8], seed=4), 30, id="estimated"
        ),
        pytest.param(
            filtered(30).rejection_resample(mod3, [0.5, 0.25, 0.25], seed=6), 30, id="streaming"
        ),
        pytest.param(D.range(30).rejection_resample(mod3, [0.2, 0.3, 0.5]), 90, id="seedless"),
        pytest.param(D.range(0).rejection_resample(mod2, [0.5, 0.5], seed=1), 30, id="empty"),
        pytest.param(
            D.range(9).repeat().rejection_resample(mod3, [0.6, 0.2, 0.2], seed=1).take(20),
            30,
            id="infinite",
        ),
    ],
)
def test_conformance(ds: ps.Dataset, limit: int) -> None:
    assert_conformant(ds, max_elements=limit)


def test_state_holds_positions_draw_counts_and_class_counts() -> None:
    it = iter(D.range(100).rejection_resample(mod2, [0.3, 0.7], seed=1))
    for _ in range(5):
        next(it)
    state = it.get_state()["iterator"]
    assert set(state) == {"parents", "ended", "choices", "tests", "counts", "seed"}
    assert sum(state["counts"]) == state["parents"][1]["index"] == state["tests"]


def test_invalid_arguments() -> None:
    make = D.range(4).rejection_resample
    with pytest.raises(ValueError, match=r"target_dist must hold non-negative probabilities sum"):
        make(mod2, [0.5, 0.6])
    with pytest.raises(ValueError, match=r"initial_dist must be a vector of 2 probabilities"):
        make(mod2, [0.5, 0.5], [1.0])
    with pytest.raises(ValueError, match=r"target_dist must be a non-empty vector"):
        make(mod2, [])
    with pytest.raises(TypeError, match=r"target_dist must be a vector of class probabilities"):
        make(mod2, ["a", "b"])
    with pytest.raises(TypeError, match=r"class_func must be callable"):
        make(None, [1.0])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"seed must be an integer"):
        make(mod2, [0.5, 0.5], seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(
        InvalidArgumentError, match=r"must return an integer class in \[0, 2\), got 2"
    ):
        next(iter(make(lambda x: 2, [0.5, 0.5], seed=1)))
    assert "name='r'" in repr(make(mod2, [0.5, 0.5], name="r"))


def test_malformed_state_names_the_op() -> None:
    it = iter(D.range(20).rejection_resample(mod2, [0.3, 0.7], seed=1))
    next(it)
    good = it.get_state()
    with pytest.raises(StateMismatchError, match=r"state\['counts'\] must be a list of 2 class"):
        it.set_state({**good, "iterator": {**good["iterator"], "counts": [1, -1]}})
    with pytest.raises(StateMismatchError, match=r"rejection_resample: state\['tests'\]"):
        it.set_state({**good, "iterator": {**good["iterator"], "tests": None}})
    assert len(pairs(it)) > 0


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.


def _resampled(target: float, seed: int | None) -> Any:
    def class_of(*args: object) -> np.int64:
        return np.int64(total(args) % 2)

    return lambda ds: ds.rejection_resample(class_of, [target, 1 - target], seed=seed)


PROPERTY_OP = st.builds(
    _resampled, st.sampled_from([0.0, 0.25, 0.5, 1.0]), st.one_of(st.none(), st.integers(0, 9))
)
