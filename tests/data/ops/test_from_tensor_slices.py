from __future__ import annotations

import collections

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.testing import assert_conformant, assert_elements_equal

Point = collections.namedtuple("Point", ["x", "y"])


def test_array_rows() -> None:
    data = np.arange(12, dtype=np.float32).reshape(4, 3)
    values = list(ps.Dataset.from_tensor_slices(data))
    assert len(values) == 4
    for row, value in zip(data, values):
        assert_elements_equal(value, row)


def test_list_becomes_an_array() -> None:
    values = list(ps.Dataset.from_tensor_slices([1, 2, 3]))
    assert values == [1, 2, 3]
    assert all(type(v) is np.int64 for v in values)


def test_strings() -> None:
    # As tf.data: text is UTF-8 bytes.
    values = list(ps.Dataset.from_tensor_slices(["a", "bc", "é"]))
    assert values == [b"a", b"bc", "é".encode()]
    assert all(type(v) is np.bytes_ for v in values)


def test_nested_structures() -> None:
    ds = ps.Dataset.from_tensor_slices(
        {
            "image": np.zeros((3, 2, 2), np.uint8),
            "label": np.array([7, 8, 9]),
            "pair": ([1, 2, 3], [4.0, 5.0, 6.0]),
        }
    )
    first = ds[0]
    assert set(first) == {"image", "label", "pair"}
    assert first["image"].shape == (2, 2)
    assert first["label"] == 7
    assert first["pair"] == (1, 4.0)
    point = ps.Dataset.from_tensor_slices(Point(np.arange(2), np.arange(2) * 10))[1]
    assert isinstance(point, Point)
    assert point == Point(1, 10)


def test_elements_are_read_only_views() -> None:
    data = np.arange(6).reshape(3, 2)
    row = ps.Dataset.from_tensor_slices(data)[1]
    with pytest.raises(ValueError, match="read-only"):
        row[0] = 99
    assert data.flags.writeable  # the caller's array is untouched


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(np.arange(15).reshape(5, 3), id="array"),
        pytest.param({"a": np.arange(7), "b": (np.arange(7.0), np.ones((7, 2)))}, id="nested"),
    ],
)
def test_conformance(data: object) -> None:
    assert_conformant(ps.Dataset.from_tensor_slices(data))
    assert_conformant(ps.Dataset.from_tensor_slices(data).batch(2))


def test_scalar_component_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"x is a scalar in int64\[\]. Use from_tensors"):
        ps.Dataset.from_tensor_slices(3)


def test_different_lengths_are_rejected() -> None:
    with pytest.raises(
        ValueError, match=r"same size in their first dimension, got \(int64\[3\], int64\[4\]\)"
    ):
        ps.Dataset.from_tensor_slices((np.arange(3), np.arange(4)))


def test_ragged_list_is_rejected() -> None:
    with pytest.raises(
        TypeError, match=r"can't represent list \[\[1\], \[2, 3\]\] as an element.*rectangular"
    ):
        ps.Dataset.from_tensor_slices([[1], [2, 3]])


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.

PROPERTY_SOURCE = (
    st.integers(0, 25).map(
        lambda n: ps.Dataset.from_tensor_slices(
            {"x": np.arange(n * 2.0).reshape(n, 2), "y": np.arange(n)}
        )
    ),
    st.integers(0, 25).map(
        lambda n: (
            ps.Dataset.from_tensor_slices(np.array([f"s{i % 7}é" for i in range(n)]))
            if n
            else ps.Dataset.range(0).map(lambda x: b"")
        )
    ),
)
