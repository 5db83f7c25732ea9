from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.testing import assert_conformant, assert_elements_equal


def test_one_element() -> None:
    data = {"x": np.arange(3), "y": 2.5}
    ds = ps.Dataset.from_tensors(data)
    assert len(ds) == 1
    (element,) = list(ds)
    assert_elements_equal(element, {"x": np.arange(3), "y": np.float64(2.5)})


def test_batch_of_repeats() -> None:
    batch = next(iter(ps.Dataset.from_tensors(np.arange(2)).repeat(3).batch(3)))
    assert_elements_equal(batch, np.array([[0, 1], [0, 1], [0, 1]]))


@pytest.mark.parametrize(
    "data",
    [pytest.param(np.ones((2, 2)), id="array"), pytest.param((1, {"a": 2.0}), id="nested")],
)
def test_conformance(data: object) -> None:
    assert_conformant(ps.Dataset.from_tensors(data))
    assert_conformant(ps.Dataset.from_tensors(data).repeat(5).batch(2))


def test_object_values_are_rejected() -> None:
    with pytest.raises(TypeError, match=r"can't represent object .* as an element"):
        ps.Dataset.from_tensors(object())


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.

# New with the registry: one element, a vector of 0 to 3 values (unbatch splits it).
PROPERTY_SOURCE = st.integers(0, 3).map(
    lambda n: ps.Dataset.from_tensors(np.arange(n, dtype=np.int64))
)
