"""tf.data's ``from_tensors_test.py`` (FromTensorsTest, the checkpoint and random-access tests).

Left out:
- testFromTensorsDataset, testFromTensorsNestedDataset: datasets of datasets
  are tf.data-only (pipestate raises ``TypeError``, checked below).
- testFromTensorsTensorArray, testFromTensorsSparse, testFromTensorsMixed,
  testFromTensorsRagged, testFromTensorsMixedRagged: TensorArray, sparse and
  ragged tensors are TensorFlow types.
- testFromTensorsAttrs: ``attr.s`` classes as structures are tf.data's nest machinery.
- testSplitPipeline: TF1 sessions and devices.
- testName, testWithOptions (random access): graph naming and optimization options.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np
import pytest

from ._base import NEGATIVE_INDEX, Backend, verify_fns

COMPONENTS = (np.array(1), np.array([1, 2, 3]), np.array(37.0))


def test_from_tensors(backend: Backend) -> None:
    dataset = backend.Dataset.from_tensors(COMPONENTS)
    backend.assert_produces(dataset, [COMPONENTS], expected_shapes=((), (3,), ()))
    assert backend.cardinality(dataset) == 1


def test_from_tensors_named_tuple(backend: Backend) -> None:
    foo = collections.namedtuple("Foo", ["x", "y"])
    element = foo(x=1, y=2)
    backend.assert_produces(backend.Dataset.from_tensors(element), [element])


def test_from_tensors_of_a_dataset_is_an_error(backend: Backend) -> None:
    if backend.is_tf:
        pytest.skip("tf.data makes a dataset of datasets")
    with pytest.raises(TypeError):
        backend.Dataset.from_tensors(backend.Dataset.range(10))


def test_nested_structure(backend: Backend) -> None:
    components = (
        np.array([1, 2, 3], dtype=np.int64),
        (np.array([4.0, 5.0]), np.array([6.0, 7.0])),
        np.array([8, 9, 10], dtype=np.int64),
    )
    dataset = backend.Dataset.from_tensors(components)
    dataset = dataset.map(lambda x, y, z: ((x, z), (y[0], y[1])))
    dataset = dataset.flat_map(
        lambda x, y: backend.Dataset.from_tensors(((x[0], x[1]), (y[0], y[1])))
    ).batch(32)
    expected = (
        (components[0][np.newaxis], components[2][np.newaxis]),
        (components[1][0][np.newaxis], components[1][1][np.newaxis]),
    )
    backend.assert_produces(dataset, [expected], num_test_iterations=2)


def test_nested_dict(backend: Backend) -> None:
    components = {"a": {"aa": 1, "ab": [2.0, 2.0]}, "b": [3, 3, 3]}
    dataset = backend.Dataset.from_tensors(components)
    backend.assert_produces(
        dataset, [components], expected_shapes={"a": {"aa": (), "ab": (2,)}, "b": (3,)}
    )


def _all_equal(backend: Backend, x: Any, y: Any) -> Any:
    if backend.is_tf:
        tf = backend.module
        return tf.reduce_all(tf.equal(x, y))
    return bool(np.all(x == y))


def _stack(backend: Backend, values: list[Any]) -> Any:
    return backend.module.stack(values) if backend.is_tf else np.stack(values)


def test_non_sequence_nested_structure(backend: Backend) -> None:
    components = np.array([1, 2, 3], dtype=np.int64)
    dataset = backend.Dataset.from_tensors(components)
    dataset = dataset.filter(lambda x: _all_equal(backend, x, components))
    dataset = dataset.map(lambda x: _stack(backend, [x, x]))
    dataset = dataset.flat_map(lambda x: backend.Dataset.from_tensor_slices(x))
    backend.assert_produces(dataset, [components, components], expected_shapes=(3,))


@verify_fns
def test_from_tensors_checkpoint(backend: Backend, verify_fn: str) -> None:
    arr = np.array(1)
    getattr(backend, verify_fn)(
        lambda: backend.Dataset.from_tensors((arr, np.array([1, 2, 3]), np.array(37.0))), 1
    )


@pytest.mark.parametrize(
    "index",
    [
        NEGATIVE_INDEX,
        1,
    ],
)
def test_random_access_invalid_index(backend: Backend, index: int) -> None:
    dataset = backend.Dataset.from_tensors([1, 2, 3])
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(dataset, index)


def test_random_access(backend: Backend) -> None:
    dataset = backend.Dataset.from_tensors(list(range(4)))
    np.testing.assert_array_equal(backend.at(dataset, 0), range(4))
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(dataset, 1)


def test_random_access_empty_tensor(backend: Backend) -> None:
    dataset = backend.Dataset.from_tensors(np.array([], np.float32))
    assert backend.at(dataset, 0).shape == (0,)
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(dataset, 1)


def test_random_access_numpy_array(backend: Backend) -> None:
    dataset = backend.Dataset.from_tensors(COMPONENTS)
    result = backend.at(dataset, 0)
    for want, got in zip(COMPONENTS, result, strict=True):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(dataset, 1)
