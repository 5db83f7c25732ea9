"""tf.data's ``reduce_test.py`` and ``get_single_element_test.py`` against pipestate and
TensorFlow.

Left out of tf.data's tests: the sparse-tensor cases (testSparse, testNested's
sparse part, testBasic's sparse component: pipestate has no sparse tensors),
placeholders (TF1 graph mode), testWindow (``window`` is another op),
testSideEffect and testAutomaticControlDependencies (``tf.function`` and
variables).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ._base import Backend


def test_sum(backend: Backend) -> None:
    for i in range(10):
        ds = backend.Dataset.range(1, i + 1)
        result = ds.reduce(np.int64(0), lambda x, y: x + y)
        assert int(result) == ((i + 1) * i) // 2


def test_sum_tuple(backend: Backend) -> None:
    def reduce_fn(state: Any, value: Any) -> Any:
        v1, v2 = value
        return state + v1 + v2

    for i in range(10):
        ds = backend.Dataset.range(1, i + 1)
        ds = backend.Dataset.zip((ds, ds))
        assert int(ds.reduce(np.int64(0), reduce_fn)) == (i + 1) * i


def test_sum_and_count(backend: Backend) -> None:
    def reduce_fn(state: Any, value: Any) -> Any:
        s, c = state
        return s + value, c + 1

    for i in range(10):
        ds = backend.Dataset.range(1, i + 1)
        s, c = ds.reduce((np.int64(0), np.int64(0)), reduce_fn)
        assert int(s) == ((i + 1) * i) // 2
        assert int(c) == i


def test_nested(backend: Backend) -> None:
    def reduce_fn(state: Any, value: Any) -> Any:
        state["dense"] += value["dense"]
        return state

    for i in range(10):
        ds = backend.Dataset.range(1, i + 1).map(lambda x: {"dense": x})
        result = ds.reduce({"dense": np.int64(0)}, reduce_fn)
        assert int(result["dense"]) == ((i + 1) * i) // 2


def test_state_dtype_must_not_change(backend: Backend) -> None:
    cast = (
        (lambda s: backend.module.cast(s, backend.module.float32))
        if backend.is_tf
        else (lambda s: np.float32(s))
    )
    with pytest.raises(
        TypeError, match="The element types for the new state must match the initial state"
    ):
        backend.Dataset.range(5).reduce(np.int64(0), lambda s, x: cast(s))


# GetSingleElementTest


@pytest.mark.parametrize(
    ("skip", "take", "error_msg"),
    [
        (0, 1, None),
        (5, 1, None),
        (10, 1, None),
        (100, 1, "Dataset was empty."),
        (0, 2, "Dataset had more than one element."),
    ],
)
def test_get_single_element(backend: Backend, skip: int, take: int, error_msg: str | None) -> None:
    dataset = backend.Dataset.range(100).skip(skip).map(lambda x: (x * x, x)).take(take)
    if error_msg is None:
        dense_val, value = backend.to_numpy(dataset.get_single_element())
        assert int(dense_val) == skip * skip
        assert int(value) == skip
    else:
        with pytest.raises(backend.InvalidArgumentError, match=error_msg):
            dataset.get_single_element()


def test_get_single_element_name(backend: Backend) -> None:
    dataset = backend.Dataset.from_tensors(42)
    assert int(dataset.get_single_element(name="get_single_element")) == 42
