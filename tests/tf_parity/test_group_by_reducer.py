"""tf.data's ``group_by_reducer_test.py`` (experimental) against pipestate and TensorFlow.

pipestate's ``Dataset.group_by_reducer(key_func, reducer)`` is tf.data's
``dataset.apply(tf.data.experimental.group_by_reducer(key_func, reducer))``.

Left out of tf.data's tests:
- GroupByReducerTest.testSparseSum: tf.sparse tensors.
- testInvalidKeyShape / testInvalidKeyType: TF checks the key at graph construction;
  pipestate checks it at the first element (tested in tests/data/ops/test_group_by_reducer.py).
- the static-shape assertions: TF's shape inference (the values are checked).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ._base import Backend


def _reducer(backend: Backend, *funcs: Any) -> Any:
    if backend.is_tf:
        return backend.data.experimental.Reducer(*funcs)
    return backend.data.Reducer(*funcs)


def _grouped(backend: Backend, dataset: Any, key_func: Any, reducer: Any) -> Any:
    if backend.is_tf:
        return dataset.apply(backend.data.experimental.group_by_reducer(key_func, reducer))
    return dataset.group_by_reducer(key_func, reducer)


@pytest.mark.parametrize("i", range(1, 11))
def test_sum(backend: Backend, i: int) -> None:
    reducer = _reducer(backend, lambda _: np.int64(0), lambda x, y: x + y, lambda x: x)
    dataset = _grouped(backend, backend.Dataset.range(2 * i), lambda x: x % 2, reducer)
    backend.assert_produces(dataset, [(i - 1) * i, i * i])


@pytest.mark.parametrize("i", range(1, 11))
def test_average(backend: Backend, i: int) -> None:
    def reduce_fn(x: Any, y: Any) -> Any:
        if backend.is_tf:
            y = backend.module.cast(y, "float32")
        return (x[0] * x[1] + y) / (x[1] + 1), x[1] + 1

    reducer = _reducer(backend, lambda _: (0.0, 0.0), reduce_fn, lambda x, _: x)
    dataset = _grouped(backend, backend.Dataset.range(2 * i), lambda x: x % 2, reducer)
    backend.assert_produces(dataset, [float(i - 1), float(i)])


@pytest.mark.parametrize("i", range(1, 11))
def test_concat(backend: Backend, i: int) -> None:
    components = np.array(list("abcdefghijklmnopqrst"))
    reducer = _reducer(backend, lambda x: "", lambda x, y: x + y[0], lambda x: x)
    dataset = backend.Dataset.zip(
        (backend.Dataset.from_tensor_slices(components), backend.Dataset.range(2 * i))
    )
    dataset = _grouped(backend, dataset, lambda x, y: y % 2, reducer)
    backend.assert_produces(dataset, [b"acegikmoqs"[:i], b"bdfhjlnprt"[:i]])


@pytest.mark.parametrize("i", range(1, 11))
def test_changing_state_shape(backend: Backend, i: int) -> None:
    if backend.is_tf:
        tf = backend.module

        def reduce_fn(x: Any, _: Any) -> Any:
            return tf.concat([x[0], x[0]], 0), tf.expand_dims(x[1], 0)
    else:

        def reduce_fn(x: Any, _: Any) -> Any:
            return np.concatenate([x[0], x[0]]), np.expand_dims(x[1], 0)

    reducer = _reducer(backend, lambda x: ([0], 1), reduce_fn, lambda x, y: (x, y))
    dataset = backend.Dataset.from_tensors(np.int64(0)).repeat(i)
    dataset = _grouped(backend, dataset, lambda x: x, reducer)
    ((x, y),) = backend.outputs(dataset)
    np.testing.assert_array_equal(x, [0] * (2**i))
    np.testing.assert_array_equal(y, np.array(1, ndmin=i))


def test_type_mismatch(backend: Backend) -> None:
    reducer = _reducer(
        backend,
        lambda x: np.int32(1),
        lambda x, y: np.int64(1),
        lambda x: x,
    )

    def build() -> Any:
        return _grouped(backend, backend.Dataset.range(10), lambda _: np.int64(0), reducer)

    backend.assert_raises_when_built_or_read(
        build,
        TypeError,
        backend.tf_message("The element types for the new state .* do not match")
        or "must keep the initial state's structure and dtypes",
    )


def test_tuple(backend: Backend) -> None:
    def init_fn(_: Any) -> Any:
        return np.array([], dtype=np.int64), np.int64(0)

    def reduce_fn(state: Any, value: Any) -> Any:
        s1, s2 = state
        v1, v2 = value
        if backend.is_tf:
            return backend.module.concat([s1, [v1]], 0), s2 + v2
        return np.append(s1, v1), s2 + v2

    reducer = _reducer(backend, init_fn, reduce_fn, lambda s1, s2: (s1, s2))
    dataset = backend.Dataset.zip((backend.Dataset.range(10), backend.Dataset.range(10)))
    dataset = _grouped(backend, dataset, lambda x, y: np.int64(0), reducer)
    backend.assert_produces(dataset, [(np.arange(10), 45)])
