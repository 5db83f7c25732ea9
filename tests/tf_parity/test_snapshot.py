"""tf.data's ``snapshot_test.py`` (``Dataset.snapshot``) against pipestate and TensorFlow.

Each backend reads the snapshots it wrote itself: the formats differ
(docs/ops.md#snapshot). tf.data's ``assertSnapshotDirectoryContains`` checks
TensorFlow's file layout (run directories, ``%08d.shard`` files); here both
backends check only what both promise: one directory per input fingerprint,
and reading a snapshot without its input.

Left out of tf.data's tests:
- testReadUsingFlatMap / testReadOptimizableUsingFlatMap: a dataset as an element
  (``from_tensors(dataset)``), which pipestate refuses (docs/ops.md).
- the ``num_parallel_calls=4`` of testReadSnapshotDatasetCustomReaderFn's
  ``interleave`` (pipestate's interleave has no parallel form; docs/parallel.md).
- the legacy ``tf.data.experimental.snapshot`` tests and the checkpoint tests of
  snapshot's write mode, whose files are TensorFlow's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ._base import Backend, pipestate_differs
from ._base_b import record_dataset, record_writer

NUM_FILES, NUM_RECORDS = 3, 10


def _create_records(backend: Backend, directory: Path) -> list[str]:
    filenames = []
    for f in range(NUM_FILES):
        filename = str(directory / f"tf_record.{f}.txt")
        # Without record indexes: the tests delete the files after the first run, and a
        # snapshot is found by its input's fingerprint, which differs between record files
        # read by index and streamed (deleted files can't be read by index).
        writer = (
            record_writer(backend, filename)
            if backend.is_tf
            else backend.data.RecordWriter(filename, index=False)
        )
        for r in range(NUM_RECORDS):
            writer.write(b"Record %d of file %d" % (r, f))
        writer.close()
        filenames.append(filename)
    return filenames


def _expected() -> list[bytes]:
    return [b"Record %d of file %d" % (r, f) for f in range(NUM_FILES) for r in range(NUM_RECORDS)]


def _fingerprints(directory: Path) -> list[str]:
    return [
        p for p in sorted(os.listdir(directory)) if not p.endswith(".pbtxt") and "-tmp-" not in p
    ]


def _produces_set(backend: Backend, dataset: Any, expected: list[Any]) -> None:
    actual = [backend.to_numpy(x) for x in dataset]
    assert sorted(np.asarray(actual).tolist()) == sorted(np.asarray(expected).tolist())


def test_create_snapshot_dataset(backend: Backend, tmp_path: Path) -> None:
    backend.Dataset.from_tensors([1, 2, 3]).snapshot(path=str(tmp_path / "snapshot"))


@pytest.mark.parametrize("compression", [None, "AUTO", "GZIP"])
def test_read_snapshot_dataset_default(
    backend: Backend, tmp_path: Path, compression: str | None
) -> None:
    snapshot_dir = tmp_path / "snapshot"
    filenames = _create_records(backend, tmp_path)
    dataset = record_dataset(backend, filenames).snapshot(
        path=str(snapshot_dir), compression=compression
    )
    backend.assert_produces(dataset, _expected())
    assert len(_fingerprints(snapshot_dir)) == 1
    for filename in filenames:
        os.remove(filename)
    dataset2 = record_dataset(backend, filenames).snapshot(
        path=str(snapshot_dir), compression=compression
    )
    backend.assert_produces(dataset2, _expected())


@pipestate_differs("docs/ops.md#save-and-load: 'SNAPPY' compression is not available")
def test_read_snapshot_dataset_auto_write_snappy_read(backend: Backend, tmp_path: Path) -> None:
    snapshot_dir = str(tmp_path / "snapshot")
    filenames = _create_records(backend, tmp_path)
    dataset = record_dataset(backend, filenames).snapshot(path=snapshot_dir, compression="AUTO")
    backend.assert_produces(dataset, _expected())
    for filename in filenames:
        os.remove(filename)
    dataset2 = record_dataset(backend, filenames).snapshot(path=snapshot_dir, compression="SNAPPY")
    backend.assert_produces(dataset2, _expected())


def test_read_snapshot_dataset_custom_shard_fn(backend: Backend, tmp_path: Path) -> None:
    snapshot_dir = str(tmp_path / "snapshot")
    filenames = _create_records(backend, tmp_path)
    dataset = record_dataset(backend, filenames).snapshot(
        path=snapshot_dir, shard_func=lambda _: np.int64(0)
    )
    backend.assert_produces(dataset, _expected())
    for filename in filenames:
        os.remove(filename)
    dataset2 = record_dataset(backend, filenames).snapshot(
        path=snapshot_dir, shard_func=lambda _: 0
    )
    backend.assert_produces(dataset2, _expected())


def test_read_snapshot_dataset_custom_reader_fn(backend: Backend, tmp_path: Path) -> None:
    snapshot_dir = str(tmp_path / "snapshot")
    filenames = _create_records(backend, tmp_path)

    def reader(ds: Any) -> Any:
        return ds.interleave(lambda x: x, cycle_length=4)

    dataset = record_dataset(backend, filenames).snapshot(path=snapshot_dir, reader_func=reader)
    backend.assert_produces(dataset, _expected())
    for filename in filenames:
        os.remove(filename)
    dataset2 = record_dataset(backend, filenames).snapshot(snapshot_dir, reader_func=reader)
    _produces_set(backend, dataset2, _expected())


def test_snapshot_dataset_invalid_shard_fn(backend: Backend, tmp_path: Path) -> None:
    dataset = backend.Dataset.range(1000)
    path = str(tmp_path / "s")
    # Raised when built (tf.data) or at the first element (pipestate): either counts.
    backend.assert_raises_when_built_or_read(
        lambda: dataset.snapshot(path=path, shard_func=lambda _: "invalid_fn"), TypeError
    )


def test_snapshot_dataset_invalid_reader_fn(backend: Backend, tmp_path: Path) -> None:
    dataset = backend.Dataset.range(1000)
    path = str(tmp_path / "s")
    backend.assert_raises_when_built_or_read(
        lambda: dataset.snapshot(path=path, reader_func=lambda x: x + 1), TypeError
    )


def test_roundtrip_empty_snapshot(backend: Backend, tmp_path: Path) -> None:
    snapshot_dir = str(tmp_path / "snapshot")
    dataset = backend.Dataset.range(0).snapshot(path=snapshot_dir)
    backend.assert_produces(dataset, [])
    assert len(_fingerprints(tmp_path / "snapshot")) == 1
    dataset2 = dataset.snapshot(path=snapshot_dir)
    backend.assert_produces(dataset2, [])


def test_write_snapshot_dataset_simple(backend: Backend, tmp_path: Path) -> None:
    dataset = backend.Dataset.range(1000).snapshot(path=str(tmp_path / "snapshot"))
    backend.assert_produces(dataset, list(range(1000)))
    assert len(_fingerprints(tmp_path / "snapshot")) == 1


def test_write_snapshot_dataset_multiple_fingerprints(backend: Backend, tmp_path: Path) -> None:
    snapshot_dir = str(tmp_path / "snapshot")
    dataset1 = backend.Dataset.range(1000).snapshot(path=snapshot_dir)
    backend.assert_produces(dataset1, list(range(1000)))
    dataset2 = backend.Dataset.range(2000).snapshot(path=snapshot_dir)
    backend.assert_produces(dataset2, list(range(2000)))
    assert len(_fingerprints(tmp_path / "snapshot")) == 2


def test_write_snapshot_dataset_same_fingerprint_multiple_complete_runs(
    backend: Backend, tmp_path: Path
) -> None:
    snapshot_dir = str(tmp_path / "snapshot")
    for _ in range(2):
        dataset = backend.Dataset.range(1000).snapshot(path=snapshot_dir)
        backend.assert_produces(dataset, list(range(1000)))
    assert len(_fingerprints(tmp_path / "snapshot")) == 1


def test_write_snapshot_dataset_same_fingerprint_incomplete_run_restart(
    backend: Backend, tmp_path: Path
) -> None:
    snapshot_dir = str(tmp_path / "snapshot")
    next1 = iter(backend.Dataset.range(1000).snapshot(path=snapshot_dir))
    for i in range(500):
        assert int(backend.to_numpy(next(next1))) == i
    next2 = iter(backend.Dataset.range(1000).snapshot(path=snapshot_dir))
    for i in range(500):
        assert int(backend.to_numpy(next(next2))) == i
    for i in range(500, 1000):
        assert int(backend.to_numpy(next(next1))) == i
        assert int(backend.to_numpy(next(next2))) == i
    assert len(_fingerprints(tmp_path / "snapshot")) == 1


def test_write_snapshot_custom_shard_function(backend: Backend, tmp_path: Path) -> None:
    dataset = backend.Dataset.range(1000).enumerate()
    dataset = dataset.snapshot(path=str(tmp_path / "snapshot"), shard_func=lambda i, _: i % 2)
    dataset = dataset.map(lambda _, elem: elem)
    backend.assert_produces(dataset, list(range(1000)))


def test_write_snapshot_dataset_with_tuples(backend: Backend, tmp_path: Path) -> None:
    datasets = [backend.Dataset.range(k * 1000, (k + 1) * 1000) for k in range(4)]
    dataset = backend.Dataset.zip(tuple(datasets)).snapshot(path=str(tmp_path / "snapshot"))
    expected = list(zip(range(0, 1000), range(1000, 2000), range(2000, 3000), range(3000, 4000)))
    backend.assert_produces(dataset, expected)


def test_write_snapshot_shuffle_same_fingerprint(backend: Backend, tmp_path: Path) -> None:
    def make_dataset() -> Any:
        return backend.Dataset.range(1000).shuffle(1000).snapshot(path=str(tmp_path / "s"))

    _produces_set(backend, make_dataset(), list(range(1000)))
    _produces_set(backend, make_dataset(), list(range(1000)))
    assert len(_fingerprints(tmp_path / "s")) == 1
