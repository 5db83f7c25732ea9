"""tf.data's ``window_test.py`` against pipestate and TensorFlow.

Left out of tf.data's tests:
- WindowTest.testWindowSparse, testWindowSparseWithDifferentDenseShapes,
  testNestedWindowSparse: tf.sparse tensors.
- WindowTest.testWindowIgnoreErrors: ``check_numerics`` errors that tf.data's
  window drops (pipestate never drops an element silently: docs/ops.md#errors).
- WindowTest.testName: the ``name=`` argument (tested in tests/data/ops/test_window.py).
- testWindowDataset's static-shape assertion: TF's shape inference (the values are checked).
- WindowCheckpointTest's ``num_parallel_calls=2``: the interleave runs sequentially
  (tf.data's parallel interleave with its default ``deterministic`` gives the same order).
- the ``symbolic_checkpoint`` combinations: a TensorFlow-only option; each case runs once.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from ._base import Backend, verify_fns
from ._base_b import verify

COMPONENTS = (
    np.arange(7),
    np.array([[1, 2, 3]]) * np.arange(7)[:, np.newaxis],
    np.array(37.0) * np.arange(7),
)

CASES = [
    (20, size, shift, stride, drop)
    for size, shift, stride, drop in itertools.product(
        [10, 14, 17], [7, 14], [1, 2, 6], [True, False]
    )
] + [(count, 10, 4, 1, drop) for count in (0, 1) for drop in (True, False)]


@pytest.mark.parametrize(("count", "size", "shift", "stride", "drop_remainder"), CASES)
def test_window_dataset(
    backend: Backend, count: int, size: int, shift: int, stride: int, drop_remainder: bool
) -> None:
    def flat_map_fn(x: Any, y: Any, z: Any) -> Any:
        return backend.Dataset.zip((x.batch(size), y.batch(size), z.batch(size)))

    dataset = (
        backend.Dataset.from_tensor_slices(COMPONENTS)
        .map(lambda x, y, z: (x * x, y * y, z * z))
        .repeat(count)
        .window(size=size, shift=shift, stride=stride, drop_remainder=drop_remainder)
        .flat_map(flat_map_fn)
    )
    iterator = backend.iterate(dataset)
    num_full_batches = max(0, (count * 7 - ((size - 1) * stride + 1)) // shift + 1)
    for i in range(num_full_batches):
        result = next(iterator)
        for component, result_component in zip(COMPONENTS, result):
            for j in range(size):
                np.testing.assert_array_equal(
                    component[(i * shift + j * stride) % 7] ** 2, result_component[j]
                )
    if not drop_remainder:
        num_partial_batches = (count * 7) // shift + ((count * 7) % shift > 0) - num_full_batches
        for i in range(num_partial_batches):
            result = next(iterator)
            for component, result_component in zip(COMPONENTS, result):
                remaining = (count * 7) - ((num_full_batches + i) * shift)
                num_elements = remaining // stride + ((remaining % stride) > 0)
                assert len(result_component) == num_elements
                for j in range(num_elements):
                    np.testing.assert_array_equal(
                        component[((num_full_batches + i) * shift + j * stride) % 7] ** 2,
                        result_component[j],
                    )
    for _ in range(2):
        with pytest.raises(StopIteration):
            next(iterator)


@pytest.mark.parametrize(("size", "shift", "stride"), [(0, 3, 1), (3, 0, 1), (3, 3, 0)])
def test_window_dataset_invalid(backend: Backend, size: int, shift: int, stride: int) -> None:
    def build() -> Any:
        return (
            backend.Dataset.range(10)
            .map(lambda x: x)
            .repeat(20)
            .window(size=size, shift=shift, stride=stride)
            .flat_map(lambda x: x.batch(batch_size=size))
        )

    backend.assert_raises_when_built_or_read(build, backend.ArgumentError)


def test_window_different_nested_structures(backend: Backend) -> None:
    pairs = backend.Dataset.from_tensor_slices(([1, 2], [3, 4])).window(2)
    x, y = next(iter(pairs))
    assert [int(v) for v in x] == [1, 2]
    assert [int(v) for v in y] == [3, 4]
    dicts = backend.Dataset.from_tensor_slices({"a": [1, 2]}).window(2)
    window = next(iter(dicts))
    assert list(window) == ["a"]
    assert [int(v) for v in window["a"]] == [1, 2]


def test_window_shape_error(backend: Backend) -> None:
    def generator() -> Any:
        # Arrays: a list a pipestate generator yields is a tuple element (docs/ops.md).
        yield np.array([1.0, 2.0, 3.0], np.float32)
        yield np.array([4.0, 5.0, 6.0], np.float32)
        yield np.array([7.0, 8.0, 9.0, 10.0], np.float32)

    if backend.is_tf:
        tf = backend.module
        source = backend.Dataset.from_generator(generator, tf.float32, output_shapes=[None])
    else:
        source = backend.Dataset.from_generator(generator)
    dataset = source.window(size=3, shift=1).flat_map(lambda x: x.batch(batch_size=3))
    backend.assert_produces(
        dataset,
        expected_error=(
            backend.InvalidArgumentError,
            r"(?i)cannot batch tensors with different shapes",
        ),
    )


def test_nested_output(backend: Backend) -> None:
    dataset = backend.Dataset.range(100)
    dataset = backend.Dataset.zip((dataset, dataset)).window(10)
    for i, (x, y) in enumerate(dataset):
        backend.assert_produces(x, list(range(i * 10, (i + 1) * 10)))
        backend.assert_produces(y, list(range(i * 10, (i + 1) * 10)))


def test_drop_remainder_output(backend: Backend) -> None:
    dataset = backend.Dataset.range(100).window(30, drop_remainder=True)
    dataset = dataset.flat_map(lambda x: x.batch(30)).batch(4)
    backend.assert_produces(
        dataset, [np.array([[y + 30 * x for y in range(30)] for x in range(3)])]
    )


def test_cardinality(backend: Backend) -> None:
    for size, shift, stride, drop, expected in [
        (3, 2, 1, False, 5),
        (3, 2, 2, True, 3),
        (20, 1, 1, True, 0),
    ]:
        ds = backend.Dataset.range(10).window(size, shift, stride, drop)
        assert backend.cardinality(ds) == expected


# WindowCheckpointTest


@verify_fns
def test_checkpoint(backend: Backend, verify_fn: str) -> None:
    def build() -> Any:
        return backend.Dataset.range(42).window(6).interleave(lambda x: x, cycle_length=2)

    verify(backend, verify_fn, build, 42)
