from __future__ import annotations

import collections
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.data._structure import map_structure
from pipestate.testing import assert_conformant, assert_elements_equal

from .._strategies import ragged
from ._streaming import (
    STREAMING_INPUTS,
    assert_agree,
    assert_paths_agree,
    filtered,
    filtered_state,
    state_after,
)

Pair = collections.namedtuple("Pair", ["a", "b"])


def double(x: np.int64) -> np.int64:
    return x * 2


def test_values_and_dtype() -> None:
    values = list(ps.Dataset.range(4).map(double))
    assert values == [0, 2, 4, 6]
    assert all(type(v) is np.int64 for v in values)


def test_tuple_is_unpacked_into_arguments() -> None:
    ds = ps.Dataset.zip(ps.Dataset.range(3), ps.Dataset.range(10, 13)).map(lambda a, b: a + b)
    assert list(ds) == [10, 12, 14]


def test_dict_and_namedtuple_are_one_argument() -> None:
    ds = ps.Dataset.from_tensor_slices({"a": np.arange(2)}).map(lambda d: d["a"] + 1)
    assert list(ds) == [1, 2]
    nt = ps.Dataset.from_tensor_slices(Pair(np.arange(2), np.arange(2))).map(lambda p: p.a + p.b)
    assert list(nt) == [0, 2]


def test_list_result_becomes_tuple_and_python_values_become_numpy() -> None:
    element = ps.Dataset.range(1).map(lambda x: [x, 1.5, "s"])[0]
    assert_elements_equal(element, (np.int64(0), np.float64(1.5), np.bytes_(b"s")))


def test_batched_map_matches_per_element() -> None:
    ds = ps.Dataset.from_tensor_slices(np.arange(20.0)).map(lambda x: {"y": x * x, "z": (x, -x)})
    batched = list(ds.batch(6))
    assert_elements_equal(
        batched[0], {"y": np.arange(6.0) ** 2, "z": (np.arange(6.0), -np.arange(6.0))}
    )
    assert_elements_equal(batched[-1]["y"], np.arange(18.0, 20.0) ** 2)


def test_map_of_map_batched() -> None:
    ds = ps.Dataset.range(10).map(double).map(lambda x: x + 1).batch(4)
    assert_elements_equal(list(ds)[1], np.array([9, 11, 13, 15]))


def test_function_errors_propagate() -> None:
    def broken(x: np.int64) -> np.int64:
        raise ZeroDivisionError("boom")

    with pytest.raises(ZeroDivisionError, match="boom"):
        next(iter(ps.Dataset.range(3).map(broken)))


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(ps.Dataset.range(9).map(double), id="scalar"),
        pytest.param(
            ps.Dataset.range(9).map(lambda x: (x, {"sq": x * x})).batch(4), id="nested-batched"
        ),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds)


def test_not_callable() -> None:
    with pytest.raises(TypeError, match="map_func must be callable, got int 3"):
        ps.Dataset.range(3).map(3)  # type: ignore[arg-type]


# -------------------------------------------------------------- the streaming path
# Over a streaming input map runs its streaming iterator (docs/ops.md: the
# input's state, nothing of its own).


def _fails_on_two(x: np.int64) -> np.int64:
    if x == 2:
        raise ZeroDivisionError("two")
    return x


@pytest.mark.parametrize("n", [0, 1, 7])
def test_streaming_path_yields_the_random_access_elements(n: int) -> None:
    assert_paths_agree(lambda ds: ds.map(double), n)
    assert_paths_agree(lambda ds: ds.map(lambda x: (x, {"sq": x * x})).batch(3), n)


def test_streaming_path_unpacks_tuples_and_converts_results() -> None:
    ds = ps.Dataset.zip(filtered(3), ps.Dataset.range(10, 13)).map(lambda a, b: [a + b, "s"])
    assert_agree(
        ds,
        ps.Dataset.zip(ps.Dataset.range(3), ps.Dataset.range(10, 13)).map(
            lambda a, b: [a + b, "s"]
        ),
    )
    assert_elements_equal(next(iter(ds)), (np.int64(10), np.bytes_(b"s")))


def test_streaming_state_is_the_input_s() -> None:
    assert state_after(filtered(5).map(double), 0) == {"parent": filtered_state(0), "seed": None}
    assert state_after(filtered(5).map(double), 2) == {"parent": filtered_state(2), "seed": None}


def test_streaming_path_error_consumes_the_element_as_the_random_access_path() -> None:
    for ds in (ps.Dataset.range(5).map(_fails_on_two), filtered(5).map(_fails_on_two)):
        iterator = iter(ds)
        assert [int(next(iterator)), int(next(iterator))] == [0, 1]
        with pytest.raises(ZeroDivisionError, match="two"):
            next(iterator)
        state = iterator.get_state()
        assert [int(x) for x in iterator] == [3, 4]
        restored = iter(ds)
        restored.set_state(state)
        assert [int(x) for x in restored] == [3, 4]


@pytest.mark.parametrize("make", STREAMING_INPUTS.values(), ids=STREAMING_INPUTS.keys())
def test_streaming_conformance(make: Callable[[int], ps.Dataset]) -> None:
    assert_conformant(make(9).map(double))
    assert_conformant(make(9).map(lambda x: (x, {"sq": x * x})).batch(4))


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.


def _leaf_double(leaf: object) -> object:
    if np.asarray(leaf).dtype.kind == "S":
        return np.char.multiply(np.asarray(leaf), 2)  # text: repeated
    return leaf * 2  # type: ignore[operator]


def _double(*args: object) -> object:
    doubled = map_structure(_leaf_double, args)
    return doubled[0] if len(args) == 1 else doubled


def _record(x: np.int64) -> dict[str, object]:
    """Text of varying length and a ragged vector."""
    return {"text": "w" * (int(x) % 5) + "é", "ids": ragged(x)}


PROPERTY_OP = st.just(lambda ds: ds.map(_double))
PROPERTY_SOURCE = (
    st.integers(0, 25).map(lambda n: ps.Dataset.range(n).map(ragged)),
    st.integers(0, 25).map(lambda n: ps.Dataset.range(n).map(_record)),
)
