"""tf.data's ``flat_map_test.py`` against pipestate and TensorFlow.

Left out of tf.data's tests:
- FlatMapTest.testSharedResourceNestedFlatMapDataset: a TF1 iterator shared by two
  TF1 clients of one server.
- FlatMapTest.testSparse, FlatMapCheckpointTest.testSparse: tf.sparse tensors.
- FlatMapTest.testTensorArray: tf.TensorArray elements.
- FlatMapTest.testRagged: ragged tensors.
- FlatMapTest.testName: the ``name=`` argument of tf.data ops.
- FlatMapTest.testCardinality, testInfiniteCardinality, testUnknownCardinality,
  testEmptyCardinality: TF's internal ``CARDINALITY_COMPUTE_MODERATE`` option (the
  public ``cardinality()``, testCardinalityLowEffort, is translated).
- FlatMapTest.testMapFuncFailWithErrorContext: TF's integer division by zero and its
  error-context message.
- FlatMapTest.testSymbolicCheckpointSize: the TF-only ``experimental_symbolic_checkpoint`` option.
- FlatMapCheckpointTest.testCaptureDefunInMapFn: a TF1 ``Defun``.
- FlatMapCheckpointTest.testDisallowVariableCapture: a captured tf.Variable.
- the ``symbolic_checkpoint`` combinations: a TensorFlow-only option; each case runs once.

FlatMapGlobalShuffleTest.test global-shuffles the output of ``flat_map``, which newer
TensorFlow supports; TF 2.21 raises ``FailedPreconditionError`` (random access
unimplemented for flat_map) and pipestate ``TypeError`` (docs/ops.md,
``global_shuffle`` needs a random-access input), so the test checks that error.

FlatMapCheckpointTest.testNested flat-maps a dataset of datasets; pipestate
has no datasets as elements, so the inner dataset is captured by
``map_func`` instead. FlatMapCheckpointTest.testDisallowCapturingStatefulOps
maps with ``tf.random.uniform``, which tf.data detects as stateful; pipestate
can't look into a Python function, so its pipeline declares the random map
``stateful=True``, and so does the ``flat_map`` returning it (docs/ops.md,
``interleave``: external state inside inner datasets is not detected).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ._base import Backend, verify_fns
from ._base_b import global_shuffle, random_access_error, tensor_ops, verify


def test_flat_map_dataset(backend: Backend) -> None:
    repeats = [1, 2, 3, 4, 5, 0, 1]
    dataset = backend.Dataset.from_tensor_slices(np.array(repeats, dtype=np.int64)).flat_map(
        lambda x: backend.Dataset.from_tensors([x]).repeat(x)
    )
    expected = [np.array([i], dtype=np.int64) for i in repeats for _ in range(i)]
    backend.assert_produces(dataset, expected)


def test_nested_flat_map_dataset(backend: Backend) -> None:
    repeats = [[1, 2], [3, 4], [5, 0], [1, 7]]
    dataset = backend.Dataset.from_tensor_slices(np.array(repeats, dtype=np.int64)).flat_map(
        lambda x: backend.Dataset.from_tensor_slices(x).flat_map(
            lambda y: backend.Dataset.from_tensors(y).repeat(y)
        )
    )
    expected = [np.int64(i) for row in repeats for i in row for _ in range(i)]
    backend.assert_produces(dataset, expected)


def test_map_dict(backend: Backend) -> None:
    dataset = (
        backend.Dataset.range(10)
        .map(lambda x: {"foo": x * 2, "bar": x**2})
        .flat_map(lambda d: backend.Dataset.from_tensors(d["foo"]).repeat(d["bar"]))
    )
    backend.assert_produces(dataset, [i * 2 for i in range(10) for _ in range(i**2)])


def test_cardinality_low_effort(backend: Backend) -> None:
    dataset = backend.Dataset.from_tensor_slices([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    dataset = dataset.flat_map(backend.Dataset.from_tensor_slices)
    assert backend.cardinality(dataset) == backend.UNKNOWN
    backend.assert_produces(dataset, list(range(1, 10)))


# FlatMapCheckpointTest


@verify_fns
def test_checkpoint(backend: Backend, verify_fn: str) -> None:
    # A roundabout range(0, 25).
    def build() -> object:
        return backend.Dataset.range(0, 25, 5).flat_map(lambda x: backend.Dataset.range(x, x + 5))

    verify(backend, verify_fn, build, 25)


@verify_fns
def test_checkpoint_nested(backend: Backend, verify_fn: str) -> None:
    def build() -> object:
        inner = backend.Dataset.from_tensor_slices(list(range(42)))
        return backend.Dataset.from_tensors(0).flat_map(lambda _: inner)

    verify(backend, verify_fn, build, 42)


@verify_fns
def test_checkpoint_map_then_flat_map(backend: Backend, verify_fn: str) -> None:
    ops = tensor_ops(backend)

    def build() -> object:
        def flat_map_fn(_: Any) -> Any:
            return backend.Dataset.range(100).map(lambda y: 10 * ops.cast(y, np.int32))

        return backend.Dataset.range(5).flat_map(flat_map_fn)

    verify(backend, verify_fn, build, 500)


def test_checkpoint_disallow_capturing_stateful_ops(backend: Backend) -> None:
    def build() -> object:
        if backend.is_tf:
            tf = backend.module

            def map_fn(x: Any) -> Any:
                return tf.random.uniform((), 0, 10, dtype=tf.int32) * tf.cast(x, tf.int32)

            return backend.Dataset.range(5).flat_map(
                lambda _: backend.Dataset.range(100).map(map_fn)
            )
        rng = np.random.default_rng()
        return backend.Dataset.range(5).flat_map(
            lambda _: backend.Dataset.range(100).map(
                lambda x: rng.integers(0, 10) * x, stateful=True
            ),
            stateful=True,
        )

    backend.verify_error_on_save(build, 500, backend.ExternalStateError)


@verify_fns
@pytest.mark.parametrize("num_skips", [3, 4])
def test_checkpoint_with_skip(backend: Backend, verify_fn: str, num_skips: int) -> None:
    # Input i flat-maps to [4i, 4i + 4): 0..3, 4..7, 8..11.
    def build() -> object:
        indices = backend.Dataset.from_tensor_slices(np.array([0, 1, 2], dtype=np.int64))
        return indices.flat_map(lambda x: backend.Dataset.range(4 * x, 4 * x + 4)).skip(num_skips)

    verify(backend, verify_fn, build, 3 * 4 - num_skips)


# FlatMapGlobalShuffleTest


def test_global_shuffle(backend: Backend) -> None:
    dataset = backend.Dataset.from_tensor_slices([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    dataset = dataset.flat_map(backend.Dataset.from_tensor_slices)
    dataset = dataset.prefetch(buffer_size=backend.data.AUTOTUNE)
    with pytest.raises(random_access_error(backend), match=r"random.access"):
        backend.outputs(global_shuffle(backend, dataset, seed=42))
