"""``Dataset.from_arrow``: Arrow IPC files (file and stream format), memory-mapped."""

from __future__ import annotations

import atexit
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
from hypothesis import strategies as st

pa = pytest.importorskip("pyarrow")

import pipestate as ps  # noqa: E402
from pipestate.errors import DataLossError, NotFoundError, StateMismatchError  # noqa: E402
from pipestate.testing import assert_conformant, assert_elements_equal  # noqa: E402

from ._sources import assert_elastic, assert_resumes_after_sigkill  # noqa: E402


def table(n: int, first: int = 0) -> Any:
    ids = np.arange(first, first + n, dtype=np.int64)
    return pa.table(
        {
            "id": ids,
            "x": (ids * 0.5).astype(np.float64),
            "text": [f"r{i}" for i in ids],
            "emb": pa.array([[i, i + 1, i + 2] for i in ids], pa.list_(pa.int16())),
        }
    )


def write(path: Path, data: Any, stream: bool = False, chunk: int = 4) -> str:
    with pa.OSFile(str(path), "wb") as sink:
        open_writer = pa.ipc.new_stream if stream else pa.ipc.new_file
        with open_writer(sink, data.schema) as writer:
            for batch in data.to_batches(max_chunksize=chunk):
                writer.write_batch(batch)
    return str(path)


@pytest.fixture
def files(tmp_path: Path) -> list[str]:
    return [
        write(tmp_path / "a.arrow", table(10)),
        write(tmp_path / "b.arrows", table(7, 10), stream=True, chunk=3),
    ]


def ids(ds: ps.Dataset) -> list[int]:
    return [int(x) for e in ds for x in np.asarray(e["id"]).ravel()]


def test_rows_of_file_and_stream_format(files: list[str]) -> None:
    ds = ps.Dataset.from_arrow(files)
    assert len(ds) == 17
    assert ids(ds) == list(range(17))
    assert_elements_equal(
        ds[12],
        {
            "id": np.int64(12),
            "x": np.float64(6.0),
            "text": np.bytes_(b"r12"),
            "emb": np.array([12, 13, 14], np.int16),
        },
    )


def test_large_batches_are_views_of_the_mapping(tmp_path: Path) -> None:
    rows = 70_000  # one record batch of more than BLOCK_ROWS: read in place
    path = write(tmp_path / "big.arrow", pa.table({"id": np.arange(rows)}), chunk=rows)
    ds = ps.Dataset.from_arrow(path)
    column = ds._block(0).data[0]  # type: ignore[attr-defined]
    assert not column.flags.owndata  # NumPy over the mapped Arrow buffer, not a copy
    assert not column.flags.writeable
    assert int(ds[69_999]["id"]) == 69_999


def test_small_batches_are_read_as_one_block(files: list[str]) -> None:
    ds = ps.Dataset.from_arrow(files)
    assert ds._starts.tolist() == [0, 10, 17]  # type: ignore[attr-defined]  # one block a file
    batch = next(iter(ds.batch(10)))
    assert batch["id"].tolist() == list(range(10))


@pytest.mark.parametrize(
    "pipeline",
    [
        pytest.param(lambda f: ps.Dataset.from_arrow(f), id="plain"),
        pytest.param(
            lambda f: ps.Dataset.from_arrow(f, ["id", "x"]).global_shuffle(seed=1).batch(4),
            id="numeric-shuffle-batch",
        ),
        pytest.param(
            lambda f: ps.Dataset.from_arrow(f).global_shuffle(seed=2).batch(3), id="shuffle-batch"
        ),
        pytest.param(lambda f: ps.Dataset.from_arrow(f[1]).shard(2, 1).repeat(2), id="shard"),
    ],
)
def test_conformance(files: list[str], pipeline: Any) -> None:
    assert_conformant(pipeline(files))


def test_elastic_resharding(files: list[str]) -> None:
    assert_elastic(ps.Dataset.from_arrow(files, columns=["id"]))


def test_memory_filesystem_reads_the_file_into_memory() -> None:
    fs = fsspec.filesystem("memory")
    path = "/pipestate-arrow/t.arrow"
    with tempfile.TemporaryDirectory() as local:
        fs.pipe(path, Path(write(Path(local) / "t.arrow", table(9))).read_bytes())
    try:
        ds = ps.Dataset.from_arrow(f"memory://{path}", columns=["id", "text"])
        assert ids(ds) == list(range(9))
        assert_conformant(ds.global_shuffle(seed=3))
    finally:
        fs.rm("/pipestate-arrow", recursive=True)


def test_s3(s3_server: Any, tmp_path: Path) -> None:
    from tests._s3 import BUCKET

    fs = fsspec.filesystem("s3", **s3_server.storage_options)
    fs.pipe(f"{BUCKET}/arrow/t.arrow", Path(write(tmp_path / "t.arrow", table(11))).read_bytes())
    ds = ps.Dataset.from_arrow(
        f"s3://{BUCKET}/arrow/*.arrow", storage_options=s3_server.storage_options
    )
    assert ids(ds) == list(range(11))
    assert_conformant(ds.global_shuffle(seed=1).batch(4), max_positions=4)


def test_pickled_dataset_maps_the_files_again(files: list[str]) -> None:
    ds = ps.Dataset.from_arrow(files)
    copy = pickle.loads(pickle.dumps(ds))
    assert_elements_equal(copy[15], ds[15])
    assert len(pickle.dumps(ds)) < 10_000  # the table itself is not pickled


def test_errors(files: list[str], tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        ps.Dataset.from_arrow(str(tmp_path / "missing.arrow"))
    garbage = tmp_path / "garbage.arrow"
    garbage.write_bytes(b"ARROW1" + b"\x00" * 50)
    with pytest.raises(DataLossError, match=r"garbage.arrow.*not a readable Arrow IPC file"):
        ps.Dataset.from_arrow(str(garbage))
    truncated = tmp_path / "truncated.arrow"
    truncated.write_bytes(Path(files[0]).read_bytes()[:-40])
    with pytest.raises(DataLossError, match=r"truncated.arrow"):
        ps.Dataset.from_arrow(str(truncated))
    other = write(tmp_path / "other.arrow", pa.table({"id": np.arange(3)}))
    with pytest.raises(ValueError, match="every file must have the same schema"):
        ps.Dataset.from_arrow([files[0], other])
    with pytest.raises(ValueError, match=r"no column 'nope'"):
        ps.Dataset.from_arrow(files, columns=["nope"])
    with pytest.raises(TypeError, match="arrow: paths must be a path or glob"):
        ps.Dataset.from_arrow(7)


def test_changed_file_is_refused_at_restore(tmp_path: Path) -> None:
    path = tmp_path / "t.arrow"
    write(path, table(8))
    it = iter(ps.Dataset.from_arrow(str(path)))
    next(it)
    state = it.get_state()
    write(path, table(9))
    with pytest.raises(StateMismatchError, match="arrow"):
        iter(ps.Dataset.from_arrow(str(path))).set_state(state)


def test_empty_file(tmp_path: Path) -> None:
    ds = ps.Dataset.from_arrow(write(tmp_path / "empty.arrow", table(0)))
    assert len(ds) == 0
    assert list(ds) == []


def test_resumes_after_sigkill(tmp_path: Path) -> None:
    path = write(tmp_path / "ids.arrow", pa.table({"id": np.arange(60)}), chunk=16)
    assert_resumes_after_sigkill("arrow", path, tmp_path / "state.json")


# ----------------------------------------------------------- property test

_PROPERTY_DIR = Path(tempfile.mkdtemp(prefix="pipestate-arrow-property-"))
atexit.register(shutil.rmtree, _PROPERTY_DIR, True)


def _property_file(rows: int, chunk: int, stream: bool) -> str:
    """A tiny IPC file, written once per shape (in a temporary directory of this process)."""
    path = _PROPERTY_DIR / f"rows{rows}-chunk{chunk}-{'stream' if stream else 'file'}.arrow"
    if not path.exists():
        write(path, pa.table({"x": np.arange(rows) * 2}), stream=stream, chunk=chunk)
    return str(path)


PROPERTY_SOURCE = st.tuples(st.integers(0, 20), st.integers(1, 6), st.booleans()).map(
    lambda args: ps.Dataset.from_arrow(_property_file(*args)).map(lambda row: row["x"])
)
