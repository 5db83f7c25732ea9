"""``FixedLengthRecordDataset``: fixed-size records, random access or streaming."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.errors import DataLossError, InvalidArgumentError, NotFoundError
from pipestate.testing import assert_conformant, assert_restorable_at_every_position

HEADER, RECORD, FOOTER = 5, 3, 2


def _record(f: int, r: int) -> bytes:
    return str(f * 2 + r).encode() * RECORD


def _contents(f: int, count: int) -> bytes:
    return b"H" * HEADER + b"".join(_record(f, r) for r in range(count)) + b"F" * FOOTER


def _write(directory: Path, counts: list[int], compression: str | None = None) -> list[str]:
    names = []
    for f, count in enumerate(counts):
        path = directory / f"records.{f}.bin"
        data = _contents(f, count)
        if compression == "GZIP":
            data = gzip.compress(data)
        elif compression == "ZLIB":
            data = zlib.compress(data)
        path.write_bytes(data)
        names.append(str(path))
    return names


def _expected(counts: list[int]) -> list[bytes]:
    return [_record(f, r) for f, count in enumerate(counts) for r in range(count)]


def _dataset(names: Any, **kwargs: Any) -> ps.Dataset:
    return ps.data.FixedLengthRecordDataset(names, RECORD, HEADER, FOOTER, **kwargs)


COUNTS = [7, 0, 4]


@pytest.mark.parametrize("compression", [None, "GZIP", "ZLIB"])
def test_records_in_file_order(tmp_path: Path, compression: str | None) -> None:
    names = _write(tmp_path, COUNTS, compression)
    values = list(_dataset(names, compression_type=compression))
    assert all(type(v) is np.bytes_ for v in values)
    assert [bytes(v) for v in values] == _expected(COUNTS)


def test_uncompressed_name_list_is_random_access(tmp_path: Path) -> None:
    ds = _dataset(_write(tmp_path, COUNTS))
    assert len(ds) == 11
    assert bytes(ds[7]) == _record(2, 0)
    assert bytes(ds[-1]) == _record(2, 3)
    shuffled = [bytes(v) for v in ds.global_shuffle(seed=3)]
    assert sorted(shuffled) == sorted(_expected(COUNTS))
    assert shuffled != _expected(COUNTS)
    it = iter(ds)
    next(it)
    assert it.get_state()["iterator"] == {"index": 1, "seed": None}


def test_trailing_nul_bytes_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "nul.bin"
    path.write_bytes(b"a\x00\x00b\x00\x00")
    ds = ps.data.FixedLengthRecordDataset(str(path), 3)
    assert [bytes(v) for v in ds] == [b"a\x00\x00", b"b\x00\x00"]
    assert [bytes(v) for v in ps.data.FixedLengthRecordDataset(str(path), 3).take(2)] == [
        b"a\x00\x00",
        b"b\x00\x00",
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="random-access"),
        pytest.param({"compression_type": "GZIP"}, id="gzip"),
        pytest.param({"compression_type": "ZLIB"}, id="zlib"),
        pytest.param({"num_parallel_reads": 2}, id="parallel-reads"),
    ],
)
def test_conformance(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    names = _write(tmp_path, COUNTS, kwargs.get("compression_type"))
    assert_conformant(_dataset(names, **kwargs))


def test_conformance_names_from_a_dataset(tmp_path: Path) -> None:
    names = _write(tmp_path, COUNTS)
    ds = _dataset(ps.Dataset.from_tensor_slices(names))
    assert ds.cardinality() == ps.data.UNKNOWN_CARDINALITY
    assert_restorable_at_every_position(ds)


def test_parallel_reads_interleave_files_one_record_at_a_time(tmp_path: Path) -> None:
    names = _write(tmp_path, [3, 1, 4])
    ds = _dataset(names, num_parallel_reads=2)
    expected = [_record(f, r) for f, r in [(0, 0), (1, 0), (0, 1), (0, 2), (2, 0)]]
    expected += [_record(2, r) for r in (1, 2, 3)]
    assert [bytes(v) for v in ds] == expected
    assert [bytes(v) for v in _dataset(names, num_parallel_reads=1)] == _expected([3, 1, 4])


@pytest.mark.parametrize("compression", [None, "GZIP"])
def test_body_not_a_multiple_of_the_record_names_the_file(
    tmp_path: Path, compression: str | None
) -> None:
    names = _write(tmp_path, COUNTS, compression)
    ds = ps.data.FixedLengthRecordDataset(
        names, RECORD + 1, HEADER, FOOTER, compression_type=compression
    )
    with pytest.raises(
        InvalidArgumentError,
        match=r"input file \".*records.0.bin\" has body length 21 bytes, which is not an exact "
        r"multiple of the record length \(4 bytes\)",
    ):
        list(ds)


@pytest.mark.parametrize("compression", [None, "ZLIB"])
def test_file_shorter_than_header_and_footer(tmp_path: Path, compression: str | None) -> None:
    path = tmp_path / "short.bin"
    path.write_bytes(zlib.compress(b"HHH") if compression else b"HHH")
    ds = ps.data.FixedLengthRecordDataset(
        str(path), RECORD, HEADER, FOOTER, compression_type=compression
    )
    with pytest.raises(InvalidArgumentError, match="has 3 bytes, fewer than the header"):
        list(ds)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        len(_dataset([str(tmp_path / "absent.bin")]))


def test_file_shrunk_after_its_size_was_read(tmp_path: Path) -> None:
    names = _write(tmp_path, [4])
    ds = _dataset(names)
    assert len(ds) == 4
    Path(names[0]).write_bytes(_contents(0, 4)[:8])
    with pytest.raises(DataLossError, match="changed since its size was looked up"):
        ds[3]


def test_damaged_compressed_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(_contents(0, 5))[:-12])
    with pytest.raises(DataLossError, match="is not valid GZIP data"):
        list(_dataset(str(path), compression_type="GZIP"))


def test_memory_filesystem() -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe("/pipestate-flr/a.bin", _contents(0, 3))
    try:
        ds = _dataset("memory://pipestate-flr/a.bin")
        assert [bytes(v) for v in ds] == _expected([3])
    finally:
        fs.rm("/pipestate-flr", recursive=True)


def test_name_and_repr(tmp_path: Path) -> None:
    ds = _dataset(_write(tmp_path, [1]), name="records")
    assert ds.name == "records"
    assert "record_bytes=3" in repr(ds)
    assert "name='records'" in repr(ds)


def test_settings_are_in_the_fingerprint(tmp_path: Path) -> None:
    names = _write(tmp_path, [2])
    base = _dataset(names).fingerprint
    assert ps.data.FixedLengthRecordDataset(names, RECORD, HEADER).fingerprint != base
    assert _dataset(names, num_parallel_reads=2).fingerprint != base
    assert _dataset(names, buffer_size=64).fingerprint == base


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"record_bytes": 0}, ValueError, "record_bytes must be >= 1"),
        ({"record_bytes": 1.5}, TypeError, "record_bytes must be an integer"),
        ({"header_bytes": -1}, ValueError, "header_bytes must be >= 0"),
        ({"footer_bytes": "2"}, TypeError, "footer_bytes must be an integer"),
        ({"compression_type": "BZ2"}, ValueError, "compression_type must be"),
        ({"num_parallel_reads": 0}, ValueError, "num_parallel_reads must be >= 1"),
        ({"buffer_size": -3}, ValueError, "buffer_size must be >= 0"),
        ({"name": ""}, TypeError, "name must be a non-empty string"),
        ({"filenames": 3}, TypeError, "filenames must be"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    arguments: dict[str, Any] = {"filenames": "x.bin", "record_bytes": 2, **kwargs}
    with pytest.raises(error, match=message):
        ps.data.FixedLengthRecordDataset(**arguments)


def _memory_files() -> list[str]:
    fs = fsspec.filesystem("memory")
    names = []
    for f, count in enumerate([0, 1, 3, 6]):
        path = f"/pipestate-flr-property/{f}.bin"
        fs.pipe(path, _contents(f, count))
        names.append(f"memory://{path}")
    return names


_PROPERTY_FILES = _memory_files()
PROPERTY_SOURCE = st.lists(st.sampled_from(_PROPERTY_FILES), min_size=1, max_size=3).map(
    lambda names: _dataset(names)
)
