"""tf.data's ``concatenate_test.py`` (ConcatenateTest, the checkpoint and random-access tests).

Left out:
- testWindows: ``window()`` is not a pipestate op.
- testName: the ``name=`` argument is tf.data's graph-naming machinery.
- GlobalShuffleTest, ConcatenateGlobalShuffleCheckpointTest: global shuffling
  is covered with the shuffle ops' tests.
- the ``symbolic_checkpoint`` option of the checkpoint test: a TensorFlow-only option.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ._base import NEGATIVE_INDEX, Backend, verify_fns


def _check_concatenated(backend: Backend, dataset: Any, first: Any, second: Any) -> None:
    expected = [tuple(c[i] for c in first) for i in range(len(first[0]))]
    expected += [tuple(c[i] for c in second) for i in range(len(second[0]))]
    backend.assert_produces(dataset, expected)
    assert backend.cardinality(dataset) == len(expected)


def test_basic(backend: Backend) -> None:
    input_components = (
        np.tile(np.array([[1], [2], [3], [4]]), 20),
        np.tile(np.array([[12], [13], [14], [15]]), 15),
        np.array([37.0, 38.0, 39.0, 40.0]),
    )
    to_concatenate_components = (
        np.tile(np.array([[1], [2], [3], [4], [5]]), 20),
        np.tile(np.array([[12], [13], [14], [15], [16]]), 15),
        np.array([37.0, 38.0, 39.0, 40.0, 41.0]),
    )
    concatenated = backend.Dataset.from_tensor_slices(input_components).concatenate(
        backend.Dataset.from_tensor_slices(to_concatenate_components)
    )
    _check_concatenated(backend, concatenated, input_components, to_concatenate_components)


def test_different_shape(backend: Backend) -> None:
    input_components = (
        np.tile(np.array([[1], [2], [3], [4]]), 20),
        np.tile(np.array([[12], [13], [14], [15]]), 4),
    )
    to_concatenate_components = (
        np.tile(np.array([[1], [2], [3], [4], [5]]), 20),
        np.tile(np.array([[12], [13], [14], [15], [16]]), 15),
    )
    concatenated = backend.Dataset.from_tensor_slices(input_components).concatenate(
        backend.Dataset.from_tensor_slices(to_concatenate_components)
    )
    if backend.is_tf:
        assert backend.static_shapes(concatenated) == ((20,), (None,))
    _check_concatenated(backend, concatenated, input_components, to_concatenate_components)


@pytest.mark.parametrize(
    ("input_components", "to_concatenate_components"),
    [
        (
            (
                np.tile(np.array([[1], [2], [3], [4]]), 5),
                np.tile(np.array([[12], [13], [14], [15]]), 4),
            ),
            (
                np.tile(np.array([[1], [2], [3], [4], [5]]), 20),
                np.tile(np.array([[12], [13], [14], [15], [16]]), 15),
                np.array([37.0, 38.0, 39.0, 40.0, 41.0]),
            ),
        ),
        (
            {"foo": np.array([[1], [2], [3], [4]]), "bar": np.array([[12], [13], [14], [15]])},
            {"foo": np.array([[1], [2], [3], [4]]), "baz": np.array([[5], [6], [7], [8]])},
        ),
        (
            (
                np.tile(np.array([[1], [2], [3], [4]]), 5),
                np.tile(np.array([[12], [13], [14], [15]]), 4),
            ),
            (
                np.tile(np.array([[1.0], [2.0], [3.0], [4.0]]), 5),
                np.tile(np.array([[12], [13], [14], [15]]), 15),
            ),
        ),
    ],
    ids=["different-structure", "different-keys", "different-type"],
)
def test_incompatible_inputs(
    backend: Backend, input_components: Any, to_concatenate_components: Any
) -> None:
    input_dataset = backend.Dataset.from_tensor_slices(input_components)
    dataset_to_concatenate = backend.Dataset.from_tensor_slices(to_concatenate_components)
    with pytest.raises(TypeError, match=backend.tf_message("Incompatible dataset elements")):
        input_dataset.concatenate(dataset_to_concatenate)


def _build_concatenate_dataset(backend: Backend, var_array: Any) -> Any:
    input_components = (
        np.tile(np.array([[1], [2], [3], [4]]), 20),
        np.tile(np.array([[12], [13], [14], [15]]), 4),
    )
    to_concatenate_components = (np.tile(np.array([[5], [6], [7], [8], [9]]), 20), var_array)
    return backend.Dataset.from_tensor_slices(input_components).concatenate(
        backend.Dataset.from_tensor_slices(to_concatenate_components)
    )


@verify_fns
def test_concatenate_checkpoint(backend: Backend, verify_fn: str) -> None:
    array = np.tile(np.array([[16], [17], [18], [19], [20]]), 15)
    getattr(backend, verify_fn)(lambda: _build_concatenate_dataset(backend, array), 9)


@pytest.mark.parametrize(
    "index",
    [
        NEGATIVE_INDEX,
        3,
        4,
    ],
)
def test_random_access_invalid_index(backend: Backend, index: int) -> None:
    concatenated = backend.Dataset.from_tensor_slices([-1]).concatenate(
        backend.Dataset.from_tensor_slices([1, 2])
    )
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(concatenated, index)


def _empty(backend: Backend) -> Any:
    return backend.Dataset.from_tensor_slices(np.array([], np.float32))


def test_random_access_two_empty_datasets(backend: Backend) -> None:
    concatenated = _empty(backend).concatenate(_empty(backend))
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(concatenated, 0)


def test_random_access_concatenate_an_empty_dataset(backend: Backend) -> None:
    concatenated = backend.Dataset.from_tensor_slices(np.array([1.0], np.float32)).concatenate(
        _empty(backend)
    )
    assert backend.at(concatenated, 0) == 1.0
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(concatenated, 1)


def test_random_access_concatenate_onto_empty_dataset(backend: Backend) -> None:
    concatenated = _empty(backend).concatenate(
        backend.Dataset.from_tensor_slices(np.array([2.0, 3.0], np.float32))
    )
    assert backend.at(concatenated, 0) == 2.0
    assert backend.at(concatenated, 1) == 3.0
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(concatenated, 2)


def test_random_access_two_non_empty_datasets(backend: Backend) -> None:
    concatenated = backend.Dataset.from_tensor_slices([0, 1, 2]).concatenate(
        backend.Dataset.from_tensor_slices([3, 4])
    )
    for i in range(5):
        assert backend.at(concatenated, i) == i
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(concatenated, 5)
