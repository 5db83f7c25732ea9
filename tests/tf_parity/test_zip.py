"""tf.data's ``zip_test.py`` (ZipTest, ZipCheckpointTest, ZipRandomAccessTest).

Left out:
- testAttrs: ``attr.s`` classes as structures are tf.data's nest machinery.
- testName: the ``name=`` argument is tf.data's graph-naming machinery.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np
import pytest

from ._base import NEGATIVE_INDEX, Backend, verify_fns

COMPONENTS = (
    np.tile(np.array([[1], [2], [3], [4]]), 20),
    np.tile(np.array([[12], [13], [14], [15]]), 22),
    np.array([37.0, 38.0, 39.0, 40.0]),
)


def _dataset_factory(backend: Backend, components: Any) -> Any:
    return backend.Dataset.zip(
        tuple(backend.Dataset.from_tensor_slices(component) for component in components)
    )


def test_zip_equal(backend: Backend) -> None:
    dataset = _dataset_factory(backend, COMPONENTS)
    backend.assert_produces(dataset, [tuple(c[i] for c in COMPONENTS) for i in range(4)])
    assert backend.cardinality(dataset) == 4


def test_zip_unequal(backend: Backend) -> None:
    components = [[1, 2, 3, 4], [1, 2, 3, 4, 5], [1.0, 2.0]]
    dataset = _dataset_factory(backend, components)
    backend.assert_produces(dataset, [tuple(c[i] for c in components) for i in range(2)])
    assert backend.cardinality(dataset) == 2


def test_nested(backend: Backend) -> None:
    datasets = [backend.Dataset.from_tensor_slices(c) for c in COMPONENTS]
    dataset = backend.Dataset.zip((datasets[0], (datasets[1], datasets[2])))
    backend.assert_produces(
        dataset,
        [(COMPONENTS[0][i], (COMPONENTS[1][i], COMPONENTS[2][i])) for i in range(4)],
        expected_shapes=((20,), ((22,), ())),
    )


def test_zip_positional_arguments(backend: Backend) -> None:
    dataset = backend.Dataset.zip(backend.Dataset.range(3), backend.Dataset.range(3, 6))
    backend.assert_produces(dataset, [(0, 3), (1, 4), (2, 5)])


def test_zip_dict(backend: Backend) -> None:
    dataset = backend.Dataset.zip({"x": backend.Dataset.range(3), "y": backend.Dataset.range(3, 6)})
    backend.assert_produces(dataset, [{"x": i, "y": i + 3} for i in range(3)])


def test_named_tuple(backend: Backend) -> None:
    foo = collections.namedtuple("Foo", ["x", "y"])
    dataset = backend.Dataset.zip(foo(x=backend.Dataset.range(3), y=backend.Dataset.range(3, 6)))
    backend.assert_produces(dataset, [foo(x=0, y=3), foo(x=1, y=4), foo(x=2, y=5)])


def _build_checkpoint_dataset(backend: Backend, arr: list[float]) -> Any:
    components = [COMPONENTS[0], COMPONENTS[1], np.array(arr)]
    datasets = [backend.Dataset.from_tensor_slices(c) for c in components]
    return backend.Dataset.zip((datasets[0], (datasets[1], datasets[2])))


@verify_fns
@pytest.mark.parametrize("elements", [[37.0, 38.0, 39.0, 40.0], [1.0, 2.0]], ids=["4", "2"])
def test_zip_checkpoint(backend: Backend, verify_fn: str, elements: list[float]) -> None:
    getattr(backend, verify_fn)(lambda: _build_checkpoint_dataset(backend, elements), len(elements))


@pytest.mark.parametrize(
    "index",
    [
        NEGATIVE_INDEX,
        3,
        4,
    ],
)
def test_random_access_invalid_index(backend: Backend, index: int) -> None:
    dataset = backend.Dataset.zip((backend.Dataset.range(3), backend.Dataset.range(5)))
    with pytest.raises(backend.IndexOutOfRangeError):
        backend.at(dataset, index)


def test_random_access(backend: Backend) -> None:
    dataset = backend.Dataset.zip(
        (backend.Dataset.range(1, 4), (backend.Dataset.range(4, 7), backend.Dataset.range(7, 10)))
    )
    for i in range(3):
        first, (second, third) = backend.at(dataset, i)
        assert (first, second, third) == (i + 1, i + 4, i + 7)
