"""tf.data's ``scan_test.py`` against pipestate and TensorFlow.

Left out of tf.data's tests:
- ScanTest.testSparseCount: tf.sparse tensors as scan state.
- ScanTest.testTensorArraySimple, testTensorArrayWithCondReset,
  testTensorArrayWithCondResetByExternalCaptureBreaks: tf.TensorArray scan state.
- ScanTest.testUseDefaultDevice: GPU placement.
- ScanTest.testName: the ``name=`` argument of tf.data ops.
- testChangingStateShape's static-shape assertions: TF's shape inference (the values are checked).
- the ``symbolic_checkpoint`` combinations: a TensorFlow-only option; each case runs once.

testPreserveCardinality raises ``StopIteration`` from a function TF calls
through ``tf.numpy_function``; in pipestate the scan function raises it
itself. Both turn it into an error, not the end of the dataset: tf.data an
``InvalidArgumentError``, pipestate a ``RuntimeError`` (docs/ops.md, errors).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from ._base import Backend, verify_fns
from ._base_b import tensor_ops, verify


@pytest.mark.parametrize(
    ("start", "step", "take"),
    [(0, 1, 10), (0, 1, 0), (10, 1, 10), (10, 2, 10), (10, -1, 10), (10, -2, 10)],
)
def test_count(backend: Backend, start: int, step: int, take: int) -> None:
    dataset = (
        backend.Dataset.from_tensors(0)
        .repeat()
        .scan(start, lambda state, _: (state + step, state))
        .take(take)
    )
    backend.assert_produces(dataset, list(itertools.islice(itertools.count(start, step), take)))


def test_fibonacci(backend: Backend) -> None:
    dataset = (
        backend.Dataset.from_tensors(1)
        .repeat(None)
        .scan([0, 1], lambda a, _: ([a[1], a[0] + a[1]], a[1]))
    )
    assert [int(x) for x in backend.outputs(dataset, limit=6)] == [1, 1, 2, 3, 5, 8]


def test_changing_state_shape(backend: Backend) -> None:
    ops = tensor_ops(backend)

    # The state's vector doubles its length and the other leaf gains a dimension each step.
    def scan_fn(state: Any, input_value: Any) -> Any:
        return (ops.concat([state[0], state[0]]), ops.expand_dims(state[1])), (state, input_value)

    dataset = backend.Dataset.from_tensors(0).repeat(5).scan(([0], 1), scan_fn)
    iterator = backend.iterate(dataset)
    for i in range(5):
        (longer_vector, larger_rank), _ = next(iterator)
        np.testing.assert_array_equal(longer_vector, [0] * (2**i))
        assert np.shape(longer_vector) == (2**i,)
        np.testing.assert_array_equal(larger_rank, np.array(1, ndmin=i))
        assert np.ndim(larger_rank) == i
    with pytest.raises(StopIteration):
        next(iterator)


def test_incorrect_state_type(backend: Backend) -> None:
    dataset = backend.Dataset.range(10)
    with pytest.raises(TypeError, match=r"state"):
        backend.outputs(dataset.scan(np.int32(1), lambda state, _: (np.int64(1), state)))


def test_incorrect_return_type(backend: Backend) -> None:
    dataset = backend.Dataset.range(10)
    with pytest.raises(TypeError, match=r"pair"):
        backend.outputs(dataset.scan(np.int32(1), lambda state, _: np.int64(1)))


def test_preserve_cardinality(backend: Backend) -> None:
    ops = tensor_ops(backend)

    def stop(_: Any) -> Any:
        raise StopIteration()

    def scan_fn(state: Any, value: Any) -> Any:
        return state, ops.call_python(stop, value, np.int64)

    dataset = backend.Dataset.from_tensors(0).scan(np.int32(1), scan_fn)
    # docs/ops.md#errors: pipestate makes it a RuntimeError, as Python does for generators.
    error = backend.InvalidArgumentError if backend.is_tf else RuntimeError
    backend.assert_raises_at(dataset, 0, error, "StopIteration")


# ScanCheckpointTest


@verify_fns
def test_checkpoint(backend: Backend, verify_fn: str) -> None:
    def build() -> object:
        return (
            backend.Dataset.from_tensors(1)
            .repeat(10)
            .scan([0, 1], lambda a, _: ([a[1], a[0] + a[1]], a[1]))
        )

    verify(backend, verify_fn, build, 10)
