"""tf.data's ``map_test.py`` (MapTest, MapCheckpointTest, MapRandomAccessTest).

Functions are written once where NumPy values and tensors behave alike
(``x * x``, indexing, Python control flow that autograph converts); where they
don't, the TensorFlow op and its NumPy equivalent are chosen per backend
(``tf.debugging.check_numerics`` / a NaN check that raises ``ValueError``,
``tf.py_function`` / a plain call). A function's own error surfaces as
tf.data's ``InvalidArgumentError`` and as the function's exception in pipestate.

Left out:
- testSkipEagerMapDatasetMultithreaded, testSkipEagerParallelMapDatasetMultithreaded,
  testCaptureQueue, testCaptureSameResourceMultipleTimes, testMapCancellation,
  testCollectionCopy, testCreateVariableInsideFunctionWithGetter,
  testCaptureUninitializedVariableError, testCaptureConstantsWithConflictingDevices,
  testReferenceVariablesWithMultipleDevices, testResourceVariablesWithMultipleDevices,
  testWarnOnSeedFromOuterGraph, testNoInterOpParallelism: TF1 sessions, graphs and devices.
- testCaptureHashTable: lookup tables and ``tf.strings`` ops.
- testSeededStatefulOperatorIsProperlyStateful, testStatefulMapKeepsStateAcrossIterators:
  TensorFlow's stateful random ops.
- testUseStepContainerInMap, testCaseInWhileInMap, testCaseAndCondInWhileInMap:
  ``tf.map_fn`` / ``tf.case`` (the conditional of testCaseAndCondInMap is tested).
- testMultiOutputPyFunc, testParallelMapOutOfRangeError (TF1 graph): ``tf.py_func``.
- testSparse, testSparseChain, testSparseMapShapeInference*, testTensorArray*,
  testRagged, testRaggedChain, MapCheckpointTest.testSparse: TensorFlow types.
- testNestedDatasetMap: datasets of datasets are tf.data-only.
- testMapAttrs: ``attr.s`` classes as structures are tf.data's nest machinery.
- testBrokenFunctionErrorOnInitialization: a malformed graph function.
- testCheckpointLargeBuffer: a 512 MB element and tf.data's 2 GB protobuf limit.
- testPrefetch's event checks: they assert the exact read-ahead of a prefetch
  buffer, which pipestate does not promise (docs/parallel.md); the outputs are tested.
- testDeterminismConfiguration's global ``Options.deterministic`` and its
  search for an out-of-order run: pipestate's Options have no ``deterministic``;
  the local argument is tested (same order when deterministic, same elements otherwise).
- testCaptureDefunInMapFn, testBuildDefunInMapFn: TF1 ``Defun`` (translated as
  nested Python functions).
- testStatefulOperationInShortCircuit: it counts calls of a stateful function
  while iterating; tf.data 2.21 itself reads ahead in eager mode, and pipestate
  may compute a random-access map ahead of the consumer (the function must be pure).
- testName: the ``name=`` argument is tf.data's graph-naming machinery.
"""

from __future__ import annotations

import collections
import threading
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
NAN_COMPONENTS = np.array([1.0, 2.0, 3.0, np.nan, 5.0]).astype(np.float32)


def _square(x: Any, y: Any, z: Any) -> Any:
    return x * x, y * y, z * z


def _squares(count: int) -> list[tuple[np.ndarray, ...]]:
    return [tuple(c[i] ** 2 for c in COMPONENTS) for _ in range(count) for i in range(7)]


def _check_numerics(backend: Backend) -> Any:
    if backend.is_tf:
        tf = backend.module
        return lambda x: tf.debugging.check_numerics(x, "message")

    def check(x: Any) -> Any:
        if np.isnan(x):
            raise ValueError("message")
        return x

    return check


def _function_error(backend: Backend) -> type[Exception]:
    return backend.InvalidArgumentError if backend.is_tf else ValueError


def _py_function(backend: Backend, fn: Any) -> Any:
    """``fn`` run as Python: through ``tf.py_function`` on TensorFlow."""
    if backend.is_tf:
        tf = backend.module
        return lambda x: tf.py_function(lambda t: fn(t.numpy()), [x], tf.int64)
    return fn


def test_map_dataset(backend: Backend) -> None:
    dataset = backend.Dataset.from_tensor_slices(COMPONENTS).map(_square).repeat(14)
    backend.assert_produces(dataset, _squares(14), expected_shapes=((), (3,), ()))


@pytest.mark.parametrize(
    ("num_parallel_calls", "output_buffer_size"), [(1, 1), (1, 2), (2, 2), (2, 4), (8, 8), (8, 16)]
)
def test_parallel_map_dataset(
    backend: Backend, num_parallel_calls: int, output_buffer_size: int
) -> None:
    dataset = (
        backend.Dataset.from_tensor_slices(COMPONENTS)
        .map(_square, num_parallel_calls=num_parallel_calls)
        .prefetch(output_buffer_size)
        .repeat(14)
    )
    backend.assert_produces(dataset, _squares(14))


def test_implicit_dispose_parallel_map_dataset(backend: Backend) -> None:
    components = (
        np.arange(1000),
        np.array([[1, 2, 3]]) * np.arange(1000)[:, np.newaxis],
        np.array(37.0) * np.arange(1000),
    )
    dataset = (
        backend.Dataset.from_tensor_slices(components)
        .map(_square, num_parallel_calls=100)
        .prefetch(100)
        .repeat(1000)
        .prefetch(100)
    )
    iterator = backend.iterate(dataset)
    for i in range(3):
        assert next(iterator)[0] == i * i
    del iterator


def test_parallel_map_unspecified_output_size(backend: Backend) -> None:
    dataset = backend.Dataset.from_tensor_slices(NAN_COMPONENTS).map(
        _check_numerics(backend), num_parallel_calls=2
    )
    assert backend.outputs(dataset, limit=3) == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("parallel", [False, True], ids=["map-prefetch", "parallel-map"])
def test_error_then_next_element(backend: Backend, parallel: bool) -> None:
    if parallel:
        dataset = backend.Dataset.from_tensor_slices(NAN_COMPONENTS).map(
            _check_numerics(backend), num_parallel_calls=2
        )
    else:
        dataset = (
            backend.Dataset.from_tensor_slices(NAN_COMPONENTS)
            .map(_check_numerics(backend))
            .prefetch(2)
        )
    iterator = backend.iterate(dataset)
    assert [next(iterator) for _ in range(3)] == [1.0, 2.0, 3.0]
    with pytest.raises(_function_error(backend)):
        next(iterator)
    assert next(iterator) == 5.0
    with pytest.raises(StopIteration):
        next(iterator)


def test_map_error_then_next_element(backend: Backend) -> None:
    dataset = backend.Dataset.from_tensor_slices(NAN_COMPONENTS).map(_check_numerics(backend))
    iterator = backend.iterate(dataset)
    assert [next(iterator) for _ in range(3)] == [1.0, 2.0, 3.0]
    with pytest.raises(_function_error(backend)):
        next(iterator)
    assert next(iterator) == 5.0
    with pytest.raises(StopIteration):
        next(iterator)


def test_capture_iterator(backend: Backend) -> None:
    captured = iter(backend.Dataset.range(10))
    get_next = captured.get_next if backend.is_tf else captured.__next__
    dataset = backend.Dataset.range(10).map(lambda x: x * get_next())
    backend.assert_produces(dataset, [i * i for i in range(10)])


def test_map_dict(backend: Backend) -> None:
    dataset = (
        backend.Dataset.range(10)
        .map(lambda x: {"foo": x * 2, "bar": x**2})
        .map(lambda d: d["foo"] + d["bar"])
    )
    backend.assert_produces(dataset, [i * 2 + i**2 for i in range(10)])


def test_map_namedtuple(backend: Backend) -> None:
    labels = backend.Dataset.range(10)
    images = labels.map(lambda label: -label)
    dataset_tuple = backend.Dataset.zip((labels, images))
    example = collections.namedtuple("Example", ["label", "image"])
    dataset_namedtuple = dataset_tuple.map(example)

    def preprocess_tuple(label: Any, image: Any) -> Any:
        return label, 2 * image

    def preprocess_namedtuple(ex: Any) -> Any:
        return ex._replace(image=2 * ex.image)

    backend.assert_produces(dataset_tuple.map(preprocess_tuple), [(i, -2 * i) for i in range(10)])
    backend.assert_produces(
        dataset_namedtuple.map(preprocess_namedtuple), [example(i, -2 * i) for i in range(10)]
    )


@pytest.mark.parametrize("num", [2, 3, 4])
def test_case_and_cond_in_map(backend: Backend, num: int) -> None:
    def control_map_fn(x: Any) -> Any:
        if num == 2 or num == 3:
            if x % 2 == 0:
                return x * 2
            return x // 2
        return x * 2

    dataset = backend.Dataset.from_tensor_slices(np.arange(6)).map(control_map_fn)
    backend.assert_produces(
        dataset, [(i // 2 if i % 2 else i * 2) if num in (2, 3) else i * 2 for i in range(6)]
    )


def test_nested_list_map_dataset(backend: Backend) -> None:
    dataset = (
        backend.Dataset.from_tensors([0, 1, 2])
        .repeat(10)
        .map(lambda a: ([a[1], a[0] + a[2]], a[1]))
    )
    backend.assert_produces(dataset, [([1, 2], 1)] * 10)


@pytest.mark.parametrize("buffer_size", [1, 2, 3, 4])
def test_prefetch(backend: Backend, buffer_size: int) -> None:
    dataset = (
        backend.Dataset.range(100).map(_py_function(backend, lambda x: x * x)).prefetch(buffer_size)
    )
    backend.assert_produces(dataset, [i * i for i in range(100)])


def test_return_list(backend: Backend) -> None:
    dataset = backend.Dataset.range(10).map(lambda x: [x, 37.0])
    backend.assert_produces(dataset, [(i, 37.0) for i in range(10)])


def test_constant_output(backend: Backend) -> None:
    dataset = backend.Dataset.range(10).map(lambda x: [x, "hello", 10])
    backend.assert_produces(dataset, [(i, b"hello", 10) for i in range(10)])


class _Foo:
    pass


def test_return_value_error(backend: Backend) -> None:
    backend.assert_raises_when_built_or_read(
        lambda: backend.Dataset.from_tensors([1.0, 2.0, 3.0]).map(lambda x: _Foo),
        TypeError,
        backend.tf_message(r"Unsupported return value from function passed to Dataset.map\(\)"),
    )


_SHORT_CIRCUIT_CASES = [
    ("identity", None, lambda x: x),
    ("replicate", None, lambda x: (x, x)),
    ("swap", (None, None), lambda x, y: (y, x)),
    ("project", (None, None), lambda x, y: x),
]


def _structured_dataset(backend: Backend, structure: Any) -> Any:
    if structure is None:
        return backend.Dataset.from_tensors(np.zeros([], np.int64))
    return backend.Dataset.zip(tuple(_structured_dataset(backend, s) for s in structure))


def _structured_element(structure: Any) -> Any:
    if structure is None:
        return np.zeros([], np.int64)
    return tuple(_structured_element(s) for s in structure)


@pytest.mark.parametrize("num_parallel_calls", [None, 12])
@pytest.mark.parametrize(
    ("structure", "fn"),
    [case[1:] for case in _SHORT_CIRCUIT_CASES],
    ids=[case[0] for case in _SHORT_CIRCUIT_CASES],
)
def test_short_circuit(
    backend: Backend, structure: Any, fn: Any, num_parallel_calls: int | None
) -> None:
    dataset = _structured_dataset(backend, structure).repeat()
    dataset = dataset.map(fn, num_parallel_calls=num_parallel_calls)
    element = _structured_element(structure)
    expected = fn(*element) if isinstance(structure, tuple) else fn(element)
    assert backend.outputs(dataset, limit=1) == [expected]


@pytest.mark.parametrize("num_parallel_calls", [None, 12])
def test_short_circuit_captured_input(backend: Backend, num_parallel_calls: int | None) -> None:
    captured = np.int64(42)
    dataset = _structured_dataset(backend, None).repeat()
    dataset = dataset.map(lambda x: captured, num_parallel_calls=num_parallel_calls)
    assert backend.outputs(dataset, limit=1) == [42]


@pytest.mark.parametrize("num_parallel_calls", [None, 12])
def test_preserve_cardinality(backend: Backend, num_parallel_calls: int | None) -> None:
    def py_fn(_: Any) -> Any:
        raise StopIteration()

    dataset = backend.Dataset.from_tensors(0).map(
        _py_function(backend, py_fn), num_parallel_calls=num_parallel_calls
    )
    error = (
        backend.InvalidArgumentError
        if backend.is_tf
        else (backend.InvalidArgumentError, RuntimeError)
    )
    with pytest.raises(error):
        next(iter(dataset))


@pytest.mark.parametrize("local_determinism", [None, True, False])
def test_determinism_configuration(backend: Backend, local_determinism: bool | None) -> None:
    elements = list(range(100))

    def sleep(x: Any) -> Any:
        if x == 0:
            time.sleep(0.05)
        return x

    dataset = backend.Dataset.from_tensor_slices(np.array(elements, np.int64)).map(
        _py_function(backend, sleep), num_parallel_calls=2, deterministic=local_determinism
    )
    actual = [int(x) for x in backend.outputs(dataset)]
    if local_determinism is False:
        assert sorted(actual) == elements
    else:
        assert actual == elements


@pipestate_differs(
    "docs/ops.md#differences-from-tfdata: None is not an element value (a function that "
    "returns None by mistake fails at once)"
)
def test_none_component(backend: Backend) -> None:
    def map_function(x: Any, y: Any) -> Any:
        if y is None:
            return x / 2
        return x

    dataset = backend.Dataset.from_tensors((42, None)).map(map_function)
    backend.assert_produces(dataset, [21.0])


def test_map_calls_the_function_once_per_element(backend: Backend) -> None:
    seen = []
    lock = threading.Lock()

    def record(x: Any) -> Any:
        with lock:
            seen.append(int(x))
        return x

    dataset = backend.Dataset.range(20).map(_py_function(backend, record), num_parallel_calls=4)
    assert [int(x) for x in backend.outputs(dataset)] == list(range(20))
    assert sorted(seen) == list(range(20))


def _build_core(backend: Backend, num_parallel_calls: int | None) -> Any:
    return (
        backend.Dataset.from_tensor_slices(COMPONENTS)
        .map(_square, num_parallel_calls=num_parallel_calls)
        .repeat(2)
    )


@verify_fns
@pytest.mark.parametrize("num_parallel_calls", [None, 2])
def test_map_checkpoint_core(
    backend: Backend, verify_fn: str, num_parallel_calls: int | None
) -> None:
    getattr(backend, verify_fn)(lambda: _build_core(backend, num_parallel_calls), 14)


@pytest.mark.parametrize("num_parallel_calls", [None, 2])
def test_save_stateful_function(backend: Backend, num_parallel_calls: int | None) -> None:
    if backend.is_tf:
        tf = backend.module

        def build() -> Any:
            def map_fn(x: Any) -> Any:
                return tf.random.uniform((), 0, 10, dtype=tf.int32) * tf.cast(x, tf.int32)

            return backend.Dataset.range(100).map(map_fn, num_parallel_calls=num_parallel_calls)
    else:
        rng = np.random.default_rng()

        def build() -> Any:
            return backend.Dataset.range(100).map(
                lambda x: rng.integers(0, 10) * x,
                num_parallel_calls=num_parallel_calls,
                stateful=True,
            )

    backend.verify_error_on_save(build, 15, backend.ExternalStateError)


@verify_fns
@pytest.mark.parametrize("num_parallel_calls", [None, 2])
def test_capture_constant_in_map_fn(
    backend: Backend, verify_fn: str, num_parallel_calls: int | None
) -> None:
    constant = np.int32(5)

    def build() -> Any:
        return (
            backend.Dataset.from_tensors(np.int32(0))
            .repeat(10)
            .map(lambda x: x + constant, num_parallel_calls=num_parallel_calls)
        )

    getattr(backend, verify_fn)(build, 10)


@verify_fns
@pytest.mark.parametrize("num_parallel_calls", [None, 2])
def test_nested_functions_in_map_fn(
    backend: Backend, verify_fn: str, num_parallel_calls: int | None
) -> None:
    def inner(x: Any) -> Any:
        return 1000 + x

    def outer(x: Any) -> Any:
        return 11000 + inner(x)

    def build() -> Any:
        return backend.Dataset.range(10).map(outer, num_parallel_calls=num_parallel_calls)

    getattr(backend, verify_fn)(build, 10)


@pytest.mark.parametrize(
    "index",
    [
        NEGATIVE_INDEX,
        4,
        5,
    ],
)
def test_random_access_invalid_index(backend: Backend, index: int) -> None:
    dataset = backend.Dataset.from_tensor_slices([-1, 0, 1, 2]).map(lambda x: x * 2)
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(dataset, index)


@pytest.mark.parametrize("index", [-1, 0])
def test_random_access_empty_dataset(backend: Backend, index: int) -> None:
    dataset = backend.Dataset.from_tensor_slices(np.array([], np.float32)).map(lambda x: x // 2)
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(dataset, index)


def test_random_access(backend: Backend) -> None:
    dataset = backend.Dataset.from_tensor_slices([0, 1, 2, 3, 4, 5]).map(lambda x: x * 3)
    for i in range(5):
        assert backend.at(dataset, i) == i * 3


@pytest.mark.parametrize("elements", [0, 10, 20, 40])
@pytest.mark.parametrize("num_parallel_calls", [None, 2])
def test_random_access_multiple_combinations(
    backend: Backend, elements: int, num_parallel_calls: int | None
) -> None:
    dataset = backend.Dataset.range(elements).map(
        lambda x: x // 2, num_parallel_calls=num_parallel_calls
    )
    for i in range(elements):
        assert backend.at(dataset, i) == i // 2
