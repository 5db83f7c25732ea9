"""tf.data's ``rebatch_test.py`` against pipestate and TensorFlow.

Left out of tf.data's tests:
- the ``testShapeInference*`` cases: TF's static shapes (the outputs are checked).
- RebatchTest.testRaggedDataset: tf.RaggedTensor elements.
- RebatchTest.testNoneDataset: ``None`` components, which pipestate elements can't hold.
- the ``symbolic_checkpoint`` combinations: a TensorFlow-only option; each case runs once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ._base import Backend, verify_fns
from ._base_b import verify

DROP = pytest.mark.parametrize("drop_remainder", [True, False])


@DROP
def test_basic(backend: Backend, drop_remainder: bool) -> None:
    dataset = backend.Dataset.range(8).batch(4, drop_remainder=True)
    rebatched = dataset.rebatch(batch_size=[2, 2], drop_remainder=drop_remainder)
    backend.assert_produces(rebatched, [[0, 1], [2, 3], [4, 5], [6, 7]])


def test_partial_batch(backend: Backend) -> None:
    dataset = backend.Dataset.range(5).batch(4, drop_remainder=False)
    backend.assert_produces(dataset.rebatch(batch_size=[2, 2]), [[0, 1], [2, 3], [4]])


def test_partial_batch_with_drop_remainder(backend: Backend) -> None:
    dataset = backend.Dataset.range(5).batch(4, drop_remainder=False)
    rebatched = dataset.rebatch(batch_size=[2, 2], drop_remainder=True)
    backend.assert_produces(rebatched, [[0, 1], [2, 3]])


@DROP
def test_batch_size_greater_than_original(backend: Backend, drop_remainder: bool) -> None:
    dataset = backend.Dataset.range(12).batch(4, drop_remainder=False)
    rebatched = dataset.rebatch(batch_size=[6], drop_remainder=drop_remainder)
    backend.assert_produces(rebatched, [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]])


@DROP
@pytest.mark.parametrize("batch_size", [2, 3, 4])
def test_batch_size_equal_to_original(
    backend: Backend, batch_size: int, drop_remainder: bool
) -> None:
    dataset = backend.Dataset.range(11).batch(batch_size, drop_remainder=drop_remainder)
    expected = backend.outputs(dataset)
    rebatched = dataset.rebatch(batch_size=batch_size, drop_remainder=False)
    backend.assert_produces(rebatched, expected)


@DROP
def test_empty_splits(backend: Backend, drop_remainder: bool) -> None:
    dataset = backend.Dataset.range(8).batch(4, drop_remainder=True)
    rebatched = dataset.rebatch(batch_size=[1, 1, 1, 1, 0], drop_remainder=drop_remainder)
    expected = [[0], [1], [2], [3], [], [4], [5], [6], [7], []]
    backend.assert_produces(rebatched, [np.array(e, np.int64) for e in expected])


@DROP
def test_empty_first_splits(backend: Backend, drop_remainder: bool) -> None:
    dataset = backend.Dataset.range(8).batch(4, drop_remainder=True)
    rebatched = dataset.rebatch(batch_size=[0, 1], drop_remainder=drop_remainder)
    expected = [x for i in range(8) for x in ([], [i])] + [[]]
    backend.assert_produces(rebatched, [np.array(e, np.int64) for e in expected])


@DROP
def test_empty_last_splits(backend: Backend, drop_remainder: bool) -> None:
    dataset = backend.Dataset.range(8).batch(4, drop_remainder=True)
    rebatched = dataset.rebatch(batch_size=[1, 0], drop_remainder=drop_remainder)
    expected = [x for i in range(8) for x in ([i], [])]
    backend.assert_produces(rebatched, [np.array(e, np.int64) for e in expected])


@DROP
def test_empty_tensors(backend: Backend, drop_remainder: bool) -> None:
    dataset = backend.Dataset.range(8).map(lambda x: np.zeros((5, 0), np.float32)).batch(2)
    rebatched = dataset.rebatch(batch_size=4, drop_remainder=drop_remainder)
    backend.assert_produces(rebatched, [np.zeros((4, 5, 0), np.float32)] * 2)


@DROP
def test_scalar_batch_size_input(backend: Backend, drop_remainder: bool) -> None:
    dataset = backend.Dataset.range(8).batch(4, drop_remainder=True)
    rebatched = dataset.rebatch(batch_size=2, drop_remainder=drop_remainder)
    backend.assert_produces(rebatched, [[0, 1], [2, 3], [4, 5], [6, 7]])


def test_multiple_batches(backend: Backend) -> None:
    dataset = backend.Dataset.range(16).batch(2, drop_remainder=True).batch(4, drop_remainder=True)
    expected = [np.arange(i, i + 4).reshape(2, 2) for i in range(0, 16, 4)]
    backend.assert_produces(dataset.rebatch([2, 2]), expected)


def test_nested_dictionary_output(backend: Backend) -> None:
    dataset = (
        backend.Dataset.range(8)
        .map(lambda x: {"a": x, "b": {"c": x + 1}})
        .batch(4, drop_remainder=True)
    )
    expected = [{"a": [i, i + 1], "b": {"c": [i + 1, i + 2]}} for i in range(0, 8, 2)]
    backend.assert_produces(dataset.rebatch([2, 2]), expected)


def test_cardinality(backend: Backend) -> None:
    dataset = backend.Dataset.range(10).batch(4)
    assert backend.cardinality(dataset.rebatch(3)) == backend.UNKNOWN
    assert backend.cardinality(dataset.rebatch(3, drop_remainder=True)) == backend.UNKNOWN


def test_scalar_elements_are_refused(backend: Backend) -> None:
    def build() -> Any:
        return backend.Dataset.range(8).rebatch(2)

    backend.assert_raises_when_built_or_read(build, ValueError, "(?i)rank|batched")


# RebatchDatasetCheckpointTest


@verify_fns
def test_checkpoint(backend: Backend, verify_fn: str) -> None:
    def build() -> Any:
        dataset = backend.Dataset.range(64).batch(2 * 4, drop_remainder=True)
        return dataset.rebatch(batch_size=[4, 4])

    verify(backend, verify_fn, build, 16)
