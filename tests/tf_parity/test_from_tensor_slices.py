"""tf.data's ``from_tensor_slices_test.py`` (FromTensorSlicesTest, checkpoint, random access).

Left out:
- testFromTensorSlicesDataset, testFromTensorSlicesDatasetOfOrderedDict,
  testFromTensorSlicesDatasetInFunction: datasets of datasets are tf.data-only.
- testFromTensorSlicesSparse, testFromTensorSlicesRagged, and the sparse and
  ragged components of testFromTensorSlicesMixed / testFromTensorSlicesMixedRagged:
  sparse and ragged tensors are TensorFlow types (their dense components are tested).
- testName: the ``name=`` argument is tf.data's graph-naming machinery.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest

from ._base import NEGATIVE_INDEX, Backend, verify_fns

COMPONENTS = (
    np.tile(np.array([[1], [2], [3], [4]]), 20),
    np.tile(np.array([[12], [13], [14], [15]]), 22),
    np.array([37.0, 38.0, 39.0, 40.0]),
)


def test_from_tensor_slices(backend: Backend) -> None:
    dataset = backend.Dataset.from_tensor_slices(COMPONENTS)
    backend.assert_produces(
        dataset,
        [tuple(c[i] for c in COMPONENTS) for i in range(4)],
        expected_shapes=((20,), (22,), ()),
    )
    assert backend.cardinality(dataset) == 4


def test_from_tensor_slices_with_dict(backend: Backend) -> None:
    components = {"foo": [1, 2, 3], "bar": [[4.0], [5.0], [6.0]]}
    dataset = backend.Dataset.from_tensor_slices(components)
    backend.assert_produces(
        dataset,
        [{"foo": components["foo"][i], "bar": components["bar"][i]} for i in range(3)],
        expected_shapes={"foo": (), "bar": (1,)},
    )


def test_from_tensor_slices_with_uint_dtypes(backend: Backend) -> None:
    components = (
        np.tile(np.array([[0], [1]], dtype=np.uint8), 2),
        np.tile(np.array([[2], [256]], dtype=np.uint16), 2),
        np.tile(np.array([[4], [65536]], dtype=np.uint32), 2),
        np.tile(np.array([[8], [4294967296]], dtype=np.uint64), 2),
    )
    expected = [tuple(c[i] for c in components) for i in range(2)]
    backend.assert_produces(backend.Dataset.from_tensor_slices(components), expected)


def test_from_tensor_slices_named_tuple(backend: Backend) -> None:
    point = collections.namedtuple("Point", ["x", "y"])
    dataset = backend.Dataset.from_tensor_slices(point([1, 2], [3, 4]))
    backend.assert_produces(dataset, [point(1, 3), point(2, 4)])


def test_from_tensor_slices_of_strings(backend: Backend) -> None:
    dataset = backend.Dataset.from_tensor_slices([b"a", b"bc", b""])
    backend.assert_produces(dataset, [np.bytes_(b"a"), np.bytes_(b"bc"), np.bytes_(b"")])


def test_components_of_different_sizes(backend: Backend) -> None:
    with pytest.raises(
        ValueError, match=backend.tf_message("Dimensions 3 and 4 are not compatible")
    ):
        backend.Dataset.from_tensor_slices((np.arange(3), np.arange(4)))


def test_scalar_component(backend: Backend) -> None:
    with pytest.raises(ValueError, match=backend.tf_message("only supported for rank >= 1")):
        backend.Dataset.from_tensor_slices(np.int64(1))


def _build_tensor_slices_dataset(backend: Backend, components: tuple[np.ndarray, ...]) -> object:
    return backend.Dataset.from_tensor_slices(components)


@verify_fns
def test_from_tensor_slices_checkpoint(backend: Backend, verify_fn: str) -> None:
    getattr(backend, verify_fn)(lambda: _build_tensor_slices_dataset(backend, COMPONENTS), 4)


@verify_fns
def test_from_tensor_slices_dict_checkpoint(backend: Backend, verify_fn: str) -> None:
    components = {"foo": [1, 2, 3], "bar": [[4.0], [5.0], [6.0]]}
    getattr(backend, verify_fn)(lambda: backend.Dataset.from_tensor_slices(components), 3)


@pytest.mark.parametrize(
    "index",
    [
        NEGATIVE_INDEX,
        3,
        4,
    ],
)
def test_random_access_invalid_index(backend: Backend, index: int) -> None:
    dataset = backend.Dataset.from_tensor_slices([1, 2, 3])
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(dataset, index)


@pytest.mark.parametrize("index", [-1, 0])
def test_random_access_empty_dataset(backend: Backend, index: int) -> None:
    dataset = backend.Dataset.from_tensor_slices(np.array([], np.float32))
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(dataset, index)


def test_random_access(backend: Backend) -> None:
    dataset = backend.Dataset.from_tensor_slices(COMPONENTS)
    for i in range(4):
        result = backend.at(dataset, i)
        for component, got in zip(COMPONENTS, result, strict=True):
            np.testing.assert_array_equal(got, component[i])
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(dataset, 4)
