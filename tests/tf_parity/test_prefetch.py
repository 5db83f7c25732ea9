"""tf.data's ``prefetch_test.py`` (PrefetchTest, PrefetchCheckpointTest, PrefetchRandomAccessTest).

Left out:
- testPrefetchWithSlack: ``slack_period`` is an argument of tf.data's internal
  ``PrefetchDataset``.
- testPrefetchCancellation: TF1 sessions.
- testName: the ``name=`` argument is tf.data's graph-naming machinery.
- the ``symbolic_checkpoint`` option of the checkpoint test: a TensorFlow-only option.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ._base import NEGATIVE_INDEX, Backend, verify_fns


@pytest.mark.parametrize("buffer_size", [-1, None, 0, 42])
def test_buffer_size(backend: Backend, buffer_size: int | None) -> None:
    dataset = backend.Dataset.range(10).prefetch(buffer_size=buffer_size)
    backend.assert_produces(dataset, list(range(10)))


def test_autotune(backend: Backend) -> None:
    dataset = backend.Dataset.range(10).prefetch(backend.data.AUTOTUNE)
    backend.assert_produces(dataset, list(range(10)))
    assert backend.cardinality(dataset) == 10


@pytest.mark.parametrize("buffer_size", [-2, -42])
def test_invalid_buffer_size(backend: Backend, buffer_size: int) -> None:
    backend.assert_raises_when_built_or_read(
        lambda: backend.Dataset.range(10).prefetch(buffer_size=buffer_size),
        backend.ArgumentError,
    )


def test_prefetch_of_a_streaming_pipeline(backend: Backend) -> None:
    dataset = backend.Dataset.range(30).filter(lambda x: x % 3 == 0).batch(2).prefetch(3)
    backend.assert_produces(dataset, [[0, 3], [6, 9], [12, 15], [18, 21], [24, 27]])


def _build_dataset(backend: Backend, seed: int) -> Any:
    return (
        backend.Dataset.range(100)
        .prefetch(10)
        .shuffle(buffer_size=10, seed=seed, reshuffle_each_iteration=False)
    )


@verify_fns
def test_prefetch_checkpoint(backend: Backend, verify_fn: str) -> None:
    getattr(backend, verify_fn)(lambda: _build_dataset(backend, 10), 100)


@verify_fns
def test_map_prefetch_checkpoint(backend: Backend, verify_fn: str) -> None:
    getattr(backend, verify_fn)(
        lambda: backend.Dataset.range(20).map(lambda x: x * 3).prefetch(5), 20
    )


@pytest.mark.parametrize(
    "index",
    [
        NEGATIVE_INDEX,
        10,
        11,
    ],
)
def test_random_access_invalid_index(backend: Backend, index: int) -> None:
    dataset = backend.Dataset.range(10).prefetch(buffer_size=5)
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(dataset, index)


@pytest.mark.parametrize("index", [-1, 0])
def test_random_access_empty_dataset(backend: Backend, index: int) -> None:
    dataset = backend.Dataset.from_tensor_slices(np.array([], np.float32)).prefetch(buffer_size=2)
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(dataset, index)


@pytest.mark.parametrize("buffer_size", [1, 3, 100])
def test_random_access(backend: Backend, buffer_size: int) -> None:
    dataset = backend.Dataset.range(10).prefetch(buffer_size)
    for i in range(10):
        assert backend.at(dataset, i) == i
