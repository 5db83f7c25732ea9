from __future__ import annotations

import io
import itertools
import json
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import fsspec.implementations.local
import google_crc32c
import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.data import _record_format
from pipestate.errors import DataLossError, NotFoundError, StateMismatchError
from pipestate.testing import assert_conformant, assert_elements_equal, roundtrip_state

RECORDS = [b"", b"a", b"\x00binary\x00", b"x" * 1000, "ünïcode".encode(), b"\n\r\n"]


def _write(
    path: str | Path, records: list[bytes], compression: str | None = None, index: bool = False
) -> str:
    """Writes ``records``; without an index unless asked (the streaming reader's tests)."""
    with ps.data.RecordWriter(path, compression, index=index) as writer:
        for record in records:
            writer.write(record)
    return str(path)


def _values(ds: ps.Dataset) -> list[bytes]:
    return [bytes(r) for r in ds]


@pytest.fixture
def files(tmp_path: Path) -> list[str]:
    return [
        _write(tmp_path / "a.tfrecord", RECORDS),
        _write(tmp_path / "b.tfrecord", []),
        _write(tmp_path / "c.tfrecord", [b"c%d" % i for i in range(7)]),
    ]


@pytest.fixture
def memory_dir() -> Iterator[str]:
    fs = fsspec.filesystem("memory")
    root = "/pipestate-record"
    yield f"memory://{root}"
    if fs.exists(root):
        fs.rm(root, recursive=True)


EXPECTED = [*RECORDS, *(b"c%d" % i for i in range(7))]


def test_records_in_file_order(files: list[str]) -> None:
    values = list(ps.data.RecordDataset(files))
    assert all(type(v) is np.bytes_ for v in values)
    assert [bytes(v) for v in values] == EXPECTED  # NUL bytes and all


def test_framing_is_tfrecord(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.tfrecord", [b"hello"])
    data = Path(path).read_bytes()

    def masked(payload: bytes) -> int:
        crc = google_crc32c.value(payload)
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) % 2**32

    length = struct.pack("<Q", 5)
    assert data == (
        length + struct.pack("<I", masked(length)) + b"hello" + struct.pack("<I", masked(b"hello"))
    )
    # crc32c's standard check value, masked
    assert _record_format.masked_crc(b"123456789") == masked(b"123456789")
    assert google_crc32c.value(b"123456789") == 0xE3069283


@pytest.mark.parametrize("compression", [None, "", "GZIP", "ZLIB"])
def test_compression_round_trip(tmp_path: Path, compression: str | None) -> None:
    path = _write(tmp_path / "f.tfrecord", RECORDS * 3, compression)
    ds = ps.data.RecordDataset(path, compression_type=compression, buffer_size=5)
    assert _values(ds) == RECORDS * 3
    assert_conformant(ds)


def test_memory_filesystem(memory_dir: str) -> None:
    path = _write(f"{memory_dir}/a.tfrecord", RECORDS)
    assert _values(ps.data.RecordDataset(path)) == RECORDS
    _write(f"{memory_dir}/b.tfrecord", [b"b"])
    listed = ps.Dataset.list_files(f"{memory_dir}/*.tfrecord", shuffle=False)
    assert _values(ps.data.RecordDataset(listed)) == [*RECORDS, b"b"]
    assert_conformant(ps.data.RecordDataset(listed))
    gzipped = _write(f"{memory_dir}/c.gz", RECORDS, "GZIP")
    assert_conformant(ps.data.RecordDataset(gzipped, "GZIP"))


Build = Callable[[list[str], Path], ps.Dataset]

PIPELINES: dict[str, Build] = {
    "files": lambda files, d: ps.data.RecordDataset(files),
    "empty-file": lambda files, d: ps.data.RecordDataset(files[1]),
    "list-files": lambda files, d: ps.data.RecordDataset(
        ps.Dataset.list_files(str(d / "*.tfrecord"), seed=2)
    ),
    "repeat": lambda files, d: ps.data.RecordDataset(files).repeat(2),
    "shuffle": lambda files, d: ps.data.RecordDataset(files[:2]).shuffle(3, seed=4),
    # without a.tfrecord, whose record ending in NUL bytes batch refuses
    "batch": lambda files, d: ps.data.RecordDataset(files[1:]).batch(4),
    "map-skip": lambda files, d: ps.data.RecordDataset(files).map(len).skip(3),
    "parallel-reads": lambda files, d: ps.data.RecordDataset(files, num_parallel_reads=2),
}


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_conformance(files: list[str], tmp_path: Path, name: str) -> None:
    assert_conformant(PIPELINES[name](files, tmp_path))


def test_state_layout(files: list[str]) -> None:
    it = iter(ps.data.RecordDataset(files))
    next(it), next(it)
    assert it.get_state()["iterator"] == {"file_index": 0, "offset": 16 + 17, "seed": None}


class _CountingFile(io.FileIO):
    """A file that counts the bytes the OS hands back."""

    bytes_read: ClassVar[int] = 0

    def readinto(self, buffer: Any) -> int | None:
        n = super().readinto(buffer)
        _CountingFile.bytes_read += n or 0
        return n

    def readall(self) -> bytes:
        data = super().readall()
        _CountingFile.bytes_read += len(data)
        return data


@pytest.fixture
def count_bytes(monkeypatch: pytest.MonkeyPatch) -> type[_CountingFile]:
    """Routes fsspec's local file opens through ``_CountingFile``."""

    def counting_open(path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if mode != "rb":
            return open(path, mode, **kwargs)
        return io.BufferedReader(_CountingFile(path, "r"))

    monkeypatch.setattr(fsspec.implementations.local, "open", counting_open, raising=False)
    _CountingFile.bytes_read = 0
    return _CountingFile


def test_restore_seeks_instead_of_rereading(
    tmp_path: Path, count_bytes: type[_CountingFile]
) -> None:
    count = 10_000
    path = tmp_path / "big.tfrecord"
    with ps.data.RecordWriter(path, index=False) as writer:
        for i in range(count):
            writer.write(b"record %06d " % i + b"x" * 100)
    ds = ps.data.RecordDataset(str(path))
    it = iter(ds)
    for _ in range(count - 10):
        next(it)
    state = json.loads(json.dumps(it.get_state()))
    assert count_bytes.bytes_read > 0.99 * path.stat().st_size

    count_bytes.bytes_read = 0
    restored = iter(ds)
    restored.set_state(state)
    assert bytes(next(restored)).startswith(b"record %06d " % (count - 10))
    assert count_bytes.bytes_read <= 16 * 1024  # O(1) records, not the 9 990 before
    assert path.stat().st_size > 1_000_000


def _corrupt(path: str, offset: int, flip: bytes = b"", truncate: bool = False) -> None:
    """Truncates the file at ``offset``, or XORs its bytes there with ``flip``."""
    raw = bytearray(Path(path).read_bytes())
    if truncate:
        del raw[offset:]
    for i, mask in enumerate(flip):
        raw[offset + i] ^= mask
    Path(path).write_bytes(bytes(raw))


# record 2 (b"\x00binary\x00", 8 bytes) of RECORDS starts at 16 + 17 = 33
@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            {"offset": 33 + 8, "flip": b"\x01"},
            "corrupted record at byte offset 33 of .*: the checksum of its length",
            id="bad-length-crc",
        ),
        pytest.param(
            {"offset": 33, "flip": b"\x01"},
            "corrupted record at byte offset 33 of .*: the checksum of its length",
            id="bad-length",
        ),
        pytest.param(
            {"offset": 33 + 12 + 3, "flip": b"\x80"},
            "corrupted record at byte offset 33 of .*: the checksum of its 8 data bytes",
            id="bad-data",
        ),
        pytest.param(
            {"offset": 33 + 12 + 8 + 3, "flip": b"\x10"},
            "corrupted record at byte offset 33 of .*: the checksum of its 8 data bytes",
            id="bad-data-crc",
        ),
        pytest.param(
            {"offset": 33 + 5, "truncate": True},
            "truncated record at byte offset 33 of .*: the header has 5 of 12 bytes",
            id="truncated-header",
        ),
        pytest.param(
            {"offset": 33 + 12 + 4, "truncate": True},
            "truncated record at byte offset 33 of .*: expected 8 data bytes and a 4-byte "
            "checksum, the file ends after 4",
            id="truncated-data",
        ),
        pytest.param(
            {"offset": 33 + 12 + 8 + 2, "truncate": True},
            "truncated record at byte offset 33 of .*the file ends after 10",
            id="truncated-crc",
        ),
    ],
)
def test_damaged_records(files: list[str], change: dict[str, Any], message: str) -> None:
    _corrupt(files[0], **change)
    it = iter(ps.data.RecordDataset(files))
    assert [bytes(next(it)) for _ in range(2)] == RECORDS[:2]
    with pytest.raises(DataLossError, match=f"record: {message}") as info:
        next(it)
    assert "a.tfrecord" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_damaged_compressed_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.gz", RECORDS * 50, "GZIP")
    _corrupt(path, 0, b"\xff")  # the gzip magic number
    with pytest.raises(DataLossError, match=r"f.gz' is not valid GZIP data near"):
        _values(ps.data.RecordDataset(path, "GZIP"))
    zpath = _write(tmp_path / "f.z", RECORDS * 50, "ZLIB")
    _corrupt(zpath, 40, truncate=True)
    with pytest.raises(DataLossError, match=r"f.z' is not valid ZLIB data near"):
        _values(ps.data.RecordDataset(zpath, "ZLIB"))


def test_reading_a_compressed_file_uncompressed(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.gz", RECORDS, "GZIP")
    with pytest.raises(DataLossError, match="corrupted record at byte offset 0"):
        _values(ps.data.RecordDataset(path))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"record: file .*nope' does not exist"):
        next(iter(ps.data.RecordDataset(str(tmp_path / "nope"))))


def test_changed_file_on_restore(tmp_path: Path) -> None:
    path = _write(tmp_path / "f", RECORDS)
    ds = ps.data.RecordDataset(path)
    it = iter(ds)
    for _ in range(4):
        next(it)
    state = it.get_state()
    _write(path, RECORDS[:1])
    restored = iter(ds)
    restored.set_state(state)
    with pytest.raises(StateMismatchError, match="the file has only 16 bytes"):
        next(restored)


def test_writer(tmp_path: Path) -> None:
    path = tmp_path / "f.tfrecord"
    writer = ps.data.RecordWriter(path)
    assert repr(writer) == f"RecordWriter({str(path)!r}, compression_type=None, index=True)"
    writer.write(bytearray(b"ab"))
    writer.write(memoryview(b"cd"))
    writer.write(np.frombuffer(b"ef", np.uint8))
    writer.write(np.bytes_(b"gh"))
    writer.flush()
    assert _values(ps.data.RecordDataset(str(path))) == [b"ab", b"cd", b"ef", b"gh"]
    with pytest.raises(TypeError, match="expects bytes, got str 'x'; encode it first"):
        writer.write("x")
    with pytest.raises(TypeError, match="expects a bytes-like object, got int 3"):
        writer.write(3)
    writer.close()
    writer.close()
    assert writer.closed
    with pytest.raises(ValueError, match="is closed"):
        writer.write(b"x")
    with pytest.raises(ValueError, match="is closed"):
        writer.flush()


@pytest.mark.parametrize("compression", ["GZIP", "ZLIB"])
def test_compressed_writer_flush(tmp_path: Path, compression: str) -> None:
    path = tmp_path / "f"
    with ps.data.RecordWriter(path, compression) as writer:
        writer.write(b"first")
        writer.flush()
        flushed = path.read_bytes()
        writer.write(b"second")
    assert len(flushed) > 0
    assert _values(ps.data.RecordDataset(str(path), compression)) == [b"first", b"second"]


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((3,), TypeError, "RecordWriter: path must be a str or os.PathLike, got int 3"),
        (("memory://x", "BZ2"), ValueError, "RecordWriter: compression_type must be None"),
    ],
)
def test_writer_bad_arguments(args: tuple[Any, ...], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        ps.data.RecordWriter(*args)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"filenames": None}, TypeError, "record: filenames must be a file name, a list"),
        ({"filenames": "a", "compression_type": "zlib"}, ValueError, "compression_type must be"),
        ({"filenames": "a", "buffer_size": -1}, ValueError, "buffer_size must be >= 0"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        ps.data.RecordDataset(**kwargs)


def test_large_record(tmp_path: Path) -> None:
    big = bytes(range(256)) * 100_000  # 25.6 MB, read in chunks
    path = _write(tmp_path / "big", [big, b"after"])
    assert _values(ps.data.RecordDataset(path)) == [big, b"after"]


# --------------------------------------------------------------- TensorFlow parity
@pytest.mark.parametrize("compression", ["", "GZIP", "ZLIB"])
def test_reads_files_written_by_tensorflow(tmp_path: Path, compression: str) -> None:
    tf = pytest.importorskip("tensorflow")
    path = str(tmp_path / "tf.tfrecord")
    with tf.io.TFRecordWriter(path, options=compression) as writer:
        for record in RECORDS:
            writer.write(record)
    ours = list(ps.data.RecordDataset(path, compression_type=compression))
    theirs = list(tf.data.TFRecordDataset(path, compression_type=compression).as_numpy_iterator())
    assert [bytes(r) for r in ours] == theirs == RECORDS
    for record in ours:
        assert_elements_equal(record, np.bytes_(bytes(record)))


@pytest.mark.parametrize("compression", ["", "GZIP", "ZLIB"])
def test_tensorflow_reads_files_written_here(tmp_path: Path, compression: str) -> None:
    tf = pytest.importorskip("tensorflow")
    path = _write(tmp_path / "ours.tfrecord", RECORDS, compression)
    theirs = list(tf.data.TFRecordDataset(path, compression_type=compression).as_numpy_iterator())
    assert theirs == RECORDS
    if not compression:
        # the same bytes as TensorFlow's own writer
        tf_path = str(tmp_path / "tf.tfrecord")
        with tf.io.TFRecordWriter(tf_path) as writer:
            for record in RECORDS:
                writer.write(record)
        assert Path(path).read_bytes() == Path(tf_path).read_bytes()


def test_parallel_reads_interleave_records_in_tf_order(files: list[str]) -> None:
    ds = ps.data.RecordDataset(files, num_parallel_reads=2)
    # a (6 records) and b (empty) open first; b's place goes to c once b is found empty.
    expected = [RECORDS[0], RECORDS[1], b"c0", RECORDS[2], b"c1", RECORDS[3], b"c2"]
    expected += [RECORDS[4], b"c3", RECORDS[5], b"c4", b"c5", b"c6"]
    assert _values(ds) == expected


# ------------------------------------------------------------------ record indexes
def _indexed(directory: Path | str, counts: list[int]) -> list[str]:
    """Files of ``counts[i]`` records each (NUL bytes at the ends included), with indexes."""
    return [
        _write(f"{directory}/i{i}.tfrecord", [b"%d:%d\x00" % (i, k) for k in range(n)], index=True)
        for i, n in enumerate(counts)
    ]


@pytest.fixture
def indexed(tmp_path: Path) -> list[str]:
    return _indexed(tmp_path, [4, 0, 7, 1])


def test_indexed_files_are_random_access(indexed: list[str]) -> None:
    ds = ps.data.RecordDataset(indexed)
    streamed = ps.data.RecordDataset(indexed, use_index=False)
    assert len(ds) == 12
    assert streamed.cardinality() == ps.data.UNKNOWN_CARDINALITY
    values = list(ds)
    assert [bytes(v) for v in values] == _values(streamed)  # trailing NUL bytes kept
    assert all(type(v) is np.bytes_ for v in values)
    assert bytes(ds[4]) == b"2:0\x00"
    assert bytes(ds[-1]) == b"3:0\x00"
    shuffled = [bytes(v) for v in ds.global_shuffle(seed=1)]
    assert sorted(shuffled) == sorted(bytes(v) for v in values)
    assert shuffled != [bytes(v) for v in values]
    it = iter(ds)
    next(it), next(it)
    assert it.get_state()["iterator"] == {"index": 2, "seed": None}


INDEXED_PIPELINES: dict[str, Callable[[list[str]], ps.Dataset]] = {
    "indexed": lambda files: ps.data.RecordDataset(files),
    "global-shuffle": lambda files: ps.data.RecordDataset(files).global_shuffle(seed=3),
    "shuffle-drawn-seed-repeat": lambda files: (
        ps.data.RecordDataset(files).global_shuffle().repeat(2)
    ),
    "map-batch": lambda files: ps.data.RecordDataset(files).map(len).batch(5),
    "shard": lambda files: ps.data.RecordDataset(files).shard(3, 1),
    "parallel-map": lambda files: (
        ps.data.RecordDataset(files).global_shuffle(seed=2).map(bytes, num_parallel_calls=2)
    ),
}


@pytest.mark.parametrize("name", sorted(INDEXED_PIPELINES))
def test_indexed_conformance(indexed: list[str], name: str) -> None:
    assert_conformant(INDEXED_PIPELINES[name](indexed))


def test_indexed_memory_filesystem_with_failures(memory_dir: str) -> None:
    from .._faulty_fs import FaultyMemoryFileSystem

    files = [f.replace("memory://", "faultymem://") for f in _indexed(memory_dir, [30, 20])]
    options = ps.data.ReadOptions(attempts=4, backoff=0.001)
    FaultyMemoryFileSystem.reset(failures=3, error=TimeoutError)  # reading the indexes
    ds = ps.data.RecordDataset(files, read_options=options, use_index=True)
    try:
        FaultyMemoryFileSystem.reset(failures=3)  # reading records
        expected = [b"%d:%d\x00" % (i, k) for i, n in enumerate([30, 20]) for k in range(n)]
        assert _values(ds) == expected
        assert FaultyMemoryFileSystem.attempts > 3
        FaultyMemoryFileSystem.reset(failures=4)
        with pytest.raises(ps.errors.UnavailableError, match=r"record: reading bytes 0-\d+ of"):
            ds[0]
    finally:
        FaultyMemoryFileSystem.reset()
    assert_conformant(ds.global_shuffle(seed=4), variants=())


def test_mixed_files_stream_unless_indexes_are_required(tmp_path: Path) -> None:
    files = _indexed(tmp_path, [3, 2])
    plain = _write(tmp_path / "plain.tfrecord", [b"p"])
    mixed = ps.data.RecordDataset([*files, plain])
    assert mixed.cardinality() == ps.data.UNKNOWN_CARDINALITY  # streams
    assert len(_values(mixed)) == 6
    with pytest.raises(NotFoundError, match=r"record: '.*plain.tfrecord' has no record index"):
        ps.data.RecordDataset([*files, plain], use_index=True)
    assert len(ps.data.RecordDataset([], use_index=True)) == 0
    assert ps.data.RecordDataset([]).cardinality() == 0


def test_streaming_state_into_indexed_files_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.tfrecord", RECORDS)
    before = iter(ps.data.RecordDataset(path))  # no index yet: streams
    for _ in range(3):
        next(before)
    state = roundtrip_state(before.get_state())
    expected = _values(before)
    assert ps.data.write_record_index(path) == len(RECORDS)
    indexed = iter(ps.data.RecordDataset(path))
    with pytest.raises(
        StateMismatchError,
        match=r"op #0 'record' had different settings than this dataset's "
        r"record\(.*indexed='6 records'\)",
    ):
        indexed.set_state(state)
    streaming = iter(ps.data.RecordDataset(path, use_index=False))  # the saved run's reading
    streaming.set_state(state)
    assert _values(streaming) == expected
    # and the other way round: an index state into the streaming reader
    it = iter(ps.data.RecordDataset(path))
    next(it)
    with pytest.raises(StateMismatchError, match="op #0 'record' had different settings"):
        iter(ps.data.RecordDataset(path, use_index=False)).set_state(it.get_state())


def test_write_record_index_matches_the_writer(tmp_path: Path) -> None:
    path = _write(tmp_path / "w.tfrecord", RECORDS, index=True)
    written = Path(path + ".index").read_bytes()
    Path(path + ".index").unlink()
    assert ps.data.write_record_index(Path(path)) == len(RECORDS)
    assert Path(path + ".index").read_bytes() == written
    empty = _write(tmp_path / "empty.tfrecord", [], index=True)
    assert len(ps.data.RecordDataset(empty)) == 0
    assert ps.data.write_record_index(empty) == 0


def test_write_record_index_errors(tmp_path: Path) -> None:
    gz = _write(tmp_path / "f.gz", RECORDS, "GZIP")
    with pytest.raises(
        DataLossError, match="write_record_index: corrupted record at byte offset 0"
    ):
        ps.data.write_record_index(gz)
    assert not Path(gz + ".index").exists()
    with pytest.raises(NotFoundError, match=r"write_record_index: file .*nope' does not exist"):
        ps.data.write_record_index(str(tmp_path / "nope"))
    with pytest.raises(TypeError, match="write_record_index: path must be a str"):
        ps.data.write_record_index(3)  # type: ignore[arg-type]


def test_rewriting_a_file_removes_its_index(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.tfrecord", RECORDS, index=True)
    assert Path(path + ".index").exists()
    _write(path, RECORDS[:2], index=False)
    assert not Path(path + ".index").exists()
    gz = _write(tmp_path / "g", RECORDS, "GZIP")  # compressed: no index by default
    assert not Path(gz + ".index").exists()


def _replace_index(path: str, change: Callable[[bytes], bytes]) -> None:
    index = Path(path + ".index")
    index.write_bytes(change(index.read_bytes()))


def _with_crc(data: bytes) -> bytes:
    return data + struct.pack("<I", google_crc32c.value(data))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d[:-1], r"is 79 bytes long, but its header lists 6 records \(80 bytes\)"),
        (lambda d: d[:10], r"is truncated \(10 bytes\)"),
        (lambda d: d[:40] + bytes([d[40] ^ 1]) + d[41:], r"is damaged \(its checksum does not"),
        (lambda d: b"NOTINDEX" + d[8:], r"is not a record index \(wrong magic number\)"),
        (lambda d: _with_crc(d[:8] + struct.pack("<I", 9) + d[12:-4]), "is of format version 9"),
        (
            lambda d: _with_crc(d[:28] + struct.pack("<Q", 5) + d[36:-4]),
            "is inconsistent: its offsets do not leave room",
        ),
    ],
    ids=["truncated-offsets", "truncated-header", "bad-crc", "magic", "version", "offsets"],
)
def test_damaged_index(
    tmp_path: Path,
    change: Callable[[bytes], bytes],
    message: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = _write(tmp_path / "f.tfrecord", RECORDS, index=True)
    _replace_index(path, change)
    with pytest.raises(
        DataLossError, match=f"record: the record index .*f.tfrecord.index' {message}"
    ):
        ps.data.RecordDataset(path, use_index=True)
    assert _values(ps.data.RecordDataset(path, use_index=False)) == RECORDS
    # "auto": the file streams as without an index, saying why.
    with caplog.at_level(logging.WARNING, logger="pipestate.data"):
        auto = ps.data.RecordDataset(path)
    assert auto.cardinality() == ps.data.UNKNOWN_CARDINALITY
    assert _values(auto) == RECORDS
    assert "reading the files without their indexes" in caplog.text


def test_stale_index(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.tfrecord", RECORDS, index=True)
    index = Path(path + ".index").read_bytes()
    with open(path, "ab") as f:  # a record appended by another writer
        header, footer = _record_format.frame(b"more")
        f.write(header + b"more" + footer)
    with pytest.raises(
        DataLossError, match=r"is stale: it describes a file of 1117 bytes, and .* has"
    ):
        ps.data.RecordDataset(path, use_index=True)
    assert _values(ps.data.RecordDataset(path)) == [*RECORDS, b"more"]  # "auto" streams
    # the same size, other record boundaries: caught at the first record read
    _write(path, [b"x" * (1117 - 16)], index=False)
    Path(path + ".index").write_bytes(index)
    ds = ps.data.RecordDataset(path)
    with pytest.raises(DataLossError, match="does not end where its index says"):
        ds[0]
    with pytest.raises(DataLossError, match="corrupted record at byte offset 16"):
        ds[1]


def test_use_index_argument(tmp_path: Path, indexed: list[str]) -> None:
    with pytest.raises(
        ValueError, match="record: use_index must be True, False or 'auto', got 'yes'"
    ):
        ps.data.RecordDataset(indexed, use_index="yes")
    with pytest.raises(TypeError, match="record: use_index must be True, False or 'auto', got 1"):
        ps.data.RecordDataset(indexed, use_index=1)
    with pytest.raises(
        ValueError,
        match="use_index=True needs a list of uncompressed files; compressed files can't",
    ):
        ps.data.RecordDataset(indexed, "GZIP", use_index=True)
    names = ps.Dataset.list_files(str(tmp_path / "*.tfrecord"))
    with pytest.raises(ValueError, match="a Dataset of file names can't be read by index"):
        ps.data.RecordDataset(names, use_index=True)
    assert ps.data.RecordDataset(names).cardinality() == ps.data.UNKNOWN_CARDINALITY
    with pytest.raises(ValueError, match="RecordWriter: index=True needs an uncompressed file"):
        ps.data.RecordWriter(tmp_path / "x", "ZLIB", index=True)
    with pytest.raises(TypeError, match="RecordWriter: index must be a bool or None"):
        ps.data.RecordWriter(tmp_path / "x", index="yes")  # type: ignore[arg-type]


def test_indexed_dataset_pickles(indexed: list[str]) -> None:
    ds = ps.data.RecordDataset(indexed).global_shuffle(seed=5)
    assert _values(pickle.loads(pickle.dumps(ds))) == _values(ds)


@st.composite
def _record_sources(draw: st.DrawFn) -> ps.Dataset:
    counts = draw(st.lists(st.integers(0, 6), min_size=1, max_size=3))
    directory = f"memory://pipestate-record-property/{next(_PROPERTY_DIRS)}"
    files = _indexed(directory, counts)
    if draw(st.booleans()):  # the streaming reader over the same files
        return ps.data.RecordDataset(files, use_index=False)
    return ps.data.RecordDataset(files, use_index=True)


_PROPERTY_DIRS = itertools.count()
PROPERTY_SOURCE = _record_sources()


def test_files_without_indexes_keep_the_streaming_fingerprint(files: list[str]) -> None:
    # States saved before indexes existed restore: unindexed files read as before.
    auto = ps.data.RecordDataset(files)
    assert auto.fingerprint == ps.data.RecordDataset(files, use_index=False).fingerprint
    assert auto._params() == {"filenames": files, "compression_type": None}


def test_s3_indexed_and_streaming(s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # fsspec's per-protocol defaults point s3:// at the test server
    monkeypatch.setitem(fsspec.config.conf, "s3", s3_server.storage_options)
    files = _indexed("s3://pipestate-test/records", [5, 0, 9])
    indexed = ps.data.RecordDataset(files)
    assert len(indexed) == 14
    streamed = ps.data.RecordDataset(files, use_index=False)
    assert _values(indexed) == _values(streamed)
    assert_conformant(indexed.global_shuffle(seed=2), variants=())
    assert_conformant(streamed, variants=())


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_indexed_records_in_loader_workers(tmp_path: Path, context: str) -> None:
    # (no records ending in NUL bytes: the Loader's shared-memory transfer stacks
    # bytes into S arrays, which drop them)
    files = [
        _write(tmp_path / f"l{i}", [b"%d-%d" % (i, k) for k in range(9)], index=True)
        for i in range(3)
    ]
    ds = ps.data.RecordDataset(files).global_shuffle(seed=6)
    it = iter(ps.data.Loader(ds, num_workers=2, chunk_size=3, multiprocessing_context=context))
    first = [bytes(next(it)) for _ in range(5)]
    state = it.get_state()
    rest = [bytes(x) for x in it]
    it.close()
    assert first + rest == _values(ds)
    resumed = iter(ps.data.Loader(ds, num_workers=1, multiprocessing_context=context))
    resumed.set_state(state)
    assert [bytes(x) for x in resumed] == rest
    resumed.close()


@pytest.mark.parametrize("count", [3, 7])  # asked for one by one, or found in a listing
def test_auto_finds_the_indexes_of_many_files(tmp_path: Path, count: int) -> None:
    files = _indexed(tmp_path, [2] * count)
    assert len(ps.data.RecordDataset(files)) == 2 * count
    Path(files[-1] + ".index").unlink()
    assert ps.data.RecordDataset(files).cardinality() == ps.data.UNKNOWN_CARDINALITY
    assert len(ps.data.RecordDataset(files[:-1])) == 2 * (count - 1)


def test_interleaved_files_are_streamed_not_indexed(indexed: list[str]) -> None:
    ds = ps.data.RecordDataset(indexed, num_parallel_reads=2)
    assert ds.cardinality() == ps.data.UNKNOWN_CARDINALITY  # tf.data's interleaved order
    assert sorted(_values(ds)) == sorted(_values(ps.data.RecordDataset(indexed)))
    with pytest.raises(ValueError, match="files interleaved by num_parallel_reads"):
        ps.data.RecordDataset(indexed, num_parallel_reads=2, use_index=True)


# ------------------------------------------------------------ SIGKILL and resume
READER = Path(__file__).with_name("_record_reader.py")


def test_indexed_files_resume_exactly_after_sigkill(tmp_path: Path) -> None:
    """A reader of shuffled batches of indexed files, killed with SIGKILL after its second
    checkpoint, resumes in a new process from that checkpoint as the uninterrupted run."""
    from ._record_reader import pipeline, records

    paths = []
    for k, count in enumerate([17, 9, 14]):
        paths.append(str(tmp_path / f"part-{k}.tfrecord"))
        _write(paths[-1], [b"file %d record %d" % (k, i) for i in range(count)], index=True)
    assert len(ps.data.RecordDataset(paths)) == 40  # indexed: random access
    reference = [records(batch) for batch in pipeline(paths)]
    assert len(reference) == 8
    assert sorted(r for batch in reference for r in batch) == sorted(
        f"file {k} record {i}" for k, n in enumerate([17, 9, 14]) for i in range(n)
    )
    directory = tmp_path / "checkpoints"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def command(pause_at: int) -> list[str]:
        return [sys.executable, str(READER), str(directory), str(pause_at), *paths]

    killed = subprocess.Popen(command(4), stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert killed.stdout is not None
        read: list[list[str]] = []
        for line in killed.stdout:
            message = json.loads(line)
            read.extend([message["records"]] if "records" in message else [])
            if message.get("saved") == 4:
                os.kill(killed.pid, signal.SIGKILL)  # while it waits after its second save
                break
    finally:
        killed.kill()
        assert killed.wait(timeout=60) == -signal.SIGKILL
    assert read == reference[:4]
    resumed = subprocess.run(command(0), capture_output=True, text=True, env=env, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    lines = [json.loads(line) for line in resumed.stdout.splitlines()]
    assert lines[0] == {"start": 4}
    assert [line["records"] for line in lines if "records" in line] == reference[4:]
    assert lines[-1] == {"end": len(reference)}
