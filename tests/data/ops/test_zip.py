from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.testing import (
    assert_conformant,
    assert_elements_equal,
    assert_exhausted_restores_exhausted,
)

from ._streaming import (
    STREAMING_INPUTS,
    assert_agree,
    filtered,
    filtered_state,
    generated,
    state_after,
)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda a, b: ps.Dataset.zip(a, b), id="args"),
        pytest.param(lambda a, b: ps.Dataset.zip((a, b)), id="tuple"),
    ],
)
def test_tuples_stop_at_shortest(make) -> None:  # type: ignore[no-untyped-def]
    ds = make(ps.Dataset.range(3), ps.Dataset.range(10, 20))
    assert len(ds) == 3
    assert [(int(a), int(b)) for a, b in ds] == [(0, 10), (1, 11), (2, 12)]


def test_dict_and_nested() -> None:
    ds = ps.Dataset.zip(
        {"x": ps.Dataset.range(2), "y": (ps.Dataset.range(5), ps.Dataset.range(7, 9))}
    )
    assert_elements_equal(ds[1], {"x": np.int64(1), "y": (np.int64(1), np.int64(8))})
    batch = next(iter(ds.batch(2)))
    assert_elements_equal(batch, {"x": np.array([0, 1]), "y": (np.array([0, 1]), np.array([7, 8]))})


def test_with_infinite_input() -> None:
    ds = ps.Dataset.zip(ps.Dataset.range(2).repeat(), ps.Dataset.range(3))
    assert len(ds) == 3
    assert (
        ps.Dataset.zip(ps.Dataset.range(2).repeat(), ps.Dataset.range(3).repeat()).cardinality()
        == -1
    )


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(
            ps.Dataset.zip(ps.Dataset.range(6), ps.Dataset.range(6).global_shuffle(seed=1)),
            id="tuple",
        ),
        pytest.param(
            ps.Dataset.zip(
                {"a": ps.Dataset.range(5), "b": ps.Dataset.range(9).map(lambda x: -x)}
            ).batch(2),
            id="dict-batched",
        ),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds)


@pytest.mark.parametrize(
    "bad",
    [pytest.param((), id="empty"), pytest.param((ps.Dataset.range(2), [1, 2]), id="non-dataset")],
)
def test_bad_arguments(bad: tuple[object, ...]) -> None:
    with pytest.raises(TypeError, match="zip expects datasets"):
        ps.Dataset.zip(bad)


# -------------------------------------------------------------- the streaming path
# When any input streams, zip reads one element of each input per next(); its
# state is the inputs' states under "parents" and whether an input has ended
# (docs/ops.md).


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param(5, 3, id="first-longer"),
        pytest.param(3, 5, id="second-longer"),
        pytest.param(4, 4, id="equal"),
        pytest.param(0, 3, id="first-empty"),
        pytest.param(3, 0, id="second-empty"),
    ],
)
def test_streaming_path_stops_at_the_shortest(a: int, b: int) -> None:
    expected = ps.Dataset.zip(ps.Dataset.range(a), ps.Dataset.range(b))
    for make in STREAMING_INPUTS.values():
        for ds in (
            ps.Dataset.zip(make(a), ps.Dataset.range(b)),
            ps.Dataset.zip(ps.Dataset.range(a), make(b)),
            ps.Dataset.zip(make(a), filtered(b)),
        ):
            assert len(assert_agree(ds, expected)) == min(a, b)


def test_streaming_path_dict_and_nested() -> None:
    ds = ps.Dataset.zip({"x": filtered(2), "y": (ps.Dataset.range(5), generated(7))})
    assert_agree(
        ds,
        ps.Dataset.zip({"x": ps.Dataset.range(2), "y": (ps.Dataset.range(5), ps.Dataset.range(7))}),
    )


def test_streaming_state_holds_every_input_s_state() -> None:
    ds = ps.Dataset.zip(filtered(5), ps.Dataset.range(3))
    assert state_after(ds, 2) == {
        "parents": [filtered_state(2), {"index": 2, "seed": None}],
        "ended": False,
        "seed": None,
    }


@pytest.mark.parametrize("make", STREAMING_INPUTS.values(), ids=STREAMING_INPUTS.keys())
def test_streaming_conformance(make: Callable[[int], ps.Dataset]) -> None:
    assert_conformant(ps.Dataset.zip(make(5), ps.Dataset.range(3)))
    assert_conformant(ps.Dataset.zip(ps.Dataset.range(6), make(4)).batch(3))
    assert_conformant(ps.Dataset.zip({"a": make(4), "b": filtered(6)}))


def test_streaming_zip_reads_no_input_once_ended() -> None:
    ds = ps.Dataset.zip(filtered(10), ps.Dataset.range(2))
    with iter(ds) as iterator:
        assert len(list(iterator)) == 2
        ended = iterator.get_state()
        for _ in range(3):
            with pytest.raises(StopIteration):
                next(iterator)
        assert iterator.get_state() == ended
    assert_exhausted_restores_exhausted(ds, variants=())


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.


def _sum_pair(a: object, b: object) -> object:
    return a + b  # type: ignore[operator]


PROPERTY_OP = st.integers(0, 9).map(
    lambda n: lambda ds: ps.Dataset.zip(ds, ps.Dataset.range(100, 100 + n))
)
PROPERTY_SOURCE = st.integers(0, 25).map(
    lambda n: ps.Dataset.zip(ps.Dataset.range(n), ps.Dataset.range(n)).map(_sum_pair)
)
