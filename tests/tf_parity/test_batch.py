"""tf.data's ``batch_test.py`` (BatchTest, BatchCheckpointTest, BatchRandomAccessTest).

testBasic's ``num_parallel_calls`` / ``deterministic`` combinations are
test_basic_parallel; testDeterminismConfiguration runs with each backend's own
delayed map function.

Left out:
- testDataset: datasets of datasets are tf.data-only.
- testSparse, testSparseWithDifferentDenseShapes, testSparseNested, testRagged,
  testRaggedWithDifferentShapes, testRaggedNested, testSparseCore,
  testNestedSparseCore: sparse and ragged tensors are TensorFlow types.
- BatchGlobalShuffleTest: global shuffling is covered with the shuffle ops' tests.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from ._base import NEGATIVE_INDEX, Backend, pipestate_differs, verify_fns

COMPONENTS = (
    np.arange(7),
    np.array([[1, 2, 3]]) * np.arange(7)[:, np.newaxis],
    np.array(37.0) * np.arange(7),
)


@pytest.mark.parametrize("count", [0, 28])
@pytest.mark.parametrize("batch_size", [14, 15])
@pytest.mark.parametrize("drop_remainder", [True, False])
def test_basic(backend: Backend, count: int, batch_size: int, drop_remainder: bool) -> None:
    dataset = (
        backend.Dataset.from_tensor_slices(COMPONENTS)
        .map(lambda x, y, z: (x * x, y * y, z * z))
        .repeat(count)
        .batch(batch_size, drop_remainder)
    )
    dim0 = batch_size if drop_remainder else None
    if backend.is_tf:
        assert backend.static_shapes(dataset) == tuple((dim0, *c.shape[1:]) for c in COMPONENTS)
    squares = [c**2 for c in COMPONENTS]
    rows = [i % 7 for i in range(count * 7)]
    num_batches = len(rows) // batch_size if drop_remainder else -(-len(rows) // batch_size)
    expected = [
        tuple(s[rows[b * batch_size : (b + 1) * batch_size]] for s in squares)
        for b in range(num_batches)
    ]
    backend.assert_produces(dataset, expected)
    assert backend.cardinality(dataset) == num_batches


def test_invalid_batch_size(backend: Backend) -> None:
    backend.assert_raises_when_built_or_read(
        lambda: backend.Dataset.range(10).batch(0), backend.ArgumentError
    )


def test_shape_error(backend: Backend) -> None:
    dataset = (
        backend.Dataset.from_tensor_slices(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32))
        .concatenate(backend.Dataset.from_tensors(np.array([7.0, 8.0, 9.0, 10.0], np.float32)))
        .batch(3)
    )
    backend.assert_produces(
        dataset,
        expected_error=(
            backend.InvalidArgumentError,
            backend.tf_message(
                r"Cannot batch tensors with different shapes in component 0. First "
                r"element had shape \[3\] and element 2 had shape \[4\]."
            ),
        ),
    )


def test_shape_error_in_a_tuple(backend: Backend) -> None:
    first = backend.Dataset.from_tensors((np.int64(0), np.array([0])))
    second = backend.Dataset.from_tensors((np.int64(10), np.array([10, 11])))
    dataset = first.concatenate(second).batch(2)
    backend.assert_produces(
        dataset,
        expected_error=(
            backend.InvalidArgumentError,
            backend.tf_message("Cannot batch tensors with different shapes in component 1"),
        ),
    )


@pipestate_differs(
    "docs/ops.md#differences-from-tfdata: None is not an element value (a function that "
    "returns None by mistake fails at once)"
)
def test_none_component(backend: Backend) -> None:
    dataset = backend.Dataset.range(10).map(lambda x: (x, None)).batch(10).map(lambda x, y: x)
    backend.assert_produces(dataset, [np.arange(10)])


def test_batch_of_dicts_and_strings(backend: Backend) -> None:
    dataset = backend.Dataset.from_tensor_slices(
        {"a": np.arange(5), "b": (np.array([b"x", b"y", b"z", b"u", b"v"]),)}
    ).batch(2)
    backend.assert_produces(
        dataset,
        [
            {"a": [0, 1], "b": (np.array([b"x", b"y"]),)},
            {"a": [2, 3], "b": (np.array([b"z", b"u"]),)},
            {"a": [4], "b": (np.array([b"v"]),)},
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
    return backend.Dataset.from_tensor_slices(components).batch(batch_size)


@verify_fns
def test_batch_checkpoint(backend: Backend, verify_fn: str) -> None:
    getattr(backend, verify_fn)(lambda: _build_dataset(backend, 15.0, 8, 2), 4)


@verify_fns
@pytest.mark.parametrize("drop_remainder", [True, False])
def test_batch_of_map_checkpoint(backend: Backend, verify_fn: str, drop_remainder: bool) -> None:
    getattr(backend, verify_fn)(
        lambda: backend.Dataset.range(10).map(lambda x: x * 2).batch(3, drop_remainder),
        3 if drop_remainder else 4,
    )


@pytest.mark.parametrize("batch_size", [1, 3, 4, 10])
@pytest.mark.parametrize("drop_remainder", [True, False])
def test_random_access(backend: Backend, batch_size: int, drop_remainder: bool) -> None:
    dataset = backend.Dataset.range(10).batch(batch_size, drop_remainder)
    num_batches = 10 // batch_size if drop_remainder else -(-10 // batch_size)
    for i in range(num_batches):
        np.testing.assert_array_equal(
            backend.at(dataset, i), np.arange(i * batch_size, min(10, (i + 1) * batch_size))
        )
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(dataset, num_batches)


@pytest.mark.parametrize(
    "index",
    [
        NEGATIVE_INDEX,
        4,
    ],
)
def test_random_access_invalid_index(backend: Backend, index: int) -> None:
    dataset = backend.Dataset.range(10).batch(3)
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(dataset, index)


@pytest.mark.parametrize("num_parallel_calls", [1, 2, 4])
@pytest.mark.parametrize("deterministic", [None, True, False])
@pytest.mark.parametrize("drop_remainder", [True, False])
def test_basic_parallel(
    backend: Backend,
    num_parallel_calls: int,
    deterministic: bool | None,
    drop_remainder: bool,
) -> None:
    count, batch_size = 28, 14
    dataset = (
        backend.Dataset.from_tensor_slices(COMPONENTS)
        .map(lambda x, y, z: (x * x, y * y, z * z))
        .repeat(count)
        .batch(
            batch_size,
            drop_remainder,
            num_parallel_calls=num_parallel_calls,
            deterministic=deterministic,
        )
    )
    squares = [c**2 for c in COMPONENTS]
    rows = [i % 7 for i in range(count * 7)]
    expected = [
        tuple(s[rows[b * batch_size : (b + 1) * batch_size]] for s in squares)
        for b in range(len(rows) // batch_size)
    ]
    backend.assert_produces(dataset, expected, assert_items_equal=deterministic is False)


def _check_determinism(
    backend: Backend, dataset_fn: Any, expect_determinism: bool, elements: list[int]
) -> None:
    """tf.data's ``checkDeterminism``: in order, or out of order under some delay."""
    if expect_determinism:
        actual = [int(x) for x in backend.outputs(dataset_fn(100))]
        assert actual == elements
        return
    for delay_ms in [10, 100, 1000]:
        actual = [int(x) for x in backend.outputs(dataset_fn(delay_ms))]
        assert sorted(actual) == sorted(elements)
        if actual != elements:
            return
    pytest.fail("Failed to observe nondeterministic ordering")


@pytest.mark.parametrize("local_determinism", [None, True, False])
@pytest.mark.parametrize("global_determinism", [True, False])
def test_determinism_configuration(
    backend: Backend, local_determinism: bool | None, global_determinism: bool
) -> None:
    expect_determinism = local_determinism or (local_determinism is None and global_determinism)
    elements = list(range(100))

    def dataset_fn(delay_ms: int) -> Any:
        def sleep(x: Any) -> Any:
            time.sleep(delay_ms / 1000)
            return x

        if backend.is_tf:
            tf = backend.module

            def map_function(x: Any) -> Any:
                if tf.math.equal(x, 0):
                    return tf.numpy_function(sleep, [x], x.dtype)
                return x
        else:

            def map_function(x: Any) -> Any:
                return sleep(x) if x == 0 else x

        dataset = backend.Dataset.from_tensor_slices(elements)
        dataset = dataset.map(map_function, num_parallel_calls=2, deterministic=local_determinism)
        dataset = dataset.batch(
            batch_size=6, num_parallel_calls=2, deterministic=local_determinism
        ).unbatch()
        opts = backend.data.Options()
        opts.deterministic = global_determinism
        return dataset.with_options(opts)

    _check_determinism(backend, dataset_fn, bool(expect_determinism), elements)


def test_name(backend: Backend) -> None:
    dataset = backend.Dataset.from_tensors(42).batch(1, name="batch")
    backend.assert_produces(dataset, [[42]])
