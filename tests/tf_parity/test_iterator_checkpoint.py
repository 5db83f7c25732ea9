"""tf.data's ``iterator_checkpoint_test.py`` against pipestate and TensorFlow.

Iterators are saved as dependencies of ``ps.Checkpoint`` /
``tf.train.Checkpoint`` with ``save(prefix)`` and restored with
``restore(path)``, in eager mode (tf.data's test also runs TF1 graph mode).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ._base import Backend


def _latest_checkpoint(backend: Backend, directory: Path) -> str | None:
    if backend.is_tf:
        path: str | None = backend.module.train.latest_checkpoint(str(directory))
        return path
    return backend.module.latest_checkpoint(str(directory))


def _next(backend: Backend, iterator: Any) -> Any:
    return backend.to_numpy(next(iterator))


def test_save_restore_one_shot_iterator(backend: Backend, tmp_path: Path) -> None:
    prefix = str(tmp_path / "ckpt")
    dataset = backend.Dataset.from_tensor_slices([1, 2, 3, 4, 5, 6]).map(lambda x: x * x).batch(2)
    iterator = iter(dataset)
    checkpoint = backend.Checkpoint(iterator=iterator)
    np.testing.assert_array_equal(_next(backend, iterator), [1, 4])
    save_path = checkpoint.save(prefix)
    np.testing.assert_array_equal(_next(backend, iterator), [9, 16])
    np.testing.assert_array_equal(_next(backend, iterator), [25, 36])
    checkpoint.restore(save_path).run_restore_ops()
    np.testing.assert_array_equal(_next(backend, iterator), [9, 16])
    np.testing.assert_array_equal(_next(backend, iterator), [25, 36])
    with pytest.raises(StopIteration):
        next(iterator)


def test_save_restore_multiple_iterator(backend: Backend, tmp_path: Path) -> None:
    prefix = str(tmp_path / "ckpt")
    dataset = backend.Dataset.from_tensor_slices(list(range(1, 12)))
    dataset = dataset.map(lambda x: x * x).batch(2)
    iterator_1 = iter(dataset)
    iterator_2 = iter(dataset)
    iterator_3 = iter(backend.Dataset.range(10))
    checkpoint = backend.Checkpoint(
        iterator_1=iterator_1, iterator_2=iterator_2, iterator_3=iterator_3
    )
    np.testing.assert_array_equal(_next(backend, iterator_1), [1, 4])
    assert _next(backend, iterator_3) == 0
    assert _next(backend, iterator_3) == 1
    assert _next(backend, iterator_3) == 2
    save_path = checkpoint.save(prefix)
    np.testing.assert_array_equal(_next(backend, iterator_2), [1, 4])
    np.testing.assert_array_equal(_next(backend, iterator_2), [9, 16])
    assert _next(backend, iterator_3) == 3
    checkpoint.restore(save_path).run_restore_ops()
    np.testing.assert_array_equal(_next(backend, iterator_1), [9, 16])
    np.testing.assert_array_equal(_next(backend, iterator_2), [1, 4])
    assert _next(backend, iterator_3) == 3


def test_restore_exhausted_iterator(backend: Backend, tmp_path: Path) -> None:
    prefix = str(tmp_path / "ckpt")
    iterator = iter(backend.Dataset.range(3))
    checkpoint = backend.Checkpoint(iterator=iterator)
    assert _next(backend, iterator) == 0
    assert _next(backend, iterator) == 1
    save_path = checkpoint.save(prefix)
    assert _next(backend, iterator) == 2
    checkpoint.restore(save_path).run_restore_ops()
    assert _next(backend, iterator) == 2
    save_path = checkpoint.save(prefix)
    checkpoint.restore(save_path).run_restore_ops()
    with pytest.raises(StopIteration):
        next(iterator)


def test_restore_in_reconstructed_iterator_initializable(backend: Backend, tmp_path: Path) -> None:
    prefix = str(tmp_path / "ckpt")
    iterator = iter(backend.Dataset.range(10))
    checkpoint = backend.Checkpoint(iterator=iterator)
    for i in range(5):
        # The first pass finds no checkpoint and keeps the iterator's start.
        checkpoint.restore(_latest_checkpoint(backend, tmp_path)).initialize_or_restore()
        for j in range(2):
            assert _next(backend, iterator) == i * 2 + j
        checkpoint.save(file_prefix=prefix)
