"""tf.data's ``fixed_length_record_dataset_test.py`` against pipestate and TensorFlow.

testFixedLengthRecordDatasetParallelRead and testFixedLengthRecordDatasetPathlib
compare the records as a multiset, as tf.data's tests do; test_parallel_read_order
adds that the order is the same in both.
"""

from __future__ import annotations

import gzip
import pathlib
import zlib
from pathlib import Path
from typing import Any

import pytest

from ._base import Backend, verify_fns
from ._base_b import verify

NUM_FILES = 2
NUM_RECORDS = 7
HEADER_BYTES = 5
RECORD_BYTES = 3
FOOTER_BYTES = 2


def _record(f: int, r: int) -> bytes:
    return str(f * 2 + r).encode() * RECORD_BYTES


def _create_files(
    directory: Path, compression_type: str | None = None, counts: list[int] | None = None
) -> list[str]:
    filenames = []
    for i, count in enumerate(counts or [NUM_RECORDS] * NUM_FILES):
        fn = str(directory / f"fixed_length_record.{i}.txt")
        filenames.append(fn)
        contents = b"H" * HEADER_BYTES
        contents += b"".join(_record(i, j) for j in range(count))
        contents += b"F" * FOOTER_BYTES
        if not compression_type:
            Path(fn).write_bytes(contents)
        elif compression_type == "GZIP":
            with gzip.GzipFile(fn, "wb") as f:
                f.write(contents)
        else:
            Path(fn).write_bytes(zlib.compress(contents))
    return filenames


def _dataset(
    backend: Backend, filenames: Any, record_bytes: int = RECORD_BYTES, **kwargs: Any
) -> Any:
    return backend.data.FixedLengthRecordDataset(
        filenames, record_bytes, HEADER_BYTES, FOOTER_BYTES, **kwargs
    )


@pytest.mark.parametrize("compression_type", [None, "GZIP", "ZLIB"])
def test_fixed_length_record_dataset(
    backend: Backend, tmp_path: Path, compression_type: str | None
) -> None:
    test_filenames = _create_files(tmp_path, compression_type)

    def dataset_fn(filenames: list[str], num_epochs: int, batch_size: int | None = None) -> Any:
        repeat_dataset = _dataset(backend, filenames, compression_type=compression_type).repeat(
            num_epochs
        )
        return repeat_dataset.batch(batch_size) if batch_size else repeat_dataset

    file_0 = [_record(0, i) for i in range(NUM_RECORDS)]
    file_1 = [_record(1, i) for i in range(NUM_RECORDS)]
    backend.assert_produces(dataset_fn([test_filenames[0]], 1), file_0)
    backend.assert_produces(dataset_fn([test_filenames[1]], 1), file_1)
    backend.assert_produces(dataset_fn(test_filenames, 1), file_0 + file_1)
    backend.assert_produces(dataset_fn(test_filenames, 10), (file_0 + file_1) * 10)
    backend.assert_produces(dataset_fn(test_filenames, 10, NUM_RECORDS), [file_0, file_1] * 10)


def test_fixed_length_record_dataset_buffering(backend: Backend, tmp_path: Path) -> None:
    dataset = _dataset(backend, _create_files(tmp_path), buffer_size=10)
    expected = [_record(j, i) for j in range(NUM_FILES) for i in range(NUM_RECORDS)]
    backend.assert_produces(dataset, expected)


def test_fixed_length_record_dataset_parallel_read(backend: Backend, tmp_path: Path) -> None:
    dataset = _dataset(backend, _create_files(tmp_path), buffer_size=10, num_parallel_reads=4)
    expected = [_record(j, i) for j in range(NUM_FILES) for i in range(NUM_RECORDS)]
    backend.assert_produces(dataset, expected, assert_items_equal=True)


def test_fixed_length_record_dataset_wrong_size(backend: Backend, tmp_path: Path) -> None:
    dataset = _dataset(backend, _create_files(tmp_path), RECORD_BYTES + 1, buffer_size=10)
    backend.assert_produces(
        dataset,
        expected_error=(
            backend.InvalidArgumentError,
            r"Excluding the header \(5 bytes\) and footer \(2 bytes\), input "
            r"file \".*fixed_length_record.0.txt\" has body length 21 bytes, "
            r"which is not an exact multiple of the record length \(4 bytes\).",
        ),
    )


def test_fixed_length_record_dataset_pathlib(backend: Backend, tmp_path: Path) -> None:
    files = [pathlib.Path(f) for f in _create_files(tmp_path)]
    dataset = _dataset(backend, files, buffer_size=10, num_parallel_reads=4)
    expected = [_record(j, i) for j in range(NUM_FILES) for i in range(NUM_RECORDS)]
    backend.assert_produces(dataset, expected, assert_items_equal=True)


@pytest.mark.parametrize("num_parallel_reads", [2, 3])
def test_parallel_read_order(backend: Backend, tmp_path: Path, num_parallel_reads: int) -> None:
    filenames = _create_files(tmp_path, counts=[3, 1, 0, 4, 2])
    dataset = _dataset(backend, filenames, num_parallel_reads=num_parallel_reads)
    expected = backend.outputs(
        backend.Dataset.from_tensor_slices(filenames).interleave(
            lambda name: _dataset(backend, name), cycle_length=num_parallel_reads, block_length=1
        )
    )
    assert len(expected) == 10
    backend.assert_produces(dataset, expected)


# FixedLengthRecordDatasetCheckpointTest


@verify_fns
@pytest.mark.parametrize("num_parallel_reads", [None, 2])
def test_fixed_length_record_core(
    backend: Backend, tmp_path: Path, verify_fn: str, num_parallel_reads: int | None
) -> None:
    filenames = _create_files(tmp_path)
    num_epochs = 5

    def build() -> Any:
        return _dataset(backend, filenames, num_parallel_reads=num_parallel_reads).repeat(
            num_epochs
        )

    verify(backend, verify_fn, build, num_epochs * NUM_FILES * NUM_RECORDS)
