"""``Dataset.choose_from_datasets``: each output from the input the choice dataset names."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.errors import InvalidArgumentError, StateMismatchError
from pipestate.testing import assert_conformant

D = ps.Dataset


def ints(ds: Any) -> list[int]:
    return [int(x) for x in ds]


def choices(*values: int) -> ps.Dataset:
    return D.from_tensor_slices(np.array(values, np.int64))


def is_even(x: np.int64) -> bool:
    return bool(x % 2 == 0)


def test_values() -> None:
    ds = D.choose_from_datasets([D.range(3), D.range(10, 15)], choices(1, 0, 1, 1, 0))
    assert ints(ds) == [10, 0, 11, 12, 1]


@pytest.mark.parametrize(
    ("stop", "expected"), [(True, [0, 1, 2]), (False, [0, 1, 2, 10, 11])], ids=["stop", "skip"]
)
def test_an_exhausted_input_ends_or_is_skipped(stop: bool, expected: list[int]) -> None:
    ds = D.choose_from_datasets(
        [D.range(3), D.range(10, 15)], choices(0, 0, 0, 0, 1, 0, 1), stop_on_empty_dataset=stop
    )
    assert ints(ds) == expected


def test_ends_when_every_input_is_exhausted_even_with_infinite_choices() -> None:
    ds = D.choose_from_datasets(
        [D.range(2), D.range(10, 11)], D.range(2).repeat(), stop_on_empty_dataset=False
    )
    assert ints(ds) == [0, 10, 1]


def test_cardinality_as_tf_data() -> None:
    inputs = [D.range(3), D.range(5)]
    assert D.choose_from_datasets(inputs, choices(0, 1)).cardinality() == -2
    forever = [D.range(3).repeat(), D.range(5).repeat()]
    assert D.choose_from_datasets(forever, D.range(2).repeat()).cardinality() == -1
    assert D.choose_from_datasets(inputs, choices()).cardinality() == 0


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(
            D.choose_from_datasets([D.range(4), D.range(10, 16)], choices(1, 0, 1, 1, 0, 0, 1)),
            id="stop",
        ),
        pytest.param(
            D.choose_from_datasets(
                [D.range(2), D.range(10, 13).filter(is_even)],
                D.range(3).map(lambda x: x % 2).repeat(4),
                stop_on_empty_dataset=False,
            ),
            id="skip-streaming",
        ),
        pytest.param(
            D.choose_from_datasets(
                [D.range(5).global_shuffle(), D.range(10, 20)], D.range(2).repeat()
            ).take(12),
            id="seedless-input",
        ),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds, max_elements=30)


def test_state_is_the_inputs_states() -> None:
    it = iter(D.choose_from_datasets([D.range(3), D.range(10, 15)], choices(1, 0, 1, 1)))
    next(it)
    next(it)
    state = it.get_state()
    assert state["iterator"] == {
        "parents": [
            {"index": 2, "seed": None},
            {"index": 1, "seed": None},
            {"index": 1, "seed": None},
        ],
        "ended": False,
        "seed": None,
    }
    bad = json.loads(json.dumps(state))
    bad["iterator"]["parents"] = bad["iterator"]["parents"][:2]
    with pytest.raises(StateMismatchError, match="parents"):
        it.set_state(bad)
    assert ints(it) == [11, 12]


def test_bad_choices_are_typed_errors() -> None:
    ds = D.choose_from_datasets([D.range(3), D.range(5)], choices(0, 2))
    it = iter(ds)
    assert int(next(it)) == 0
    with pytest.raises(InvalidArgumentError, match=r"Selector index out of range: choice 2"):
        next(it)
    with pytest.raises(TypeError, match="elements of choice_dataset must be int64 scalars"):
        D.choose_from_datasets([D.range(3)], D.from_tensor_slices(np.array([0.0])))
    with pytest.raises(TypeError, match="elements of choice_dataset must be int64 scalars"):
        D.choose_from_datasets([D.range(3)], D.from_tensor_slices(np.array([0], np.int32)))
    unknown = D.choose_from_datasets([D.range(3)], D.range(2).map(lambda x: float(x)))
    with pytest.raises(InvalidArgumentError, match="a choice must be an int64 scalar"):
        list(unknown)


@pytest.mark.parametrize(
    ("datasets", "choice", "kwargs", "error", "match"),
    [
        ([], choices(0), {}, ValueError, "datasets must not be empty"),
        ([D.range(2), 3], choices(0), {}, TypeError, r"datasets\[1\] must be a Dataset"),
        ([D.range(2)], [0, 1], {}, TypeError, "choice_dataset must be a Dataset"),
        ([D.range(2)], choices(0), {"stop_on_empty_dataset": None}, TypeError, "must be a bool"),
        ([D.range(2)], choices(0), {"name": 5}, TypeError, "name must be a non-empty string"),
    ],
)
def test_bad_arguments(
    datasets: Any, choice: Any, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        D.choose_from_datasets(datasets, choice, **kwargs)


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.
PROPERTY_OP = st.tuples(st.lists(st.integers(0, 1), max_size=12), st.booleans()).map(
    lambda a: (
        lambda ds: D.choose_from_datasets(
            [ds, ds.skip(1)], choices(*a[0]), stop_on_empty_dataset=a[1]
        )
    )
)
