"""tf.data's ``unbatch_test.py`` (UnbatchTest, UnbatchCheckpointTest, UnbatchRandomAccessTest).

Left out:
- testUnbatchNestedDataset: datasets of datasets are tf.data-only.
- testUnbatchDatasetWithSparseTensor, testUnbatchDatasetWithDenseSparseAndRaggedTensor,
  testUnbatchDatasetWithRaggedTensor: sparse and ragged tensors are TensorFlow types.
- testUnbatchDynamicShapeMismatch: TF1 placeholders (the mismatches are
  tested with concrete elements instead).
- testName: the ``name=`` argument is tf.data's graph-naming machinery.
- the ``symbolic_checkpoint`` option of the checkpoint test: a TensorFlow-only option.

testUnbatchDatasetWithStrings builds its strings with ``tf.strings.as_string``;
here they are in the input. tf.data checks static first dimensions when
``unbatch()`` is called, pipestate when iterating (it has no static shapes).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ._base import Backend, pipestate_differs, verify_fns


def test_unbatch_with_unknown_rank_input(backend: Backend) -> None:
    dataset = backend.Dataset.from_tensors([0, 1, 2, 3]).unbatch()
    backend.assert_produces(dataset, list(range(4)))


def test_unbatch_scalar_dataset(backend: Backend) -> None:
    data = tuple(np.arange(10, dtype=np.int32) for _ in range(3))
    dataset = backend.Dataset.from_tensor_slices(data).batch(2).unbatch()
    backend.assert_produces(dataset, [(np.int32(i),) * 3 for i in range(10)])


def test_unbatch_dataset_with_strings(backend: Backend) -> None:
    data = (
        np.arange(10, dtype=np.int32),
        np.array([str(i).encode() for i in range(10)]),
        np.arange(10, dtype=np.int32),
    )
    dataset = backend.Dataset.from_tensor_slices(data).batch(2).unbatch()
    backend.assert_produces(
        dataset, [(np.int32(i), str(i).encode(), np.int32(i)) for i in range(10)]
    )


def test_unbatch_single_element_tuple_dataset(backend: Backend) -> None:
    data = tuple((np.arange(10, dtype=np.int32),) for _ in range(3))
    dataset = backend.Dataset.from_tensor_slices(data).batch(2).unbatch()
    backend.assert_produces(dataset, [((np.int32(i),),) * 3 for i in range(10)])


def test_unbatch_multi_element_tuple_dataset(backend: Backend) -> None:
    data = tuple(
        (np.arange(10 * i, 10 * i + 10, dtype=np.int32), np.full([10], b"hi")) for i in range(3)
    )
    dataset = backend.Dataset.from_tensor_slices(data).batch(2).unbatch()
    backend.assert_produces(
        dataset,
        [
            ((np.int32(i), b"hi"), (np.int32(10 + i), b"hi"), (np.int32(20 + i), b"hi"))
            for i in range(10)
        ],
    )


def test_unbatch_empty(backend: Backend) -> None:
    data = (
        np.zeros([0], np.float32),
        np.zeros([0, 4], np.float32),
        np.zeros([0, 4, 0], np.float32),
    )
    dataset = backend.Dataset.from_tensors(data).unbatch()
    backend.assert_produces(dataset, [])


def test_unbatch_static_shape_mismatch(backend: Backend) -> None:
    data = (np.arange(7), np.arange(8), np.arange(9))
    backend.assert_raises_when_built_or_read(
        lambda: backend.Dataset.from_tensors(data).unbatch(), ValueError
    )


def test_unbatch_scalar_component(backend: Backend) -> None:
    data = (np.arange(7), np.int64(7))
    backend.assert_raises_when_built_or_read(
        lambda: backend.Dataset.from_tensors(data).unbatch(), ValueError
    )


def test_unbatch_dataset_with_uint_dtypes(backend: Backend) -> None:
    components = (
        np.tile(np.array([[0], [1], [2], [3]], dtype=np.uint8), 2),
        np.tile(np.array([[1], [2], [3], [256]], dtype=np.uint16), 2),
        np.tile(np.array([[2], [3], [4], [65536]], dtype=np.uint32), 2),
        np.tile(np.array([[3], [4], [5], [4294967296]], dtype=np.uint64), 2),
    )
    expected = [tuple(c[i] for c in components) for i in range(4)]
    dataset = backend.Dataset.from_tensor_slices(components).batch(2).unbatch()
    backend.assert_produces(dataset, expected)


@pipestate_differs(
    "docs/ops.md#differences-from-tfdata: None is not an element value (a function that "
    "returns None by mistake fails at once)"
)
def test_none_component(backend: Backend) -> None:
    dataset = backend.Dataset.from_tensors((list(range(10)), None)).unbatch().map(lambda x, y: x)
    backend.assert_produces(dataset, list(range(10)))


def test_unbatch_dict(backend: Backend) -> None:
    dataset = backend.Dataset.from_tensors(
        {"a": np.arange(3), "b": np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])}
    ).unbatch()
    backend.assert_produces(
        dataset,
        [
            {"a": np.int64(0), "b": np.array([1.0, 2.0])},
            {"a": np.int64(1), "b": np.array([3.0, 4.0])},
            {"a": np.int64(2), "b": np.array([5.0, 6.0])},
        ],
    )


def _build_dataset(
    backend: Backend, multiplier: float = 15.0, tensor_slice_len: int = 2, batch_size: int = 2
) -> Any:
    components = (
        np.arange(tensor_slice_len),
        np.array([[1, 2, 3]]) * np.arange(tensor_slice_len)[:, np.newaxis],
        np.array(multiplier) * np.arange(tensor_slice_len),
    )
    return backend.Dataset.from_tensor_slices(components).batch(batch_size).unbatch()


@verify_fns
def test_unbatch_checkpoint(backend: Backend, verify_fn: str) -> None:
    getattr(backend, verify_fn)(lambda: _build_dataset(backend, 15.0, 8, 2), 8)


@verify_fns
def test_unbatch_of_a_streaming_input_checkpoint(backend: Backend, verify_fn: str) -> None:
    getattr(backend, verify_fn)(
        lambda: backend.Dataset.range(11).filter(lambda x: x % 5 != 0).batch(3).unbatch(), 8
    )


_UNBATCH_IS_STREAMING = pipestate_differs(
    "docs/ops.md#streaming-ops: unbatch is a streaming op, without ds[i]"
)


@_UNBATCH_IS_STREAMING
def test_random_access(backend: Backend) -> None:
    dataset = backend.Dataset.range(10).batch(4, drop_remainder=True).unbatch()
    for i in range(8):
        assert backend.at(dataset, i) == i


@pytest.mark.parametrize("index", [-1, 100])
def test_random_access_invalid_index(backend: Backend, index: int) -> None:
    dataset = backend.Dataset.range(10).batch(4, drop_remainder=True).unbatch()
    with pytest.raises(backend.IndexOutOfRangeError if backend.is_tf else TypeError):
        backend.at(dataset, index)
