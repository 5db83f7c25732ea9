"""tf.data's ``group_by_window_test.py`` against pipestate and TensorFlow.

Left out of tf.data's tests:
- GroupByWindowTest.testSimple, testConsumeWindowDatasetMoreThanOnce: random inputs
  (``np.random.randint``) whose checks are statistical; tests/data/ops/test_group_by_window.py
  checks windows reduced twice.
- GroupByWindowTest.testReduceFuncError: a negative padded shape given as a tensor,
  which pipestate refuses when ``padded_batch`` is called (tested there).
- GroupByWindowTest.testGroupByWindowWithAutotune: a parallel map's autotuning.
- GroupByWindowTest.testName: the ``name=`` argument (tested in the op's tests).
- the string component of testSingleBucket / testEvenOddBuckets (``tf.strings.as_string``).
- the ``symbolic_checkpoint`` combinations: a TensorFlow-only option; each case runs once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ._base import Backend


def _fill(backend: Backend) -> Any:
    """``v -> (v, [v] * v)`` in the backend's ops."""
    if backend.is_tf:
        tf = backend.module
        return lambda v: (v, tf.fill([v], v))
    return lambda v: (v, np.full(int(v), v))


def _dynamic_pad(backend: Backend) -> Any:
    def reduce(bucket: Any, window: Any) -> Any:
        return backend.Dataset.zip(
            (backend.Dataset.from_tensors(bucket), window.padded_batch(32, ([], [None])))
        )

    return reduce


def test_single_bucket(backend: Backend) -> None:
    dataset = (
        backend.Dataset.range(32)
        .map(_fill(backend))
        .group_by_window(
            key_func=lambda x, y: 0,
            reduce_func=_dynamic_pad(backend),
            window_size=32,
        )
    )
    which_bucket, (scalars, padded) = next(backend.iterate(dataset))
    assert which_bucket == 0
    expected_unk_int64 = np.zeros((32, 31), np.int64)
    for i in range(32):
        expected_unk_int64[i, :i] = i
    np.testing.assert_array_equal(scalars, np.arange(32))
    np.testing.assert_array_equal(padded, expected_unk_int64)


def test_even_odd_buckets(backend: Backend) -> None:
    dataset = (
        backend.Dataset.range(64)
        .map(_fill(backend))
        .group_by_window(
            key_func=lambda x, y: x % 2, reduce_func=_dynamic_pad(backend), window_size=32
        )
    )
    iterator = backend.iterate(dataset)
    for parity in (0, 1):
        which_bucket, (scalars, padded) = next(iterator)
        assert which_bucket == parity
        np.testing.assert_array_equal(scalars, np.arange(parity, 64, 2))
        expected = np.zeros((32, 62 + parity), np.int64)
        for i in range(32):
            expected[i, : 2 * i + parity] = 2 * i + parity
        np.testing.assert_array_equal(padded, expected)


def test_even_odd_buckets_filter_out_all_odd(backend: Backend) -> None:
    dataset = (
        backend.Dataset.range(128)
        .map(lambda v: {"x": v})
        .filter(lambda d: d["x"] % 2 == 0)
        .group_by_window(
            key_func=lambda d: d["x"] % 2,
            reduce_func=lambda k, window: window.batch(32),
            window_size=32,
        )
    )
    first, second = backend.outputs(dataset)
    np.testing.assert_array_equal(first["x"], np.arange(0, 64, 2))
    np.testing.assert_array_equal(second["x"], np.arange(64, 128, 2))


def test_dynamic_window_size(backend: Backend) -> None:
    def window_size_func(key: Any) -> Any:
        if backend.is_tf:
            return backend.module.constant([5, 10], dtype="int64")[key]
        return np.array([5, 10], np.int64)[key]

    dataset = backend.Dataset.from_tensor_slices(np.arange(100, dtype=np.int64)).group_by_window(
        key_func=lambda x: x % 2,
        reduce_func=lambda _, xs: xs.batch(20),
        window_size=None,
        window_size_func=window_size_func,
    )
    batches = backend.outputs(dataset)
    assert len(batches) == 15
    for result in batches:
        is_even = all(x % 2 == 0 for x in result)
        assert is_even or all(x % 2 == 1 for x in result)
        assert result.shape[0] == (5 if is_even else 10)


COMPONENTS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 0, 0, 2, 2, 0, 0], dtype=np.int64)


def test_immediate_output(backend: Backend) -> None:
    dataset = (
        backend.Dataset.from_tensor_slices(COMPONENTS)
        .repeat(-1)
        .group_by_window(
            key_func=lambda x: x % 3, reduce_func=lambda _, xs: xs.batch(4), window_size=4
        )
    )
    outputs = backend.outputs(dataset, limit=12)
    expected = [[0] * 4, [1] * 4, [2] * 4, [0] * 4] * 3
    assert [o.tolist() for o in outputs] == expected


def test_small_groups(backend: Backend) -> None:
    components = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0], dtype=np.int64)
    dataset = backend.Dataset.from_tensor_slices(components).group_by_window(
        key_func=lambda x: x % 2, reduce_func=lambda _, xs: xs.batch(4), window_size=4
    )
    backend.assert_produces(dataset, [[0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0], [1]])


def test_empty(backend: Backend) -> None:
    def build() -> Any:
        return backend.Dataset.range(4).group_by_window(
            key_func=lambda _: np.int64(0), reduce_func=lambda _, xs: xs, window_size=0
        )

    backend.assert_raises_when_built_or_read(
        build, backend.InvalidArgumentError, r"(?i)Window size must be greater than zero, but got 0"
    )


def test_short_circuit(backend: Backend) -> None:
    dataset = backend.Dataset.range(10).group_by_window(
        key_func=lambda x: x, reduce_func=lambda _, window: window.batch(1), window_size=1
    )
    backend.assert_produces(dataset, [[i] for i in range(10)])


def test_group_by_window_cardinality(backend: Backend) -> None:
    dataset = (
        backend.Dataset.range(1)
        .repeat()
        .group_by_window(
            key_func=lambda x: x % 2,
            reduce_func=lambda key, window: backend.Dataset.from_tensors(key),
            window_size=4,
        )
    )
    assert backend.cardinality(dataset) == backend.INFINITE
    finite = backend.Dataset.range(5).group_by_window(
        key_func=lambda x: x % 2, reduce_func=lambda key, w: w, window_size=2
    )
    assert backend.cardinality(finite) == backend.UNKNOWN


# GroupByWindowCheckpointTest


@pytest.mark.parametrize(
    "verify_fn",
    ["verify_unused_iterator", "verify_multiple_breaks", "verify_reset_restored_iterator"],
)
def test_checkpoint(backend: Backend, verify_fn: str) -> None:
    def build() -> Any:
        return (
            backend.Dataset.from_tensor_slices(COMPONENTS)
            .repeat(-1)
            .group_by_window(
                key_func=lambda x: x % 3, reduce_func=lambda _, xs: xs.batch(4), window_size=4
            )
        )

    getattr(backend, verify_fn)(build, 12, verify_exhausted=False)
