"""tf.data's ``skip_test.py`` (SkipTest, SkipDatasetCheckpointTest, SkipRandomAccessTest).

Left out:
- testName: the ``name=`` argument is tf.data's graph-naming machinery.
- the ``symbolic_checkpoint`` option of the checkpoint test: a TensorFlow-only option.
"""

from __future__ import annotations

import numpy as np
import pytest

from ._base import NEGATIVE_INDEX, Backend, verify_fns


@pytest.mark.parametrize("count", [4, 25, 10, -1, 0, -2])
def test_skip(backend: Backend, count: int) -> None:
    components = (np.arange(10),)
    dataset = backend.Dataset.from_tensor_slices(components).skip(count)
    start = min(count, 10) if count >= 0 else 10
    backend.assert_produces(
        dataset,
        [tuple(components[0][i : i + 1]) for i in range(start, 10)],
        expected_shapes=((),),
    )
    if count >= -1:  # tf.data reports other negative counts as of unknown cardinality
        assert backend.cardinality(dataset) == 10 - start


@verify_fns
@pytest.mark.parametrize(
    ("count", "num_outputs"), [(50, 50), (200, 0), (100, 0), (-1, 0), (0, 100)]
)
def test_skip_checkpoint(backend: Backend, verify_fn: str, count: int, num_outputs: int) -> None:
    getattr(backend, verify_fn)(lambda: backend.Dataset.range(100).skip(count), num_outputs)


@pytest.mark.parametrize(
    "index",
    [
        NEGATIVE_INDEX,
        2,
        3,
    ],
)
def test_random_access_invalid_index(backend: Backend, index: int) -> None:
    dataset = backend.Dataset.range(10).skip(8)
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(dataset, index)


@pytest.mark.parametrize("index", [-1, 0, 1])
def test_random_access_empty_dataset(backend: Backend, index: int) -> None:
    dataset = backend.Dataset.from_tensor_slices(np.array([], np.float32)).skip(5)
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(dataset, index)


@pytest.mark.parametrize("count", [-1, 0, 4, 10, 25])
def test_random_access(backend: Backend, count: int) -> None:
    dataset = backend.Dataset.range(10).skip(count)
    start = min(count, 10) if count != -1 else 10
    for i in range(10 - start):
        assert backend.at(dataset, i) == start + i
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(dataset, 10 - start)
