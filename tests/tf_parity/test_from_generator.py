"""tf.data's ``from_generator_test.py`` against pipestate and TensorFlow.

tf.data's tests give ``output_types`` / ``output_shapes``; pipestate takes only
``output_signature`` (docs/sources.md, ``from_generator``), so the same
types and shapes are given as a signature of tensor specs on both backends.

An element that does not fit the signature raises ``InvalidArgumentError`` in
tf.data and ``TypeError`` (structure, dtype) or ``ValueError`` (shape) in
pipestate (docs/sources.md, ``from_generator``); the tests accept each
backend's documented error and check what matters here, that the next element
comes out after it.

Left out of tf.data's tests:
- the ``requires_initialization`` combinations: TF1 initializable iterators.
- DISABLED_testFromGeneratorsRunningInParallel: disabled in tf.data itself.
- testGeneratorDatasetFinalizeFunctionCalled: TF's internal ``_GeneratorDataset``.
- testSharedName: TF1 shared iterators.
- testFromGeneratorRaggedTensor, testFromGeneratorSparseTensor: ragged and sparse tensors.
- testName: the ``name=`` argument of tf.data ops.
- testTypeIsListError, testDimensionIsListError: checks of ``output_types`` /
  ``output_shapes``, arguments pipestate does not have.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pytest

from ._base import Backend
from ._base_b import spec


def _conversion_errors(backend: Backend) -> tuple[type[BaseException], ...]:
    """The errors of an element that does not fit ``output_signature``."""
    if backend.is_tf:
        return (backend.InvalidArgumentError,)
    return (TypeError, ValueError)


def _gen_fn() -> Iterable[list[int]]:
    for i in range(1, 100):
        yield [i] * i


GENERATORS: dict[str, Callable[[], Iterable[Any]]] = {
    "fn": _gen_fn,
    "list": lambda: [[i] * i for i in range(1, 100)],
    "ndarray": lambda: np.arange(100, dtype=np.int64),
    "generator-expression": lambda: ([i] * i for i in range(1, 100)),
}


@pytest.mark.parametrize("num_repeats", [1, 2])
@pytest.mark.parametrize("generator", sorted(GENERATORS))
def test_from_generator(backend: Backend, generator: str, num_repeats: int) -> None:
    generator_fn = GENERATORS[generator]
    elements = list(generator_fn())
    dataset = (
        backend.Dataset.from_generator(generator_fn, output_signature=spec(backend, None, np.int64))
        .repeat(num_repeats)
        .prefetch(5)
    )
    backend.assert_produces(dataset, elements * num_repeats, num_test_iterations=2)


def test_from_multiple_concurrent_generators(backend: Backend) -> None:
    num_inner_repeats = 5
    num_outer_repeats = 20

    def generator() -> Iterable[tuple[list[int], list[int]]]:
        for i in range(1, 10):
            yield ([i] * i, [i, i**2, i**3])

    input_list = list(generator())
    signature = (spec(backend, [None], np.int64), spec(backend, [3], np.int64))

    # Several iterators of one from_generator dataset are open at once in the
    # interleave, and each prefetches.
    def interleave_fn(_: Any) -> Any:
        return (
            backend.Dataset.from_generator(generator, output_signature=signature)
            .repeat(num_inner_repeats)
            .prefetch(5)
        )

    dataset = backend.Dataset.range(num_outer_repeats).interleave(
        interleave_fn, cycle_length=10, block_length=len(input_list)
    )
    expected = input_list * (num_inner_repeats * num_outer_repeats)
    backend.assert_produces(dataset, [(np.array(a), np.array(b)) for a, b in expected])


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64])
def test_from_generator_implicit_conversion(backend: Backend, dtype: Any) -> None:
    def generator() -> Iterable[list[int]]:
        yield [1]
        yield [2]
        yield [3]

    dataset = backend.Dataset.from_generator(generator, output_signature=spec(backend, [1], dtype))
    backend.assert_produces(dataset, [np.array([i], dtype=dtype) for i in (1, 2, 3)])


def test_from_generator_string(backend: Backend) -> None:
    def generator() -> Iterable[Any]:
        yield "foo"
        yield b"bar"
        yield "baz"

    dataset = backend.Dataset.from_generator(
        generator, output_signature=spec(backend, [], "string")
    )
    backend.assert_produces(dataset, [b"foo", b"bar", b"baz"])


def test_from_generator_datastructures(backend: Backend) -> None:
    def generator() -> Iterable[dict[str, Any]]:
        yield {"a": "foo", "b": [1, 2], "c": (9,)}
        yield {"a": "bar", "b": [3], "c": (7, 6)}
        yield {"a": "baz", "b": [5, 6], "c": (5, 4)}

    signature = {
        "a": spec(backend, [], "string"),
        "b": spec(backend, [None], np.int32),
        "c": spec(backend, [None], np.int32),
    }
    dataset = backend.Dataset.from_generator(generator, output_signature=signature)
    backend.assert_produces(
        dataset,
        [
            {"a": b"foo", "b": np.int32([1, 2]), "c": np.int32([9])},
            {"a": b"bar", "b": np.int32([3]), "c": np.int32([7, 6])},
            {"a": b"baz", "b": np.int32([5, 6]), "c": np.int32([5, 4])},
        ],
    )


def test_from_generator_type_error(backend: Backend) -> None:
    def generator() -> Iterable[Any]:
        yield np.array([1, 2, 3], dtype=np.int64)
        yield np.array([4, 5, 6], dtype=np.int64)
        yield "ERROR"
        yield np.array([7, 8, 9], dtype=np.int64)

    dataset = backend.Dataset.from_generator(
        generator, output_signature=spec(backend, [3], np.int64)
    )
    iterator = backend.iterate(dataset)
    np.testing.assert_array_equal(next(iterator), [1, 2, 3])
    np.testing.assert_array_equal(next(iterator), [4, 5, 6])
    with pytest.raises(_conversion_errors(backend)):
        next(iterator)
    np.testing.assert_array_equal(next(iterator), [7, 8, 9])
    with pytest.raises(StopIteration):
        next(iterator)


def test_from_generator_shape_error(backend: Backend) -> None:
    def generator() -> Iterable[Any]:
        yield np.array([1, 2, 3], dtype=np.int64)
        yield np.array([4, 5, 6], dtype=np.int64)
        yield np.array([7, 8, 9, 10], dtype=np.int64)
        yield np.array([11, 12, 13], dtype=np.int64)

    dataset = backend.Dataset.from_generator(
        generator, output_signature=spec(backend, [3], np.int64)
    )
    iterator = backend.iterate(dataset)
    np.testing.assert_array_equal(next(iterator), [1, 2, 3])
    np.testing.assert_array_equal(next(iterator), [4, 5, 6])
    with pytest.raises(_conversion_errors(backend)):
        next(iterator)
    np.testing.assert_array_equal(next(iterator), [11, 12, 13])
    with pytest.raises(StopIteration):
        next(iterator)


def test_from_generator_structure_error(backend: Backend) -> None:
    def generator() -> Iterable[Any]:
        yield 1, 2
        yield 3, 4
        yield 5
        yield 6, 7, 8
        yield 9, 10

    signature = (spec(backend, None, np.int64), spec(backend, None, np.int64))
    dataset = backend.Dataset.from_generator(generator, output_signature=signature)
    iterator = backend.iterate(dataset)
    assert next(iterator) == (1, 2)
    assert next(iterator) == (3, 4)
    with pytest.raises(_conversion_errors(backend)):
        next(iterator)
    with pytest.raises(_conversion_errors(backend)):
        next(iterator)
    assert next(iterator) == (9, 10)
    with pytest.raises(StopIteration):
        next(iterator)


def test_from_generator_heterogeneous(backend: Backend) -> None:
    def generator() -> Iterable[Any]:
        yield 1
        yield [2, 3]

    dataset = backend.Dataset.from_generator(
        generator, output_signature=spec(backend, None, np.int64)
    )
    backend.assert_produces(dataset, [np.int64(1), np.int64([2, 3])])


def test_from_generator_stop_short(backend: Backend) -> None:
    def generator() -> Iterable[int]:
        yield 0
        yield 1
        yield 2

    dataset = backend.Dataset.from_generator(
        generator, output_signature=spec(backend, None, np.int64)
    )
    iterator = backend.iterate(dataset)
    assert next(iterator) == 0
    assert next(iterator) == 1


def test_from_generator_destructor_called(backend: Backend) -> None:
    # Set when the generator object is deleted.
    event = threading.Event()

    class GeneratorWrapper:
        def __iter__(self) -> GeneratorWrapper:
            return self

        def __next__(self) -> int:
            return 42

        def __del__(self) -> None:
            event.set()

    dataset = backend.Dataset.from_generator(
        GeneratorWrapper, output_signature=spec(backend, None, np.int64)
    ).take(2)
    iterator = backend.iterate(dataset)
    assert next(iterator) == 42
    assert next(iterator) == 42
    with pytest.raises(StopIteration):
        next(iterator)
    # The generator is released when the iterator ends, not when it is deleted.
    assert event.is_set()


def test_from_generator_with_args(backend: Backend) -> None:
    def flat_map_fn(elem: Any) -> Any:
        def generator_with_arg(n: Any) -> Iterable[Any]:
            for _ in range(n):
                yield np.array(n, dtype=np.int64)

        return backend.Dataset.from_generator(
            generator_with_arg, output_signature=spec(backend, (), np.int64), args=(elem,)
        )

    dataset = backend.Dataset.range(5).flat_map(flat_map_fn)
    backend.assert_produces(dataset, [1, 2, 2, 3, 3, 3, 4, 4, 4, 4])


def test_from_generator_with_two_args(backend: Backend) -> None:
    def flat_map_fn(elem: Any, message: Any) -> Any:
        def generator_with_arg(n: Any, msg: Any) -> Iterable[Any]:
            for i in range(n):
                yield i, msg

        signature = (spec(backend, (), np.int64), spec(backend, (), "string"))
        return backend.Dataset.from_generator(
            generator_with_arg, output_signature=signature, args=(elem, message)
        )

    dataset = backend.Dataset.zip(
        (backend.Dataset.range(5), backend.Dataset.from_tensors("Hi!").repeat(None))
    ).flat_map(flat_map_fn)
    backend.assert_produces(dataset, [(i, b"Hi!") for n in range(5) for i in range(n)])
