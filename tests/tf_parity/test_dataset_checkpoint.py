"""tf.data's ``dataset_checkpoint_test.py`` against pipestate and TensorFlow.

tf.data's test saves and restores the iterator resource of a TF1 graph with
serialize / deserialize ops, either in a new graph or after re-running the
iterator's initializer in the same graph. In eager mode a new graph is a new
iterator of a new dataset, and re-initializing is making a new iterator of
the same dataset; the position goes through a checkpoint file
(``backend.save`` / ``backend.restore``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ._base import Backend

START, STOP = 2, 10


def _take(backend: Backend, iterator: Any, values: range) -> None:
    for i in values:
        assert int(backend.to_numpy(next(iterator))) == i


def _assert_ended(iterator: Any) -> None:
    with pytest.raises(StopIteration):
        next(iterator)


def test_save_restore(backend: Backend) -> None:
    break_point = 5
    # Saved and restored in different iterators of different datasets.
    iterator = iter(backend.Dataset.range(START, STOP))
    _take(backend, iterator, range(START, break_point))
    path = backend.save(iterator)
    iterator = backend.restore(iter(backend.Dataset.range(START, STOP)), path)
    _take(backend, iterator, range(break_point, STOP))
    _assert_ended(iterator)
    # Saved and restored with the same dataset.
    dataset = backend.Dataset.range(START, STOP)
    iterator = iter(dataset)
    _take(backend, iterator, range(START, break_point))
    path = backend.save(iterator)
    iterator = backend.restore(iter(dataset), path)
    _take(backend, iterator, range(break_point, STOP))
    _assert_ended(iterator)


def test_init_then_restore(backend: Backend) -> None:
    break_point = 5
    iterator = iter(backend.Dataset.range(START, STOP))
    _take(backend, iterator, range(START, break_point))
    path = backend.save(iterator)
    # Restoring into an iterator that has already started is fine too.
    iterator = iter(backend.Dataset.range(START, STOP))
    _take(backend, iterator, range(START, START + 1))
    backend.restore(iterator, path)
    _take(backend, iterator, range(break_point, STOP))
    _assert_ended(iterator)


def test_multiple_saves(backend: Backend) -> None:
    break_point1, break_point2 = 5, 7
    iterator = iter(backend.Dataset.range(START, STOP))
    _take(backend, iterator, range(START, break_point1))
    path = backend.save(iterator)
    iterator = backend.restore(iter(backend.Dataset.range(START, STOP)), path)
    _take(backend, iterator, range(break_point1, break_point2))
    path = backend.save(iterator)
    iterator = backend.restore(iter(backend.Dataset.range(START, STOP)), path)
    _take(backend, iterator, range(break_point2, STOP))
    _assert_ended(iterator)


def test_save_restore_with_repeat(backend: Backend, tmp_path: Path) -> None:
    num_epochs, break_range, break_epoch = 5, 5, 3
    iterator = iter(backend.Dataset.range(START, STOP).repeat(num_epochs))
    # There is no checkpoint to restore yet.
    with pytest.raises(backend.NotFoundError):
        backend.restore(iterator, str(tmp_path / "no-such-checkpoint"))
    for _ in range(break_epoch - 1):
        _take(backend, iterator, range(START, STOP))
    _take(backend, iterator, range(START, break_range))
    path = backend.save(iterator)
    iterator = backend.restore(iter(backend.Dataset.range(START, STOP).repeat(num_epochs)), path)
    _take(backend, iterator, range(break_range, STOP))
    for _ in range(break_epoch, num_epochs):
        _take(backend, iterator, range(START, STOP))
    _assert_ended(iterator)


def test_save_restore_exhausted_iterator(backend: Backend) -> None:
    num_epochs = 5
    iterator = iter(backend.Dataset.range(START, STOP).repeat(num_epochs))
    for _ in range(num_epochs):
        _take(backend, iterator, range(START, STOP))
    _assert_ended(iterator)
    path = backend.save(iterator)
    iterator = backend.restore(iter(backend.Dataset.range(START, STOP).repeat(num_epochs)), path)
    _assert_ended(iterator)
