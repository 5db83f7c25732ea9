"""tf.data's ``ignore_errors_test.py`` against pipestate and TensorFlow.

tf.data's functions fail through ``tf.debugging.check_numerics`` and
``tf.io.read_file``; pipestate's through Python functions raising on the same
elements (NaN, a missing file). testIgnoreError_withLogWarning checks
pipestate's log (the ``pipestate.data`` logger); TensorFlow's goes to stderr,
which this suite silences (``TF_CPP_MIN_LOG_LEVEL=2``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ._base import Backend, verify_fns
from ._base_b import record_writer, verify

COMPONENTS = np.array([1.0, 2.0, 3.0, np.nan, 5.0]).astype(np.float32)


def _check_numerics(backend: Backend) -> Any:
    if backend.is_tf:
        tf = backend.module
        return lambda x: tf.debugging.check_numerics(x, "message")

    def check(x: Any) -> Any:
        if np.isnan(x):
            raise ValueError("message : Tensor had NaN values")
        if np.isinf(x):
            raise ValueError("message : Tensor had Inf values")
        return x

    return check


def _read_file(backend: Backend) -> Any:
    if backend.is_tf:
        return backend.module.io.read_file
    return lambda name: Path(bytes(name).decode()).read_bytes()


def test_map_ignore_error(backend: Backend) -> None:
    dataset = (
        backend.Dataset.from_tensor_slices(COMPONENTS).map(_check_numerics(backend)).ignore_errors()
    )
    backend.assert_produces(dataset, [np.float32(x) for x in [1.0, 2.0, 3.0, 5.0]])


def test_ignore_error_with_log_warning(backend: Backend, caplog: pytest.LogCaptureFixture) -> None:
    dataset = (
        backend.Dataset.from_tensor_slices(COMPONENTS)
        .map(_check_numerics(backend))
        .ignore_errors(log_warning=True)
    )
    with caplog.at_level(logging.WARNING, logger="pipestate.data"):
        it = backend.iterate(dataset)
        assert [float(next(it)) for _ in range(4)] == [1.0, 2.0, 3.0, 5.0]
    if not backend.is_tf:  # the suite sets TF_CPP_MIN_LOG_LEVEL=2, which hides TF's warning
        assert "Tensor had NaN values" in "\n".join(r.getMessage() for r in caplog.records)
    with pytest.raises(StopIteration):
        next(it)


def test_parallel_map_ignore_error(backend: Backend) -> None:
    dataset = (
        backend.Dataset.from_tensor_slices(COMPONENTS)
        .map(_check_numerics(backend), num_parallel_calls=2)
        .prefetch(2)
        .ignore_errors()
    )
    backend.assert_produces(dataset, [np.float32(x) for x in [1.0, 2.0, 3.0, 5.0]])


def test_read_file_ignore_error(backend: Backend, tmp_path: Path) -> None:
    filenames = [str(tmp_path / f"file_{i}.txt") for i in range(5)]
    for filename in filenames:
        Path(filename).write_text(filename)
    dataset = (
        backend.Dataset.from_tensor_slices(filenames)
        .map(_read_file(backend), num_parallel_calls=2)
        .prefetch(2)
        .ignore_errors()
    )
    backend.assert_produces(dataset, [name.encode() for name in filenames])
    os.remove(filenames[0])
    backend.assert_produces(dataset, [name.encode() for name in filenames[1:]])


def test_tf_record_dataset_ignore_error(backend: Backend, tmp_path: Path) -> None:
    filenames = []
    for i in range(5):
        fn = str(tmp_path / f"tf_record.{i}.txt")
        filenames.append(fn)
        writer = record_writer(backend, fn)
        for _ in range(10):
            writer.write(b"record")
        writer.close()
        with open(fn, "a") as f:
            f.write("corrupted data")
    if backend.is_tf:
        dataset = backend.data.TFRecordDataset(filenames)
    else:
        # Appending to a file makes the index RecordWriter wrote beside it stale, which is
        # refused when the dataset is made; without the index the file streams as tf.data's.
        dataset = backend.data.RecordDataset(filenames, use_index=False)
    backend.assert_produces(dataset.ignore_errors(), [b"record"] * 50)


def test_zip_ignore_error(backend: Backend) -> None:
    a = backend.Dataset.from_tensor_slices(np.array([1.0, 2.0, 0.0, 4.0], np.float32))
    check = _check_numerics(backend)

    def inverse(x: Any) -> Any:
        if backend.is_tf:
            return check(1.0 / x)
        with np.errstate(divide="ignore"):
            return check(np.float32(1.0) / x)

    b = a.map(inverse)
    dataset = backend.Dataset.zip((b, a)).ignore_errors()
    expected = [(np.float32(1.0 / x), np.float32(x)) for x in [1.0, 2.0, 4.0]]
    backend.assert_produces(dataset, expected)


def test_cardinality(backend: Backend) -> None:
    ds = backend.Dataset.range(10).ignore_errors()
    assert backend.cardinality(ds) == backend.UNKNOWN


# IgnoreErrorsCheckpointTest


@verify_fns
def test_checkpoint(backend: Backend, verify_fn: str) -> None:
    def build() -> Any:
        dataset = backend.Dataset.from_tensor_slices(COMPONENTS)
        dataset = dataset.map(_check_numerics(backend)).ignore_errors()
        options = backend.data.Options()
        if backend.is_tf:
            options.experimental_external_state_policy = (
                backend.data.experimental.ExternalStatePolicy.IGNORE
            )
        else:
            options.external_state_policy = "ignore"
        return dataset.with_options(options)

    verify(backend, verify_fn, build, 4)
