"""``assert_cardinality``: the declared length, checked while iterating."""

from __future__ import annotations

import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.errors import FailedPreconditionError
from pipestate.testing import assert_conformant, assert_restorable_at_every_position

from ._streaming import filtered


def test_reports_the_expected_cardinality() -> None:
    ds = ps.Dataset.range(10).filter(lambda x: x % 2 == 0).assert_cardinality(5)
    assert ds.cardinality() == 5
    assert len(ds) == 5
    assert [int(x) for x in ds] == [0, 2, 4, 6, 8]
    assert ds.batch(2).cardinality() == 3
    forever = ps.Dataset.range(3).repeat().assert_cardinality(ps.data.INFINITE_CARDINALITY)
    assert forever.cardinality() == ps.data.INFINITE_CARDINALITY


def test_matching_random_access_input_stays_random_access() -> None:
    ds = ps.Dataset.range(6).map(lambda x: x * 2).assert_cardinality(6)
    assert int(ds[4]) == 8
    assert iter(ds).get_state()["iterator"] == {"index": 0, "seed": None}


@pytest.mark.parametrize("source", [ps.Dataset.range(5), filtered(5)], ids=["range", "filter"])
def test_input_ends_early(source: ps.Dataset) -> None:
    it = iter(source.assert_cardinality(7))
    assert [int(next(it)) for _ in range(5)] == [0, 1, 2, 3, 4]
    message = (
        r"assert_cardinality\(expected_cardinality=7\): Input dataset was expected to contain 7 "
        r"elements but contained only 5 elements"
    )
    with pytest.raises(FailedPreconditionError, match=message):
        next(it)
    with pytest.raises(FailedPreconditionError, match=message):
        next(it)


@pytest.mark.parametrize("source", [ps.Dataset.range(5), filtered(5)], ids=["range", "filter"])
def test_input_runs_long(source: ps.Dataset) -> None:
    it = iter(source.assert_cardinality(3))
    assert [int(next(it)) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(
        FailedPreconditionError,
        match=r"expected to contain 3 elements but contained at least 4 elements",
    ):
        next(it)


def test_infinite_expected_input_ends() -> None:
    it = iter(ps.Dataset.range(2).assert_cardinality(ps.data.INFINITE_CARDINALITY))
    next(it)
    next(it)
    with pytest.raises(
        FailedPreconditionError,
        match="expected to contain an infinite number of elements but contained only 2 elements",
    ):
        next(it)


def test_the_error_is_a_value_error() -> None:
    assert issubclass(FailedPreconditionError, ValueError)
    assert issubclass(FailedPreconditionError, ps.errors.PipestateError)


def test_restore_keeps_the_count() -> None:
    ds = filtered(6).assert_cardinality(4)
    it = iter(ds)
    for _ in range(4):
        next(it)
    state = it.get_state()
    assert state["iterator"]["count"] == 4
    fresh = iter(ds)
    fresh.set_state(state)
    with pytest.raises(FailedPreconditionError, match="at least 5 elements"):
        next(fresh)


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(ps.Dataset.range(8).assert_cardinality(8), id="random-access"),
        pytest.param(filtered(8).assert_cardinality(8), id="streaming"),
        pytest.param(ps.Dataset.range(4).assert_cardinality(4).repeat(2), id="repeated"),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds)


def test_restorable_up_to_the_error() -> None:
    assert_restorable_at_every_position(ps.Dataset.range(6).assert_cardinality(6).batch(4))


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (1.5, TypeError, "expected_cardinality must be an integer"),
        (-2, ValueError, "got UNKNOWN_CARDINALITY"),
        (-3, ValueError, "expected_cardinality must be >= -2"),
    ],
)
def test_bad_arguments(value: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        ps.Dataset.range(3).assert_cardinality(value)  # type: ignore[arg-type]


def test_name() -> None:
    ds = ps.Dataset.range(3).assert_cardinality(3, name="three")
    assert ds.name == "three"
    assert repr(ds).endswith("assert_cardinality(expected_cardinality=3, name='three')")


def _asserting(ds: ps.Dataset) -> ps.Dataset:
    n = ds.cardinality()
    return ds.assert_cardinality(n) if n >= 0 else ds


PROPERTY_OP = st.just(_asserting)
