"""tf.data's ``tf_record_dataset_test.py`` against pipestate and TensorFlow.

pipestate's ``RecordDataset`` / ``RecordWriter`` are tf.data's
``TFRecordDataset`` / ``tf.io.TFRecordWriter`` (docs/sources.md); each
backend writes the test files with its own writer.

testTFRecordDatasetConstructorErrorsTensorInput passes a ``tf.constant`` of
ints; here it is a NumPy array of ints.

Left out of tf.data's tests:
- TFRecordDatasetCheckpointTest.testCompressionTypes with no compression: the same
  pipeline as testBatchSize with ``batch_size=1``.

testReadTenEpochsFromDatasetOfFilesInParallel compares the records as a
multiset, as tf.data's test does; test_parallel_read_order adds that the order
is the same in both.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import pytest

from ._base import Backend, verify_fns
from ._base_b import record_dataset, record_writer, verify

NUM_FILES = 2
NUM_RECORDS = 7


def _record(f: int, r: int) -> bytes:
    return f"Record {r} of file {f}".encode()


def _create_files(backend: Backend, directory: Path) -> list[str]:
    filenames = []
    for i in range(NUM_FILES):
        filename = str(directory / f"tf_record.{i}.txt")
        filenames.append(filename)
        writer = record_writer(backend, filename)
        for j in range(NUM_RECORDS):
            writer.write(_record(i, j))
        writer.close()
    return filenames


def _compress(filenames: list[str], compression_type: str | None) -> list[str]:
    """Copies of ``filenames`` compressed as ``compression_type`` (None: the files)."""
    if compression_type is None:
        return filenames
    out = []
    for i, filename in enumerate(filenames):
        data = Path(filename).read_bytes()
        if compression_type == "ZLIB":
            target = str(Path(filename).parent / f"tfrecord_{i}.z")
            Path(target).write_bytes(zlib.compress(data))
        else:
            target = str(Path(filename).parent / f"tfrecord_{i}.gz")
            with gzip.GzipFile(target, "wb") as f:
                f.write(data)
        out.append(target)
    return out


def _all_records(num_files: int = NUM_FILES) -> list[bytes]:
    return [_record(j, i) for j in range(num_files) for i in range(NUM_RECORDS)]


@pytest.fixture
def filenames(backend: Backend, tmp_path: Path) -> list[str]:
    return _create_files(backend, tmp_path)


def _dataset(
    backend: Backend,
    filenames: object,
    compression_type: str | None = None,
    num_epochs: int = 1,
    batch_size: int | None = None,
) -> object:
    dataset = record_dataset(backend, filenames, compression_type).repeat(num_epochs)
    return dataset.batch(batch_size) if batch_size else dataset


def test_constructor_errors_tensor_input(backend: Backend) -> None:
    message = backend.tf_message(r"filenames.*must.*string")
    with pytest.raises(TypeError, match=message):
        record_dataset(backend, [1, 2, 3])
    with pytest.raises(TypeError, match=message):
        record_dataset(backend, np.array([1, 2, 3]))
    with pytest.raises(Exception):  # noqa: B017, PT011 - tf.data's own check is this loose
        record_dataset(backend, object())


def test_read_one_epoch(backend: Backend, filenames: list[str]) -> None:
    # One file, the other, then both.
    backend.assert_produces(
        _dataset(backend, filenames[0]), [_record(0, i) for i in range(NUM_RECORDS)]
    )
    backend.assert_produces(
        _dataset(backend, filenames[1]), [_record(1, i) for i in range(NUM_RECORDS)]
    )
    backend.assert_produces(_dataset(backend, filenames), _all_records())


def test_read_ten_epochs(backend: Backend, filenames: list[str]) -> None:
    backend.assert_produces(_dataset(backend, filenames, num_epochs=10), _all_records() * 10)


def test_read_ten_epochs_of_batches(backend: Backend, filenames: list[str]) -> None:
    dataset = _dataset(backend, filenames, num_epochs=10, batch_size=NUM_RECORDS)
    expected = [[_record(j, i) for i in range(NUM_RECORDS)] for j in range(NUM_FILES)]
    backend.assert_produces(dataset, expected * 10)


@pytest.mark.parametrize("compression_type", ["ZLIB", "GZIP"])
def test_read_compressed_files(
    backend: Backend, filenames: list[str], compression_type: str
) -> None:
    compressed = _compress(filenames, compression_type)
    backend.assert_produces(
        _dataset(backend, compressed, compression_type=compression_type), _all_records()
    )


def test_read_with_buffer(backend: Backend, filenames: list[str]) -> None:
    dataset = record_dataset(backend, filenames, buffer_size=2**20)
    backend.assert_produces(dataset, _all_records())


def test_read_from_dataset_of_files(backend: Backend, filenames: list[str]) -> None:
    files = backend.Dataset.from_tensor_slices(filenames)
    backend.assert_produces(record_dataset(backend, files), _all_records())


def test_dataset_pathlib(backend: Backend, filenames: list[str]) -> None:
    dataset = record_dataset(backend, [Path(filenames[0])])
    expected = [_record(0, i) for i in range(NUM_RECORDS)]
    backend.assert_produces(dataset, expected, assert_items_equal=True)


# TFRecordDatasetCheckpointTest


def _checkpoint_build(
    backend: Backend,
    filenames: list[str],
    num_epochs: int,
    batch_size: int = 1,
    compression_type: str | None = None,
    buffer_size: int | None = None,
) -> object:
    files = _compress(filenames, compression_type)

    def build() -> object:
        return (
            record_dataset(backend, files, compression_type, buffer_size=buffer_size)
            .repeat(num_epochs)
            .batch(batch_size)
        )

    return build


@verify_fns
@pytest.mark.parametrize("batch_size", [1, 5])
def test_checkpoint_batch_size(
    backend: Backend, filenames: list[str], verify_fn: str, batch_size: int
) -> None:
    num_epochs = 5
    build = _checkpoint_build(backend, filenames, num_epochs, batch_size=batch_size)
    verify(backend, verify_fn, build, num_epochs * NUM_FILES * NUM_RECORDS // batch_size)


@verify_fns
@pytest.mark.parametrize("buffer_size", [0, 5])
def test_checkpoint_buffer_size(
    backend: Backend, filenames: list[str], verify_fn: str, buffer_size: int
) -> None:
    num_epochs = 5
    build = _checkpoint_build(backend, filenames, num_epochs, buffer_size=buffer_size)
    verify(backend, verify_fn, build, num_epochs * NUM_FILES * NUM_RECORDS)


@verify_fns
@pytest.mark.parametrize("compression_type", ["GZIP", "ZLIB"])
def test_checkpoint_compression_types(
    backend: Backend, filenames: list[str], verify_fn: str, compression_type: str | None
) -> None:
    num_epochs = 5
    build = _checkpoint_build(backend, filenames, num_epochs, compression_type=compression_type)
    verify(backend, verify_fn, build, num_epochs * NUM_FILES * NUM_RECORDS)


def test_read_ten_epochs_from_dataset_of_files_in_parallel(
    backend: Backend, filenames: list[str]
) -> None:
    files = backend.Dataset.from_tensor_slices(filenames).repeat(10)
    cls = backend.data.TFRecordDataset if backend.is_tf else backend.data.RecordDataset
    dataset = cls(files, num_parallel_reads=4)
    backend.assert_produces(dataset, _all_records() * 10, assert_items_equal=True)


@pytest.mark.parametrize("num_parallel_reads", [2, 3])
def test_parallel_read_order(backend: Backend, tmp_path: Path, num_parallel_reads: int) -> None:
    names = []
    for f, count in enumerate([4, 0, 2, 5]):
        name = str(tmp_path / f"uneven.{f}.tfrecord")
        writer = record_writer(backend, name)
        for r in range(count):
            writer.write(_record(f, r))
        writer.close()
        names.append(name)
    cls = backend.data.TFRecordDataset if backend.is_tf else backend.data.RecordDataset
    dataset = cls(names, num_parallel_reads=num_parallel_reads)
    expected = backend.outputs(
        backend.Dataset.from_tensor_slices(names).interleave(
            cls, cycle_length=num_parallel_reads, block_length=1
        )
    )
    assert len(expected) == 11
    backend.assert_produces(dataset, expected)
