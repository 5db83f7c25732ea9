"""tf.data's ``unique_test.py`` against pipestate and TensorFlow.

The generators yield arrays where tf.data's yield lists (a list a pipestate
generator yields is a tuple element: docs/ops.md).

Left out of tf.data's tests:
- UniqueTest.testUnsupportedTypes's quantized dtypes (qint16, qint32): TensorFlow-only.
- UniqueTest.testName: the ``name=`` argument (tested in tests/data/ops/test_unique.py).
- the ``symbolic_checkpoint`` combinations: a TensorFlow-only option; each case runs once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ._base import Backend, verify_fns
from ._base_b import verify

INT_CASES = [
    ([], []),
    ([1], [1]),
    ([1, 1, 1, 1, 1, 1, 1], [1]),
    ([1, 1, 1, 1, 0], [1, 0]),
    ([1, 2, 3, 4], [1, 2, 3, 4]),
    ([1, 2, 4, 3, 2, 1, 2, 3, 4], [1, 2, 4, 3]),
    ([[1], [1, 1], [1, 1, 1]], [[1], [1, 1], [1, 1, 1]]),
    ([[1, 1], [1, 1], [2, 2], [3, 3], [1, 1]], [[1, 1], [2, 2], [3, 3]]),
]
STRING_CASES = [
    ([], []),
    (["hello"], ["hello"]),
    (["hello", "hello", "hello"], ["hello"]),
    (["hello", "world"], ["hello", "world"]),
    (["foo", "bar", "baz", "baz", "bar", "foo"], ["foo", "bar", "baz"]),
]


def _unique_of(backend: Backend, values: list[Any], dtype: Any) -> Any:
    def generator() -> Any:
        for value in values:
            yield np.asarray(value, dtype) if dtype != "string" else value.encode()

    if backend.is_tf:
        tf = backend.module
        return backend.Dataset.from_generator(generator, tf.as_dtype(dtype)).unique()
    return (
        backend.Dataset.from_generator(generator)
        .with_options(backend.data.Options(external_state_policy="ignore"))
        .unique()
    )


@pytest.mark.parametrize("dtype", ["int32", "int64"])
@pytest.mark.parametrize(("values", "expected"), INT_CASES)
def test_simple_int(backend: Backend, dtype: str, values: list[Any], expected: list[Any]) -> None:
    dataset = _unique_of(backend, values, dtype)
    backend.assert_produces(dataset, [np.asarray(e, dtype) for e in expected])


@pytest.mark.parametrize(("values", "expected"), STRING_CASES)
def test_simple_string(backend: Backend, values: list[str], expected: list[str]) -> None:
    dataset = _unique_of(backend, values, "string")
    backend.assert_produces(dataset, [e.encode() for e in expected])


@pytest.mark.parametrize("dtype", ["bool", "float64", "complex64", "float32"])
def test_unsupported_types(backend: Backend, dtype: str) -> None:
    with pytest.raises(TypeError):
        backend.Dataset.from_tensor_slices(np.zeros(3, dtype)).unique()


def test_cardinality(backend: Backend) -> None:
    assert backend.cardinality(backend.Dataset.range(6).unique()) == backend.UNKNOWN
    assert backend.cardinality(backend.Dataset.range(6).repeat().unique()) == backend.UNKNOWN


# UniqueCheckpointTest


@verify_fns
def test_checkpoint(backend: Backend, verify_fn: str) -> None:
    def build() -> Any:
        return backend.Dataset.range(200).map(lambda x: x % 100).unique()

    verify(backend, verify_fn, build, 100)
