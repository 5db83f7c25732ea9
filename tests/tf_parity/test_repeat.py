"""tf.data's ``repeat_test.py`` (RepeatTest, RepeatDatasetCheckpointTest, RepeatRandomAccessTest).

Left out:
- testName: the ``name=`` argument is tf.data's graph-naming machinery.
- RepeatGlobalShuffleTest, RepeatGlobalShuffleCheckpointTest: global shuffling
  is covered with the shuffle ops' tests.
- the ``symbolic_checkpoint`` option of the checkpoint tests: a TensorFlow-only option.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ._base import NEGATIVE_INDEX, Backend, pipestate_differs, verify_fns

COMPONENTS = (np.array(1), np.array([1, 2, 3]), np.array(37.0))
SHAPES = ((), (3,), ())


@pytest.mark.parametrize("count", [0, 3, 7])
def test_finite_repeat(backend: Backend, count: int) -> None:
    dataset = backend.Dataset.from_tensors(COMPONENTS).repeat(count)
    backend.assert_produces(dataset, [COMPONENTS] * count, expected_shapes=SHAPES)
    assert backend.cardinality(dataset) == count


@pytest.mark.parametrize("count", [-1, None, -2])
def test_infinite_repeat(backend: Backend, count: int | None) -> None:
    dataset = backend.Dataset.from_tensors(COMPONENTS).repeat(count)
    assert backend.cardinality(dataset) == backend.INFINITE
    iterator = backend.iterate(dataset)
    for _ in range(17):
        element = next(iterator)
        for want, got in zip(COMPONENTS, element, strict=True):
            np.testing.assert_array_equal(got, want)


def test_repeat_repeat(backend: Backend) -> None:
    inner_count, outer_count = 7, 14
    dataset = backend.Dataset.from_tensors(COMPONENTS).repeat(inner_count).repeat(outer_count)
    backend.assert_produces(
        dataset, [COMPONENTS] * (inner_count * outer_count), expected_shapes=SHAPES
    )


def _build_repeat_dataset(
    backend: Backend, num_elements: int, num_epochs: int, num_outputs: int | None = None
) -> Any:
    dataset = backend.Dataset.range(num_elements).repeat(num_epochs)
    if num_outputs:
        dataset = backend.Dataset.zip((dataset, backend.Dataset.range(num_outputs)))
    return dataset


@verify_fns
@pytest.mark.parametrize(
    ("num_elements", "num_epochs", "zip_outputs", "num_outputs"),
    [(10, 10, None, 100), (10, 0, None, 0), (10, -1, 100, 100), (0, -1, None, 0)],
    ids=["finite", "empty", "infinite", "infinite-empty"],
)
def test_repeat_checkpoint(
    backend: Backend,
    verify_fn: str,
    num_elements: int,
    num_epochs: int,
    zip_outputs: int | None,
    num_outputs: int,
) -> None:
    getattr(backend, verify_fn)(
        lambda: _build_repeat_dataset(backend, num_elements, num_epochs, zip_outputs),
        num_outputs,
    )


@pytest.mark.parametrize(
    "index",
    [
        NEGATIVE_INDEX,
        6,
        7,
    ],
)
def test_random_access_invalid_index(backend: Backend, index: int) -> None:
    dataset = backend.Dataset.from_tensor_slices([1, 2, 3]).repeat(2)
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(dataset, index)


@pytest.mark.parametrize("index", [-1, 0])
def test_random_access_empty_dataset(backend: Backend, index: int) -> None:
    dataset = backend.Dataset.from_tensor_slices(np.array([], np.float32)).repeat(2)
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(dataset, index)


@pytest.mark.parametrize("elements", [0, 5, 10])
@pytest.mark.parametrize("count", [0, 3, 8])
def test_random_access_finite_repeat(backend: Backend, elements: int, count: int) -> None:
    dataset = backend.Dataset.range(elements).repeat(count)
    expected = np.tile(np.arange(elements, dtype=np.int64), count)
    for i in range(elements * count):
        assert backend.at(dataset, i) == expected[i]


@pytest.mark.parametrize("elements", [0, 3, 5])
@pytest.mark.parametrize("count_1", [0, 1, 2])
@pytest.mark.parametrize("count_2", [3, 4, 5])
def test_random_access_repeat_repeat(
    backend: Backend, elements: int, count_1: int, count_2: int
) -> None:
    dataset = backend.Dataset.range(elements).repeat(count_1).repeat(count_2)
    expected = np.tile(np.arange(elements, dtype=np.int64), count_1 * count_2)
    for i in range(elements * count_1 * count_2):
        assert backend.at(dataset, i) == expected[i]


@pipestate_differs("docs/ops.md#random-access: an infinite repeat is indexable")
@pytest.mark.parametrize("elements", [3, 5])
@pytest.mark.parametrize("count", [None, -1, -2])
def test_random_access_infinite_repeat(backend: Backend, elements: int, count: int | None) -> None:
    dataset = backend.Dataset.range(elements).repeat(count)
    error = backend.module.errors.FailedPreconditionError if backend.is_tf else Exception
    with pytest.raises(error):
        backend.at(dataset, 0)
