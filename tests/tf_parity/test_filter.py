"""tf.data's ``filter_test.py`` against pipestate and TensorFlow.

Left out of tf.data's tests:
- FilterTest.testSparse, FilterCheckpointTest.testSparse: tf.sparse tensors.
- FilterTest.testName: the ``name=`` argument of tf.data ops (pipestate has none).
- FilterTest.testPredicateFailWithErrorContext: TF's integer division by zero and its
  error-context message are TensorFlow kernel behaviour (NumPy returns 0 with a warning).
- the ``filter_with_legacy_function`` and TF1 graph-mode combinations: TF1 only.
- the ``symbolic_checkpoint`` combinations: a TensorFlow-only option; each case runs once.
"""

from __future__ import annotations

import numpy as np
import pytest

from ._base import Backend, verify_fns
from ._base_b import global_shuffle, random_access_error, tensor_ops, verify

COMPONENTS = (
    np.arange(7, dtype=np.int64),
    np.array([[1, 2, 3]], dtype=np.int64) * np.arange(7, dtype=np.int64)[:, np.newaxis],
    np.array(37.0, dtype=np.float64) * np.arange(7),
)


@pytest.mark.parametrize(("count", "modulus"), [(14, 2), (4, 18), (0, 1)])
def test_filter_dataset(backend: Backend, count: int, modulus: int) -> None:
    dataset = (
        backend.Dataset.from_tensor_slices(COMPONENTS)
        .map(lambda x, y, z: (x * x, y * y, z * z))
        .repeat(count)
        .filter(lambda x, _y, _z: x % modulus == 0)
    )
    expected = [
        tuple(c[i] ** 2 for c in COMPONENTS)
        for _ in range(count)
        for i in range(7)
        if i**2 % modulus == 0
    ]
    backend.assert_produces(dataset, expected, expected_shapes=((), (3,), ()))


def test_filter_range(backend: Backend) -> None:
    dataset = backend.Dataset.range(4).filter(lambda x: x % 3 != 2)
    backend.assert_produces(dataset, [0, 1, 3])


def test_filter_dict(backend: Backend) -> None:
    dataset = (
        backend.Dataset.range(10)
        .map(lambda x: {"foo": x * 2, "bar": x**2})
        .filter(lambda d: d["bar"] % 2 == 0)
        .map(lambda d: d["foo"] + d["bar"])
    )
    backend.assert_produces(dataset, [i * 2 + i**2 for i in range(10) if not (i**2) % 2])


def test_use_step_container_in_filter(backend: Backend) -> None:
    ops = tensor_ops(backend)
    dataset = backend.Dataset.from_tensor_slices([[1, 2, 3], [4, 5, 6]]).filter(
        lambda xs: ops.reduce_sum(xs * xs) == 1 + 4 + 9
    )
    backend.assert_produces(dataset, [[1, 2, 3]])


def test_short_circuit(backend: Backend) -> None:
    dataset = backend.Dataset.zip(
        (backend.Dataset.range(10), backend.Dataset.from_tensors(True).repeat(None))
    ).filter(lambda x, y: y)
    backend.assert_produces(dataset, [(i, True) for i in range(10)])


def test_parallel_filters(backend: Backend) -> None:
    dataset = backend.Dataset.range(10).filter(lambda x: x % 2 == 0)
    iterators = [backend.iterate(dataset) for _ in range(10)]
    assert [int(next(iterator)) for iterator in iterators] == [0] * 10


# FilterCheckpointTest


@verify_fns
def test_checkpoint(backend: Backend, verify_fn: str) -> None:
    def build() -> object:
        return backend.Dataset.range(100).filter(lambda x: x % 3 != 2)

    verify(backend, verify_fn, build, sum(x % 3 != 2 for x in range(100)))


@verify_fns
def test_checkpoint_dict(backend: Backend, verify_fn: str) -> None:
    def build() -> object:
        return (
            backend.Dataset.range(10)
            .map(lambda x: {"foo": x * 2, "bar": x**2})
            .filter(lambda d: d["bar"] % 2 == 0)
            .map(lambda d: d["foo"] + d["bar"])
        )

    verify(backend, verify_fn, build, sum((x**2) % 2 == 0 for x in range(10)))


# FilterGlobalShuffleTest


def test_global_shuffle_then_filter(backend: Backend) -> None:
    dataset = global_shuffle(backend, backend.Dataset.range(100))
    dataset = dataset.filter(lambda x: x % 2 == 0)
    backend.assert_produces(dataset, list(range(0, 100, 2)), assert_items_equal=True)


def test_filter_then_global_shuffle(backend: Backend) -> None:
    dataset = backend.Dataset.range(100).filter(lambda x: x % 2 == 0)
    with pytest.raises(random_access_error(backend), match=r"random.access"):
        backend.outputs(global_shuffle(backend, dataset))


# FilterGlobalShuffleCheckpointTest


@verify_fns
@pytest.mark.parametrize("reshuffle_each_iteration", [True, False])
def test_global_shuffle_then_filter_checkpoint(
    backend: Backend, verify_fn: str, reshuffle_each_iteration: bool
) -> None:
    def build() -> object:
        dataset = global_shuffle(
            backend,
            backend.Dataset.range(10),
            seed=42,
            reshuffle_each_iteration=reshuffle_each_iteration,
        )
        return dataset.filter(lambda x: x % 2 == 0)

    verify(backend, verify_fn, build, 5, assert_items_equal=reshuffle_each_iteration)
