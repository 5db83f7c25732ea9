"""tf.data's ``take_while_test.py`` against pipestate and TensorFlow.

Left out of tf.data's tests:
- TakeWhileTest.testName: the ``name=`` argument of tf.data ops.
- TakeWhileCheckpointTest.test with ``num_elements=upper_bound=23``: for speed; it
  ends like the ``10, 10`` case (input and predicate at once).
- the ``symbolic_checkpoint`` combinations: a TensorFlow-only option; each case runs once.
"""

from __future__ import annotations

import numpy as np
import pytest

from ._base import Backend, verify_fns
from ._base_b import tensor_ops, verify


@pytest.mark.parametrize(("num_elements", "window_size"), [(14, 2), (15, 2), (100, 3)])
def test_take_while_dataset(backend: Backend, num_elements: int, window_size: int) -> None:
    ops = tensor_ops(backend)
    dataset = (
        backend.Dataset.range(num_elements)
        .batch(window_size)
        .take_while(lambda elem: ops.num_rows(elem) > window_size - 1)
        .flat_map(backend.Dataset.from_tensor_slices)
    )
    expected = np.arange(num_elements // window_size * window_size)
    backend.assert_produces(dataset, list(expected))


@pytest.mark.parametrize(
    ("num_elements", "upper_bound"), [(10, 2), (16, 7), (100, 99), (100, 101), (0, 1)]
)
def test_take_while_dataset_range(backend: Backend, num_elements: int, upper_bound: int) -> None:
    dataset = backend.Dataset.range(num_elements).take_while(lambda x: x < upper_bound)
    backend.assert_produces(dataset, list(np.arange(min(num_elements, upper_bound))))


def test_take_while_dataset_string(backend: Backend) -> None:
    strings = ["this", "is", "the", "test", "for", "strings"]
    dataset = backend.Dataset.from_tensor_slices(strings).take_while(lambda x: x != b"test")
    backend.assert_produces(dataset, [b"this", b"is", b"the"])


@pytest.mark.parametrize(("size", "index"), [(5, 3), (10, 0), (100, 5), (8, 7)])
def test_take_while_dataset_short_circuit(backend: Backend, size: int, index: int) -> None:
    boolean_array = [True] * size
    boolean_array[index] = False
    dataset = backend.Dataset.from_tensor_slices(boolean_array).take_while(lambda x: x)
    backend.assert_produces(dataset, [True] * index)


def test_take_while_dataset_with_repeat(backend: Backend) -> None:
    dataset = backend.Dataset.range(10).take_while(lambda x: x < 2).repeat(5)
    backend.assert_produces(dataset, list(np.tile(np.arange(2), 5)))


def test_take_while_dataset_stops(backend: Backend) -> None:
    dataset = backend.Dataset.range(10).take_while(lambda x: x != 5)
    backend.assert_produces(dataset, list(np.arange(5)))


# TakeWhileCheckpointTest


@verify_fns
@pytest.mark.parametrize(("num_elements", "upper_bound"), [(10, 10), (10, 23), (23, 10)])
def test_checkpoint(backend: Backend, verify_fn: str, num_elements: int, upper_bound: int) -> None:
    def build() -> object:
        return backend.Dataset.range(num_elements).take_while(lambda x: x < upper_bound)

    verify(backend, verify_fn, build, min(num_elements, upper_bound))
