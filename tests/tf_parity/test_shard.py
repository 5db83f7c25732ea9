"""tf.data's ``shard_test.py`` (ShardTest, ShardCheckpointTest, ShardRandomAccessTest).

Left out:
- testName: the ``name=`` argument is tf.data's graph-naming machinery.
- the ``symbolic_checkpoint`` option of the checkpoint test: a TensorFlow-only option.
"""

from __future__ import annotations

import numpy as np
import pytest

from ._base import NEGATIVE_INDEX, Backend, verify_fns


@pytest.mark.parametrize(
    ("num_elements", "num_shards", "index", "expected"),
    [
        (10, 5, 2, [2, 7]),
        (10, 5, 0, [0, 5]),
        (1, 5, 2, []),
        (10, 7, 5, [5]),
        (10, 5, 4, [4, 9]),
        (10, 4, 3, [3, 7]),
        (10, 20, 5, [5]),
    ],
    ids=[
        "simple",
        "offset-zero",
        "ends-before-first-element",
        "larger-worker-pool",
        "index-equals-num-shards",
        "index-equals-num-shards-2",
        "num-shards-larger-than-dataset",
    ],
)
def test_shard(
    backend: Backend, num_elements: int, num_shards: int, index: int, expected: list[int]
) -> None:
    dataset = backend.Dataset.range(num_elements).shard(num_shards, index)
    backend.assert_produces(dataset, expected)
    assert backend.cardinality(dataset) == len(expected)


def test_nested_data(backend: Backend) -> None:
    dataset_a = backend.Dataset.range(10)
    dataset_b = backend.Dataset.range(10, 0, -1)
    dataset = backend.Dataset.zip((dataset_a, dataset_b)).shard(5, 2)
    backend.assert_produces(dataset, [(2, 8), (7, 3)])


@pytest.mark.parametrize(
    ("num_shards", "index"),
    [(5, 7), (5, -3), (-3, 1), (0, 1)],
    ids=["offset-greater-than-num-shards", "negative-offset", "negative-num-shards", "zero-shards"],
)
def test_invalid_arguments(backend: Backend, num_shards: int, index: int) -> None:
    backend.assert_raises_when_built_or_read(
        lambda: backend.Dataset.range(10).shard(num_shards, index), backend.ArgumentError
    )


@verify_fns
@pytest.mark.parametrize("elems", [10, 100])
@pytest.mark.parametrize("num_shards", [2, 5])
@pytest.mark.parametrize("index", [0, 1])
def test_shard_checkpoint(
    backend: Backend, verify_fn: str, elems: int, num_shards: int, index: int
) -> None:
    getattr(backend, verify_fn)(
        lambda: backend.Dataset.range(elems).shard(num_shards, index), elems // num_shards
    )


@pytest.mark.parametrize(
    "index",
    [
        NEGATIVE_INDEX,
        2,
        3,
        4,
    ],
)
def test_random_access_invalid_index(backend: Backend, index: int) -> None:
    dataset = backend.Dataset.range(4).shard(num_shards=2, index=0)
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(dataset, index)


def test_random_access_empty_dataset(backend: Backend) -> None:
    dataset = backend.Dataset.from_tensor_slices(np.array([], np.float32)).shard(
        num_shards=2, index=1
    )
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(dataset, 0)


def test_random_access_num_shards_and_index_less_than_num_elements(backend: Backend) -> None:
    dataset = backend.Dataset.range(10).shard(5, 0)
    assert backend.at(dataset, 0) == 0
    assert backend.at(dataset, 1) == 5
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(dataset, 2)


def test_random_access_num_shards_greater_than_num_elements_index_less(backend: Backend) -> None:
    dataset = backend.Dataset.range(7).shard(8, 3)
    assert backend.at(dataset, 0) == 3
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(dataset, 1)


def test_random_access_num_shards_and_index_greater_than_num_elements(backend: Backend) -> None:
    dataset = backend.Dataset.range(13).shard(23, 21)
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(dataset, 0)


@pytest.mark.parametrize("elements", [0, 10, 50])
@pytest.mark.parametrize("num_shards", [5, 7, 10])
@pytest.mark.parametrize("index", [0, 1, 2, 3, 4])
def test_random_access_multiple_combinations(
    backend: Backend, elements: int, num_shards: int, index: int
) -> None:
    dataset = backend.Dataset.range(elements).shard(num_shards=num_shards, index=index)
    length = backend.cardinality(dataset)
    for i in range(length):
        assert backend.at(dataset, i) == index + num_shards * i
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(dataset, length)
