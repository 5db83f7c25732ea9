from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.errors import InvalidArgumentError
from pipestate.testing import assert_conformant, assert_elements_equal, roundtrip_state

from ._streaming import assert_paths_agree, filtered

D = ps.Dataset
RaggedBatch = ps.data.RaggedBatch


def arange(n: Any) -> np.ndarray:
    return np.arange(int(n))


def test_rows_of_varying_length() -> None:
    batches = assert_paths_agree(lambda ds: ds.map(arange).ragged_batch(2), 5)
    assert_elements_equal(batches[1], RaggedBatch(np.array([0, 1, 0, 1, 2]), np.array([0, 2, 5])))
    assert [r.tolist() for r in batches[1].to_list()] == [[0, 1], [0, 1, 2]]
    assert len(batches) == 3
    assert D.range(5).ragged_batch(2).cardinality() == 3
    assert D.range(5).ragged_batch(2, drop_remainder=True).cardinality() == 2
    assert D.range(5).ragged_batch(2)._random_access


def test_scalars_and_known_shapes_are_stacked() -> None:
    assert_elements_equal(next(iter(D.range(5).ragged_batch(2))), np.array([0, 1]))
    fixed = next(iter(D.from_tensor_slices(np.zeros((4, 3))).ragged_batch(3)))
    assert_elements_equal(fixed, np.zeros((3, 3)))
    # Shapes a map makes are unknown: the component is ragged, even if equal.
    unknown = next(iter(D.range(4).map(lambda x: np.zeros(3)).ragged_batch(2)))
    assert isinstance(unknown, RaggedBatch)


def test_structures_and_trailing_dimensions() -> None:
    ds = (
        D.range(4)
        .map(lambda x: {"seq": np.full((int(x), 2), x), "label": x})
        .ragged_batch(3, row_splits_dtype=np.int32)
    )
    first = next(iter(ds))
    assert_elements_equal(first["label"], np.array([0, 1, 2]))
    assert_elements_equal(
        first["seq"],
        RaggedBatch(np.array([[1, 1], [2, 2], [2, 2]]), np.array([0, 0, 1, 3], np.int32)),
    )


def test_ragged_batch_helpers() -> None:
    batch = RaggedBatch.from_rows([np.array([1, 2]), np.array([], np.int64), np.array([3])])
    assert batch.row_lengths().tolist() == [2, 0, 1]
    assert batch.to_padded(-1).tolist() == [[1, 2], [-1, -1], [3, -1]]
    assert RaggedBatch.from_rows([np.zeros((0, 2))]).to_padded().shape == (1, 0, 2)
    with pytest.raises(ValueError, match=r"needs at least one row, each of rank >= 1"):
        RaggedBatch.from_rows([])
    with pytest.raises(InvalidArgumentError, match=r"only; component rows has shape"):
        RaggedBatch.from_rows([np.zeros((1, 2)), np.zeros((1, 3))])


def test_rows_that_differ_beyond_the_first_axis_or_in_dtype() -> None:
    inner = D.range(1, 3).map(lambda x: np.zeros((2, int(x)))).ragged_batch(2)
    with pytest.raises(InvalidArgumentError, match=r"makes the first axis ragged only"):
        next(iter(inner))
    dtypes = D.range(2).map(lambda x: np.zeros(1, np.float32 if x else np.float64)).ragged_batch(2)
    with pytest.raises(InvalidArgumentError, match=r"cannot batch tensors of different dtypes"):
        next(iter(dtypes))


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(D.range(11).map(arange).ragged_batch(3), id="ra"),
        pytest.param(filtered(11).map(arange).ragged_batch(3, drop_remainder=True), id="streaming"),
        pytest.param(D.range(9).map(lambda x: (arange(x), x)).ragged_batch(2), id="tuple"),
        pytest.param(D.range(0).map(arange).ragged_batch(3), id="empty"),
        pytest.param(
            filtered(9).map(arange).ragged_batch(2).shuffle(3, seed=4), id="saved-in-a-buffer"
        ),
        pytest.param(D.range(4).repeat().map(arange).ragged_batch(3).take(6), id="infinite"),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds, max_elements=30)


def test_state_over_a_random_access_input_is_one_index() -> None:
    it = iter(D.range(10**6).map(arange).ragged_batch(4))
    next(it)
    assert it.get_state()["iterator"] == {"index": 1, "seed": None}
    assert json.loads(json.dumps(roundtrip_state(it.get_state())))["iterator"]["index"] == 1


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match=r"ragged_batch: batch_size must be >= 1"):
        D.range(3).ragged_batch(0)
    with pytest.raises(TypeError, match=r"row_splits_dtype must be np.int64 or np.int32, got"):
        D.range(3).ragged_batch(2, row_splits_dtype=np.float32)
    with pytest.raises(TypeError, match=r"row_splits_dtype must be np.int64 or np.int32"):
        D.range(3).ragged_batch(2, row_splits_dtype="not a dtype")
    with pytest.raises(TypeError, match=r"drop_remainder must be a bool"):
        D.range(3).ragged_batch(2, drop_remainder=None)  # type: ignore[arg-type]
    assert "name='rb'" in repr(D.range(3).ragged_batch(2, name="rb"))


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.

PROPERTY_OP = st.builds(
    lambda size, drop: lambda ds: ds.ragged_batch(size, drop_remainder=drop),
    st.integers(1, 4),
    st.booleans(),
)
