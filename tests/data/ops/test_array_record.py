"""``Dataset.from_array_record``: the records of ArrayRecord files by global index."""

from __future__ import annotations

import atexit
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

array_record_module = pytest.importorskip("array_record.python.array_record_module")

import pipestate as ps  # noqa: E402
from pipestate.errors import DataLossError, NotFoundError, StateMismatchError  # noqa: E402
from pipestate.testing import assert_conformant  # noqa: E402

from ._sources import assert_elastic, assert_resumes_after_sigkill  # noqa: E402


def write(path: Path, records: list[bytes]) -> str:
    writer = array_record_module.ArrayRecordWriter(str(path), "group_size:1")
    for record in records:
        writer.write(record)
    writer.close()
    return str(path)


def numbered(first: int, n: int) -> list[bytes]:
    return [str(i).encode() for i in range(first, first + n)]


@pytest.fixture
def files(tmp_path: Path) -> list[str]:
    return [
        write(tmp_path / "a.array_record", numbered(0, 9)),
        write(tmp_path / "b", numbered(9, 5)),
    ]


def as_ints(ds: ps.Dataset) -> list[int]:
    return [int(bytes(record)) for record in ds]


def test_records_by_global_index(files: list[str]) -> None:
    ds = ps.Dataset.from_array_record(files)
    assert len(ds) == 14
    assert as_ints(ds) == list(range(14))
    assert ds[11] == np.bytes_(b"11")
    assert type(ds[11]) is np.bytes_


def test_every_byte_is_kept(tmp_path: Path) -> None:
    records = [b"\x00a\x00", b"", b"b\x00\x00"]
    ds = ps.Dataset.from_array_record(write(tmp_path / "nul", records))
    assert [bytes(record) for record in ds] == records


@pytest.mark.parametrize(
    "pipeline",
    [
        pytest.param(lambda f: ps.Dataset.from_array_record(f), id="plain"),
        pytest.param(
            lambda f: ps.Dataset.from_array_record(f).global_shuffle(seed=1).batch(4),
            id="shuffle-batch",
        ),
        pytest.param(
            lambda f: ps.Dataset.from_array_record(f).map(lambda r: np.int64(r)).batch(3),
            id="parse-batch",
        ),
    ],
)
def test_conformance(files: list[str], pipeline: Any) -> None:
    assert_conformant(pipeline(files))


def test_elastic_resharding(files: list[str]) -> None:
    source = ps.Dataset.from_array_record(files)
    assert_elastic(source, lambda batch: [int(x) for x in np.asarray(batch)])


def test_pickled_dataset(files: list[str]) -> None:
    ds = ps.Dataset.from_array_record(files)
    assert as_ints(pickle.loads(pickle.dumps(ds))) == list(range(14))


def test_errors(files: list[str], tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        ps.Dataset.from_array_record([files[0], str(tmp_path / "missing")])
    with pytest.raises(NotFoundError, match="is a directory"):
        ps.Dataset.from_array_record(str(tmp_path))
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"not an array record file" * 10)
    with pytest.raises(DataLossError, match="can't read the ArrayRecord files"):
        ps.Dataset.from_array_record(str(garbage))
    with pytest.raises(TypeError, match="paths must be a file path"):
        ps.Dataset.from_array_record(3)
    with pytest.raises(ValueError, match="empty list"):
        ps.Dataset.from_array_record([])


def test_changed_files_are_refused_at_restore(tmp_path: Path) -> None:
    path = write(tmp_path / "f", numbered(0, 6))
    it = iter(ps.Dataset.from_array_record(path))
    next(it)
    state = it.get_state()
    write(tmp_path / "f", numbered(0, 7))
    with pytest.raises(StateMismatchError, match="array_record"):
        iter(ps.Dataset.from_array_record(path)).set_state(state)


def test_resumes_after_sigkill(tmp_path: Path) -> None:
    path = write(tmp_path / "ids", numbered(0, 60))
    assert_resumes_after_sigkill("array_record", path, tmp_path / "state.json")


_PROPERTY_DIR = Path(tempfile.mkdtemp(prefix="pipestate-array-record-property-"))
atexit.register(shutil.rmtree, _PROPERTY_DIR, True)


def _property_file(rows: int) -> str:
    path = _PROPERTY_DIR / f"rows{rows}"
    return str(path) if path.exists() else write(path, numbered(0, rows))


PROPERTY_SOURCE = st.integers(0, 20).map(
    lambda rows: ps.Dataset.from_array_record(_property_file(rows))
)
