from __future__ import annotations

import numpy as np
import pytest

import pipestate as ps
from pipestate.testing import assert_conformant, assert_elements_equal


def test_values() -> None:
    ds = ps.Dataset.range(3).concatenate(ps.Dataset.range(10, 12))
    assert [int(x) for x in ds] == [0, 1, 2, 10, 11]
    assert len(ds) == 5
    assert ds[3] == 10


def test_batch_across_the_join() -> None:
    ds = ps.Dataset.from_tensor_slices({"a": np.arange(3)}).concatenate(
        ps.Dataset.from_tensor_slices({"a": np.arange(100, 103)})
    )
    assert_elements_equal(next(iter(ds.batch(4))), {"a": np.array([0, 1, 2, 100])})


def test_mismatched_elements_in_one_batch() -> None:
    ds = ps.Dataset.range(2).concatenate(ps.Dataset.from_tensor_slices(np.zeros((2, 3)))).batch(4)
    with pytest.raises(TypeError, match=r"elements differ: int64\[\] vs float64\[3\]"):
        next(iter(ds))


def test_infinite_first() -> None:
    assert ps.Dataset.range(2).repeat().concatenate(ps.Dataset.range(3)).cardinality() == -1


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(ps.Dataset.range(4).concatenate(ps.Dataset.range(50, 53)), id="plain"),
        pytest.param(
            ps.Dataset.range(4)
            .concatenate(ps.Dataset.range(50, 57))
            .global_shuffle(seed=4)
            .batch(3),
            id="shuffled-batched",
        ),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds)


def test_not_a_dataset() -> None:
    with pytest.raises(
        TypeError, match="concatenate: dataset must be a pipestate Dataset, got list"
    ):
        ps.Dataset.range(2).concatenate([1, 2])  # type: ignore[arg-type]
