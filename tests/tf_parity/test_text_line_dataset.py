"""tf.data's ``text_line_dataset_test.py`` against pipestate and TensorFlow.

testIteratorResourceCleanup asks psutil for the process's open files; here
the file descriptors under ``/proc/self/fd`` are read instead (Linux only).

Left out of tf.data's tests:
- testName: the ``name=`` argument of tf.data ops.
- testTextLineDatasetParallelRead: ``num_parallel_reads`` (pipestate has none;
  docs/sources.md, ``TextLineDataset``: interleave the files instead).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import pytest

from ._base import Backend

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
