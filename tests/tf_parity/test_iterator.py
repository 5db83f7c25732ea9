"""tf.data's ``iterator_test.py`` (the cases that apply) against pipestate and TensorFlow.

Most of tf.data's ``iterator_test.py`` is about TF1 graph-mode iterators; the
cases about iterating a dataset in Python are translated to ``iter(dataset)``.
testSaveRestore uses the NumPy iterator's in-memory ``save()`` /
``restore()``; here the position goes through a checkpoint file.

Left out of tf.data's tests:
- testNoGradients, testCapturingStateInOneShotRaisesException: TF graph gradients and
  captured tf.Variables.
- testOneShotIteratorCaptureByValue: capturing tf.Tensors (the values are testOneShotIterator's).
- testOneShotIteratorInsideContainer, testSimpleSharedResource: TF1 resource containers
  and shared iterators.
- testOneShotIteratorNonBlocking's concurrent part: several TF1 graph-mode threads sharing one
  iterator (the single-consumer part is translated).
- testOneShotIteratorInitializerFails: a TF op failing when the dataset is built.
- testNotInitializedError, testReinitializableIterator, testReinitializableIteratorStaticErrors,
  testReinitializableIteratorEmptyDataset, testNoInitializer: TF1 reinitializable iterators.
- testIteratorStringHandle, testIteratorStringHandleFuture,
  testIteratorStringHandleReuseTensorObject, testIteratorStringHandleError: TF1 string handles.
- testRemoteIteratorUsingRemoteCallOpDirectSession, ...MultiWorkers,
  ...DirectSessionGPUCPU: TF remote calls across devices.
- testRepeatedGetNextWarning, testIteratorGetNextName: TF1 ``get_next()`` ops.
- testTensorIteratorStructure, testSparseTensorIteratorStructure,
  testNestedTensorIteratorStructure: TF element specs and legacy output classes.
- testOwnedIteratorFunction, testOwnedIteratorFunctionError, testLimitedRetracing,
  testNestedFunctionsIteratorResource, testNestedAutomaticControlDependencies: iterators
  inside ``tf.function``.
- testtestMissingInput, testExtraElementSpecInput: arguments of TF's ``OwnedIterator``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from ._base import Backend
from ._base_b import spec

COMPONENTS = (
    np.arange(7),
    np.array([[1, 2, 3]]) * np.arange(7)[:, np.newaxis],
    np.array(37.0) * np.arange(7),
)


def test_one_shot_iterator(backend: Backend) -> None:
    dataset = (
        backend.Dataset.from_tensor_slices(COMPONENTS)
        .map(lambda x, y, z: (x * x, y * y, z * z))
        .repeat(14)
    )
    expected = [tuple(c[i] ** 2 for c in COMPONENTS) for _ in range(14) for i in range(7)]
    backend.assert_produces(dataset, expected, expected_shapes=((), (3,), ()))


def test_one_shot_iterator_non_blocking(backend: Backend) -> None:
    dataset = backend.Dataset.from_tensors([1, 2, 3]).map(lambda x: x * x)
    backend.assert_produces(dataset, [[1, 4, 9]])


def test_one_shot_iterator_empty_dataset(backend: Backend) -> None:
    with pytest.raises(StopIteration):
        next(backend.iterate(backend.Dataset.range(0)))


def test_reinitializable_iterator_with_functions(backend: Backend) -> None:
    def g() -> Iterator[int]:
        yield from range(10)

    for _ in range(2):
        dataset = backend.Dataset.from_generator(g, output_signature=spec(backend, (), np.int64))
        backend.assert_produces(dataset, list(range(10)))


def test_iterator_eager_iteration(backend: Backend) -> None:
    iterator = backend.iterate(backend.Dataset.range(10))
    assert [int(x) for x in iterator] == list(range(10))


def test_save_restore(backend: Backend) -> None:
    dataset = backend.Dataset.range(10).shuffle(5, seed=42, reshuffle_each_iteration=False)
    expected = [int(x) for x in backend.outputs(dataset)]
    iterator = iter(dataset)
    for i in range(3):
        assert int(backend.to_numpy(next(iterator))) == expected[i]
    path = backend.save(iterator)
    for i in range(3, 6):
        assert int(backend.to_numpy(next(iterator))) == expected[i]
    backend.restore(iterator, path)
    for i in range(3, 6):
        assert int(backend.to_numpy(next(iterator))) == expected[i]
