"""tf.data's ``dataset_test.py`` (the cases that apply) against pipestate and TensorFlow.

Most of tf.data's ``dataset_test.py`` checks TensorFlow internals; what
applies to any implementation of the API is translated.

Left out of tf.data's tests:
- testAsSerializedGraph, testAsSerializedGraphStateful, testAsFunctionWithMap,
  testAsFunctionWithMapInFlatMap: TF's graph serialization and variant tensors.
- testDatasetSimpleSourceInputs, testDatasetComplexSourceInputs,
  testUnaryTransformationInputs, testUnaryTransformationInputsApply,
  testUnaryTransformationInputsWithInterleaveFn, testBinaryTransformationInputs,
  testVariadicTransformationInputs, testCollectInputs, testFunctions: TF's private
  ``_inputs()`` / ``_functions()`` graph of dataset objects.
- testDatasetSpec: TF type specs (``DatasetSpec``, ``OptionalSpec``, sparse specs).
- testSkipEagerSameGraphErrorOneShot, testSkipEagerSameGraphErrorOneShotSimple,
  testSkipEagerSameGraphErrorInitializable: TF1 graphs.
- testDatasetAsFunctionArgument, testLimitedRetracing: datasets passed to ``tf.function``.

testDatasetEagerIteration runs under TF's sync and async eager execution
modes; here it runs once per backend.
"""

from __future__ import annotations

import warnings

from ._base import Backend


def test_dataset_eager_iteration(backend: Backend) -> None:
    values = [int(x) for x in backend.iterate(backend.Dataset.range(10))]
    assert values == list(range(10))


def test_no_warnings(backend: Backend) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend.Dataset.range(10).interleave(lambda x: backend.Dataset.range(0), cycle_length=2)
    assert [str(w.message) for w in caught] == []
