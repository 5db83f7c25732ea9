"""tf.data's ``text_line_dataset_test.py`` against pipestate and TensorFlow.

testIteratorResourceCleanup asks psutil for the process's open files; here
the file descriptors under ``/proc/self/fd`` are read instead (Linux only).

testTextLineDatasetParallelRead compares the lines as a multiset, as tf.data's
test does; test_parallel_read_order and test_checkpoint_parallel_read add that
the order (files of different lengths, one line of each open file in turn)
and every checkpoint round trip are the same in both.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import pytest

from ._base import Backend, verify_fns
from ._base_b import verify

COMPRESSION_TYPES = [None, "GZIP", "ZLIB"]


def _line_text(f: int, line: int) -> bytes:
    return f"{f}: {line}".encode()


def _create_files(
    directory: Path,
    num_files: int,
    num_lines: int,
    crlf: bool = False,
    compression_type: str | None = None,
) -> list[str]:
    filenames = []
    for i in range(num_files):
        filename = str(directory / f"text_line.{i}.txt")
        filenames.append(filename)
        parts = []
        for j in range(num_lines):
            parts.append(_line_text(i, j))
            # Every line but the last of each file except the first ends with a newline.
            if j + 1 != num_lines or i == 0:
                parts.append(b"\r\n" if crlf else b"\n")
        contents = b"".join(parts)
        if compression_type == "GZIP":
            with gzip.GzipFile(filename, "wb") as f:
                f.write(contents)
        elif compression_type == "ZLIB":
            Path(filename).write_bytes(zlib.compress(contents))
        else:
            Path(filename).write_bytes(contents)
    return filenames


@pytest.mark.parametrize("compression_type", COMPRESSION_TYPES)
def test_text_line_dataset(backend: Backend, tmp_path: Path, compression_type: str | None) -> None:
    filenames = _create_files(tmp_path, 2, 5, crlf=True, compression_type=compression_type)

    def dataset_fn(names: list[str], num_epochs: int, batch_size: int | None = None) -> object:
        dataset = backend.data.TextLineDataset(names, compression_type=compression_type).repeat(
            num_epochs
        )
        return dataset.batch(batch_size) if batch_size else dataset

    file_0 = [_line_text(0, i) for i in range(5)]
    file_1 = [_line_text(1, i) for i in range(5)]
    # Read one file, the other, then both.
    backend.assert_produces(dataset_fn([filenames[0]], 1), file_0)
    backend.assert_produces(dataset_fn([filenames[1]], 1), file_1)
    backend.assert_produces(dataset_fn(filenames, 1), file_0 + file_1)
    # Repeated reads of both files.
    backend.assert_produces(dataset_fn(filenames, 10), (file_0 + file_1) * 10)
    # Batched and repeated reads of both files.
    backend.assert_produces(dataset_fn(filenames, 10, 5), [file_0, file_1] * 10)


def test_text_line_dataset_buffering(backend: Backend, tmp_path: Path) -> None:
    filenames = _create_files(tmp_path, 2, 5, crlf=True)
    dataset = backend.data.TextLineDataset(filenames, buffer_size=10)
    expected = [_line_text(j, i) for j in range(2) for i in range(5)]
    backend.assert_produces(dataset, expected)


def _open_paths() -> set[str]:
    paths = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            paths.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return paths


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_iterator_resource_cleanup(backend: Backend, tmp_path: Path) -> None:
    filename = str(tmp_path / "text.txt")
    Path(filename).write_text("".join(f"{i}\n" for i in range(3)))
    first_iterator = backend.iterate(backend.data.TextLineDataset(filename))
    assert next(first_iterator) == b"0"
    second_iterator = backend.iterate(backend.data.TextLineDataset(filename))
    assert next(second_iterator) == b"0"
    # A different pipeline over the same file.
    different_iterator = backend.iterate(backend.data.TextLineDataset(filename).repeat().batch(16))
    assert next(different_iterator).shape == (16,)
    # Dropping the iterators closes the partly read file.
    del first_iterator, second_iterator, different_iterator
    assert filename not in _open_paths()


def test_text_line_dataset_pathlib(backend: Backend, tmp_path: Path) -> None:
    files = [Path(name) for name in _create_files(tmp_path, 1, 5)]
    dataset = backend.data.TextLineDataset(files)
    backend.assert_produces(dataset, [_line_text(0, i) for i in range(5)], assert_items_equal=True)


def test_empty_file_list(backend: Backend) -> None:
    backend.assert_produces(backend.data.TextLineDataset(filenames=[]), [])


def test_file_does_not_exist(backend: Backend) -> None:
    dataset = backend.data.TextLineDataset(filenames=["File not exist"])
    with pytest.raises(
        backend.NotFoundError, match=backend.tf_message("No such file or directory")
    ):
        backend.outputs(dataset)


def test_file_names_must_be_strings(backend: Backend) -> None:
    message = backend.tf_message(
        r"The `filenames` argument must contain `tf.string` elements. Got `tf.int32` elements."
    )
    with pytest.raises(TypeError, match=message):
        backend.data.TextLineDataset(filenames=0)


def test_file_names_dataset_must_contain_strings(backend: Backend) -> None:
    filenames = backend.Dataset.from_tensors(0)
    message = backend.tf_message(r"must contain `tf.string` elements. Got a dataset of")
    # tf.data checks the element spec when the dataset is made, pipestate each name as it is read.
    with pytest.raises(TypeError, match=message):
        backend.outputs(backend.data.TextLineDataset(filenames))


def test_file_names_must_be_scalars(backend: Backend) -> None:
    filenames = backend.Dataset.from_tensors([["File 1", "File 2"], ["File 3", "File 4"]])
    message = backend.tf_message(r"elements of shape \[\] \(i.e. scalars\)")
    with pytest.raises(TypeError, match=message):
        backend.outputs(backend.data.TextLineDataset(filenames))


# TextLineDatasetCheckpointTest


@pytest.mark.parametrize("compression_type", COMPRESSION_TYPES)
def test_checkpoint_text_line_core(
    backend: Backend, tmp_path: Path, compression_type: str | None
) -> None:
    filenames = _create_files(tmp_path, 5, 5, crlf=True, compression_type=compression_type)

    def build() -> object:
        return backend.data.TextLineDataset(
            filenames, compression_type=compression_type, buffer_size=10
        )

    backend.run_core_tests(build, 25)


def test_text_line_dataset_parallel_read(backend: Backend, tmp_path: Path) -> None:
    test_filenames = _create_files(tmp_path, 10, 10)
    files = backend.Dataset.from_tensor_slices(test_filenames).repeat(10)
    expected_output = [_line_text(j, i) for j in range(10) for i in range(10)]
    dataset = backend.data.TextLineDataset(files, num_parallel_reads=4)
    backend.assert_produces(dataset, expected_output * 10, assert_items_equal=True)


def _uneven_files(directory: Path, counts: list[int]) -> list[str]:
    names = []
    for f, count in enumerate(counts):
        path = directory / f"uneven.{f}.txt"
        path.write_bytes(b"".join(_line_text(f, i) + b"\n" for i in range(count)))
        names.append(str(path))
    return names


# (file, line) in tf.data's order: one line of each open file in turn; a finished
# file's place goes to the next file the next time round.
PARALLEL_ORDER = {
    2: [
        (0, 0),
        (1, 0),
        (0, 1),
        (0, 2),
        (2, 0),
        (2, 1),
        (2, 2),
        (4, 0),
        (2, 3),
        (4, 1),
        (2, 4),
        (5, 0),
        (5, 1),
        (5, 2),
        (5, 3),
    ],
    3: [
        (0, 0),
        (1, 0),
        (2, 0),
        (0, 1),
        (2, 1),
        (0, 2),
        (2, 2),
        (4, 0),
        (2, 3),
        (5, 0),
        (4, 1),
        (2, 4),
        (5, 1),
        (5, 2),
        (5, 3),
    ],
    8: [
        (0, 0),
        (1, 0),
        (2, 0),
        (4, 0),
        (5, 0),
        (0, 1),
        (2, 1),
        (4, 1),
        (5, 1),
        (0, 2),
        (2, 2),
        (5, 2),
        (2, 3),
        (5, 3),
        (2, 4),
    ],
}


@pytest.mark.parametrize("num_parallel_reads", sorted(PARALLEL_ORDER))
def test_parallel_read_order(backend: Backend, tmp_path: Path, num_parallel_reads: int) -> None:
    filenames = _uneven_files(tmp_path, [3, 1, 5, 0, 2, 4])
    dataset = backend.data.TextLineDataset(filenames, num_parallel_reads=num_parallel_reads)
    expected = [_line_text(f, i) for f, i in PARALLEL_ORDER[num_parallel_reads]]
    backend.assert_produces(dataset, expected)
    interleaved = backend.Dataset.from_tensor_slices(filenames).interleave(
        backend.data.TextLineDataset, cycle_length=num_parallel_reads, block_length=1
    )
    backend.assert_produces(interleaved, expected)


@verify_fns
def test_checkpoint_parallel_read(backend: Backend, tmp_path: Path, verify_fn: str) -> None:
    filenames = _uneven_files(tmp_path, [3, 1, 5, 0, 2, 4])

    def build() -> object:
        return backend.data.TextLineDataset(filenames, num_parallel_reads=3).repeat(2)

    verify(backend, verify_fn, build, 30)
