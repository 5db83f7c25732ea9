"""tf.data's ``as_numpy_iterator_test.py`` (AsNumpyIteratorTest).

Left out:
- testNonEager: graph mode.
- testSparseElement, testRaggedElement: sparse and ragged tensors are TensorFlow types.
- testDatasetElement, testNestedNonTensorElement: datasets of datasets are
  tf.data-only (pipestate refuses a dataset as an element when it is built).
- the ``enable_async_ckpt`` variant of testCompatibleWithCheckpoint: TensorFlow's
  async checkpoint option.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest

from ._base import Backend, pipestate_differs


def test_basic(backend: Backend) -> None:
    dataset = backend.Dataset.range(3)
    assert list(dataset.as_numpy_iterator()) == [0, 1, 2]


def test_elements_are_numpy_values(backend: Backend) -> None:
    element = next(backend.Dataset.range(3).as_numpy_iterator())
    assert isinstance(element, np.int64)


def test_immutable(backend: Backend) -> None:
    dataset = backend.Dataset.from_tensors([1, 2, 3])
    arr = next(dataset.as_numpy_iterator())
    with pytest.raises(ValueError, match="read-only"):
        arr[0] = 0


def test_nested_structure(backend: Backend) -> None:
    point = collections.namedtuple("Point", ["x", "y"])
    dataset = backend.Dataset.from_tensor_slices(
        {"a": ([1, 2], [3, 4]), "b": [5, 6], "c": point([7, 8], [9, 10])}
    )
    assert list(dataset.as_numpy_iterator()) == [
        {"a": (1, 3), "b": 5, "c": point(7, 9)},
        {"a": (2, 4), "b": 6, "c": point(8, 10)},
    ]


@pipestate_differs(
    "docs/ops.md#differences-from-tfdata: None is not an element value (a function that "
    "returns None by mistake fails at once)"
)
def test_none_element(backend: Backend) -> None:
    dataset = backend.Dataset.from_tensors((2, None))
    backend.assert_produces(dataset, [(2, None)])


@pytest.mark.parametrize("method", ["write", "save"])
def test_compatible_with_checkpoint(backend: Backend, tmp_path: Path, method: str) -> None:
    dataset = backend.Dataset.range(10)
    iterator = dataset.as_numpy_iterator()
    ckpt = backend.Checkpoint(iterator=iterator)
    for _ in range(5):
        next(iterator)
    save_path = getattr(ckpt, method)(str(tmp_path / "ckpt"))
    assert next(iterator) == 5
    assert next(iterator) == 6
    restore_iter = dataset.as_numpy_iterator()
    restore_ckpt = backend.Checkpoint(iterator=restore_iter)
    if method == "write":
        restore_ckpt.read(save_path)
    else:
        restore_ckpt.restore(save_path)
    assert next(restore_iter) == 5
