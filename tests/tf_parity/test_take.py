"""tf.data's ``take_test.py`` (TakeTest, TakeDatasetCheckpointTest, TakeRandomAccessTest).

Left out:
- testName: the ``name=`` argument is tf.data's graph-naming machinery.
- the ``symbolic_checkpoint`` option of the checkpoint test: a TensorFlow-only option.
"""

from __future__ import annotations

import numpy as np
import pytest

from ._base import NEGATIVE_INDEX, Backend, verify_fns


@pytest.mark.parametrize("count", [-1, 0, 4, 10, 25, -2])
def test_take(backend: Backend, count: int) -> None:
    components = (np.arange(10),)
    dataset = backend.Dataset.from_tensor_slices(components).take(count)
    num_output = min(count, 10) if count >= 0 else 10
    backend.assert_produces(
        dataset,
        [tuple(components[0][i : i + 1]) for i in range(num_output)],
        expected_shapes=((),),
    )
    if count >= -1:  # tf.data reports other negative counts as of unknown cardinality
        assert backend.cardinality(dataset) == num_output


@verify_fns
@pytest.mark.parametrize(
    ("count", "num_outputs"), [(50, 50), (200, 100), (100, 100), (-1, 100), (0, 0)]
)
def test_take_checkpoint(backend: Backend, verify_fn: str, count: int, num_outputs: int) -> None:
    getattr(backend, verify_fn)(lambda: backend.Dataset.range(100).take(count), num_outputs)


@pytest.mark.parametrize(
    "index",
    [
        NEGATIVE_INDEX,
        3,
        4,
    ],
)
def test_random_access_invalid_index(backend: Backend, index: int) -> None:
    dataset = backend.Dataset.range(10).take(3)
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(dataset, index)


@pytest.mark.parametrize("index", [-2, 0, 1])
def test_random_access_empty_dataset(backend: Backend, index: int) -> None:
    dataset = backend.Dataset.from_tensor_slices(np.array([], np.float32)).take(5)
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(dataset, index)


@pytest.mark.parametrize("count", [-1, 0, 4, 10, 25])
def test_random_access(backend: Backend, count: int) -> None:
    dataset = backend.Dataset.range(10).take(count)
    num_output = min(count, 10) if count != -1 else 10
    for i in range(num_output):
        assert backend.at(dataset, i) == i
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(dataset, num_output)
