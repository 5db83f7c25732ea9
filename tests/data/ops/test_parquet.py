"""``Dataset.from_parquet``: Parquet rows by global row (row-group index) or as a stream."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
from hypothesis import strategies as st

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import pipestate as ps  # noqa: E402
from pipestate.data.ops import parquet as parquet_module  # noqa: E402
from pipestate.errors import (  # noqa: E402
    DataLossError,
    InvalidArgumentError,
    NotFoundError,
    StateMismatchError,
)
from pipestate.testing import assert_conformant, assert_elements_equal  # noqa: E402

from ._sources import assert_elastic, assert_resumes_after_sigkill  # noqa: E402

ROWS = (13, 9)  # rows of the two files, in row groups of 4
# All but the ragged "tokens" and "blob", whose values end in NUL bytes (an S array
# would drop them, so batch refuses them).
BATCHABLE = ["id", "text", "pair", "meta", "cat"]


def table(n: int, first: int = 0) -> Any:
    ids = np.arange(first, first + n, dtype=np.int64)
    return pa.table(
        {
            "id": ids,
            "score": (ids / 2).astype(np.float32),
            "flag": ids % 2 == 0,
            "text": [f"row {i}" for i in ids],
            "blob": [b"\x00b" + bytes([i % 256]) + b"\x00" for i in ids],
            "tokens": pa.array([list(range(i % 3)) for i in ids], pa.list_(pa.int32())),
            "pair": pa.array([[i, -i] for i in ids], pa.list_(pa.float32(), 2)),
            "meta": [{"a": int(i), "b": str(i)} for i in ids],
            "cat": pa.array([["x", "y"][i % 2] for i in ids]).dictionary_encode(),
        }
    )


def expected_row(i: int) -> dict[str, Any]:
    return {
        "id": np.int64(i),
        "score": np.float32(i / 2),
        "flag": np.bool_(i % 2 == 0),
        "text": np.bytes_(f"row {i}".encode()),
        "blob": np.bytes_(b"\x00b" + bytes([i % 256]) + b"\x00"),
        "tokens": np.arange(i % 3, dtype=np.int32),
        "pair": np.array([i, -i], np.float32),
        "meta": {"a": np.int64(i), "b": np.bytes_(str(i).encode())},
        "cat": np.bytes_([b"x", b"y"][i % 2]),
    }


@pytest.fixture
def files(tmp_path: Path) -> list[str]:
    paths = []
    first = 0
    for k, n in enumerate(ROWS):
        path = tmp_path / f"part-{k}.parquet"
        pq.write_table(table(n, first), path, row_group_size=4)
        paths.append(str(path))
        first += n
    return paths


def batches_of_rows(ds: ps.Dataset, size: int) -> list[Any]:
    """``ds.batch(size)`` stacked row by row, as ``batch`` over any source stacks it."""
    from pipestate.data import _structure

    rows = list(ds)
    return [_structure.stack(rows[i : i + size], ds) for i in range(0, len(rows), size)]


def ids(ds: ps.Dataset) -> list[int]:
    return [int(x) for e in ds for x in np.asarray(e["id"]).ravel()]


def test_rows_are_dicts_of_numpy_values(files: list[str]) -> None:
    ds = ps.Dataset.from_parquet(files)
    assert len(ds) == sum(ROWS)
    for i in (0, 5, 12, 13, 21, -1):
        assert_elements_equal(ds[i], expected_row(i % sum(ROWS)), f"row {i}")
    rows = list(ds)
    assert len(rows) == sum(ROWS)
    for i, row in enumerate(rows):
        assert_elements_equal(row, expected_row(i), f"row {i}")
    assert bytes(rows[3]["blob"]) == b"\x00b\x03\x00"  # every byte kept


def test_glob_and_columns(files: list[str], tmp_path: Path) -> None:
    ds = ps.Dataset.from_parquet(str(tmp_path / "*.parquet"), columns=["text", "id"])
    assert list(ds[14]) == ["text", "id"]
    assert ids(ds) == list(range(sum(ROWS)))
    assert repr(ds).startswith("parquet(files=[")


def test_batches_read_whole_row_groups(files: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []
    original = parquet_module._read_group

    def counting(parquet: Any, group: int, names: Any, name: str) -> Any:
        reads.append(group)
        return original(parquet, group, names, name)

    monkeypatch.setattr(parquet_module, "_read_group", counting)
    for columns in (["id", "score", "flag"], BATCHABLE):
        reads.clear()
        batches = list(ps.Dataset.from_parquet(files, columns=columns).batch(5))
        assert [int(x) for b in batches for x in b["id"]] == list(range(sum(ROWS)))
        assert len(reads) == 4 + 3  # each row group decoded once
    batch = batches[0]
    assert batch["pair"].shape == (5, 2)
    assert batch["text"].dtype.kind == "S"
    assert batch["meta"]["a"].tolist() == [0, 1, 2, 3, 4]
    ds = ps.Dataset.from_parquet(files, columns=BATCHABLE)
    for k in (0, 3):  # one row group, and rows of two (read as one gather by index)
        assert_elements_equal(ds.batch(4)[k], batches_of_rows(ds, 4)[k], f"batch {k}")
    with pytest.raises(InvalidArgumentError, match="tokens"):  # ragged lists: as batch does
        next(iter(ps.Dataset.from_parquet(files, columns=["tokens"]).batch(3)))


def test_numeric_columns_gather_from_one_array_per_column(files: list[str]) -> None:
    ds = ps.Dataset.from_parquet(files, columns=["id", "flag"])
    shuffled = list(ds.global_shuffle(seed=6).batch(7))
    dense = ds._dense()  # type: ignore[attr-defined]
    assert dense.usable
    assert dense.complete  # every row group decoded once, into one array per column
    again = list(ds.global_shuffle(seed=6).batch(7))
    for a, b in zip(shuffled, again):
        assert_elements_equal(a, b)
    rows = [ds[int(i)] for i in np.concatenate([b["id"] for b in shuffled])]
    assert [bool(r["flag"]) for r in rows] == [bool(x) for b in shuffled for x in b["flag"]]
    small = ps.Dataset.from_parquet(files, columns=["id", "flag"], cache_bytes=64)
    assert [b["id"].tolist() for b in small.global_shuffle(seed=6).batch(7)] == [
        b["id"].tolist() for b in shuffled
    ]
    assert not small._dense().usable  # type: ignore[attr-defined]


def test_global_shuffle_batches(files: list[str]) -> None:
    ds = ps.Dataset.from_parquet(files, columns=["id", "score"]).global_shuffle(seed=4).batch(6)
    got = [int(x) for b in ds for x in b["id"]]
    assert sorted(got) == list(range(sum(ROWS)))
    assert got != sorted(got)
    full = ps.Dataset.from_parquet(files, BATCHABLE).global_shuffle(seed=4).batch(6)
    assert [int(x) for b in full for x in b["id"]] == got


PIPELINES = {
    "all-columns": lambda f: ps.Dataset.from_parquet(f),
    "numeric-shuffle-batch": lambda f: (
        ps.Dataset.from_parquet(f, columns=["id", "score"]).global_shuffle(seed=1).batch(4)
    ),
    "strings-shuffle-batch": lambda f: (
        ps.Dataset.from_parquet(f, columns=["text", "pair"]).global_shuffle(seed=2).batch(3)
    ),
    "seedless-repeat": lambda f: (
        ps.Dataset.from_parquet(f[1], columns=["id"]).global_shuffle().repeat(2)
    ),
    "streaming": lambda f: ps.Dataset.from_parquet(f, random_access=False),
    "streaming-batch": lambda f: ps.Dataset.from_parquet(f, ["id"], random_access=False).batch(5),
    "small-cache": lambda f: ps.Dataset.from_parquet(f, cache_bytes=0).global_shuffle(seed=3),
    "numeric-small-cache": lambda f: (
        ps.Dataset.from_parquet(f, ["id", "flag"], cache_bytes=64).global_shuffle(seed=3).batch(5)
    ),
}


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_conformance(files: list[str], name: str) -> None:
    assert_conformant(PIPELINES[name](files))


def test_random_access_state_is_one_index(files: list[str]) -> None:
    it = iter(ps.Dataset.from_parquet(files, BATCHABLE).global_shuffle(seed=0).batch(4))
    next(it)
    assert it.get_state()["iterator"] == {"index": 1, "seed": None}


def test_streaming_state_is_file_row_group_and_row(files: list[str]) -> None:
    ds = ps.Dataset.from_parquet(files, random_access=False)
    assert ds.cardinality() == ps.data.UNKNOWN_CARDINALITY
    it = iter(ds)
    for _ in range(14):
        next(it)
    assert it.get_state()["iterator"] == {"file_index": 1, "row_group": 0, "row": 1, "seed": None}
    assert ids(ds) == list(range(sum(ROWS)))
    with pytest.raises(TypeError, match="does not support random access"):
        ds[0]


def test_elastic_resharding(files: list[str]) -> None:
    assert_elastic(ps.Dataset.from_parquet(files, columns=["id"]))


def test_nulls_are_an_error_naming_the_row(tmp_path: Path) -> None:
    path = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"id": [0, 1, None, 3], "s": ["a", None, "c", "d"]}), path)
    ds = ps.Dataset.from_parquet(str(path), columns=["id"])
    assert int(ds[1]["id"]) == 1
    with pytest.raises(InvalidArgumentError, match=r"column 'id' is null at row 2 of row group 0"):
        ds[2]
    with pytest.raises(InvalidArgumentError, match="column 's' is null at row 1"):
        list(ps.Dataset.from_parquet(str(path), columns=["s"], random_access=False))
    with pytest.raises(InvalidArgumentError, match="column 'id' is null"):
        list(ps.Dataset.from_parquet(str(path)).batch(4))
    with pytest.raises(InvalidArgumentError, match="column 'id' is null at row 2 of row group 0"):
        list(ps.Dataset.from_parquet(str(path), columns=["id"]).batch(4))  # vectorised


@pytest.mark.parametrize("column", ["s", "n"], ids=["string", "numeric"])
def test_null_surfaces_at_its_row_after_the_rows_before_it(tmp_path: Path, column: str) -> None:
    path = tmp_path / "nulls.parquet"
    strings = [f"v{i}" if i != 5 else None for i in range(10)]
    numbers = [float(i) if i != 5 else None for i in range(10)]
    pq.write_table(pa.table({"id": np.arange(10), "s": strings, "n": numbers}), path)
    ds = ps.Dataset.from_parquet(str(path), columns=["id", column])
    it = iter(ds)
    assert [int(next(it)["id"]) for _ in range(5)] == [0, 1, 2, 3, 4]
    state = it.get_state()
    with pytest.raises(InvalidArgumentError, match=f"column '{column}' is null at row 5"):
        next(it)
    assert int(next(it)["id"]) == 6  # the failing row counts as read; none after it is lost
    resumed = iter(ds)
    resumed.set_state(state)
    with pytest.raises(InvalidArgumentError, match=f"column '{column}' is null at row 5"):
        next(resumed)


def test_rows_of_many_row_groups_name_the_null_row(tmp_path: Path) -> None:
    path = tmp_path / "nulls.parquet"
    values = [f"v{i}" if i != 9 else None for i in range(12)]
    pq.write_table(pa.table({"s": values}), path, row_group_size=4)
    ds = ps.Dataset.from_parquet(str(path))
    rows = ds._read_rows(np.array([0, 5, 10, 1]))  # type: ignore[attr-defined]
    assert [bytes(row["s"]) for row in rows] == [b"v0", b"v5", b"v10", b"v1"]
    with pytest.raises(InvalidArgumentError, match="column 's' is null at row 1 of row group 2"):
        ds._read_rows(np.array([0, 5, 9, 1]))  # type: ignore[attr-defined]


def test_temporal_and_unsupported_types(tmp_path: Path) -> None:
    import datetime
    import decimal

    path = tmp_path / "types.parquet"
    when = datetime.datetime(2024, 5, 6, 7, 8, 9)
    data = {
        "when": [when, when],
        "day": [datetime.date(2024, 5, 6)] * 2,
        "wait": [datetime.timedelta(seconds=3)] * 2,
        "money": [decimal.Decimal("1.5"), decimal.Decimal("2.5")],
    }
    pq.write_table(pa.table(data), path)
    ds = ps.Dataset.from_parquet(str(path), columns=["when", "day", "wait"])
    row = ds[1]
    assert row["when"] == np.datetime64("2024-05-06T07:08:09")
    assert row["day"] == np.datetime64("2024-05-06", "D")
    assert row["wait"] == np.timedelta64(3, "s")
    assert next(iter(ds.batch(2)))["when"].dtype.kind == "M"
    with pytest.raises(TypeError, match=r"column 'money' at row 0 of row group 0.*Decimal"):
        ps.Dataset.from_parquet(str(path), columns=["money"])[0]


def test_missing_and_corrupt_files(files: list[str], tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        ps.Dataset.from_parquet([files[0], str(tmp_path / "missing.parquet")])
    with pytest.raises(NotFoundError, match="no files matched"):
        ps.Dataset.from_parquet(str(tmp_path / "*.nothing"))
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PAR1" + b"x" * 100)
    with pytest.raises(DataLossError, match=r"garbage.parquet.*not a readable Parquet file"):
        ps.Dataset.from_parquet(str(garbage))
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(Path(files[0]).read_bytes()[:-30])
    with pytest.raises(DataLossError, match=r"truncated.parquet"):
        ps.Dataset.from_parquet(str(truncated))


def _damage_row_group(path: Path, group: int) -> None:
    metadata = pq.ParquetFile(path).metadata
    offset = metadata.row_group(group).column(0).data_page_offset
    data = bytearray(path.read_bytes())
    data[offset : offset + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))


def test_damaged_row_group_names_file_and_row_group(tmp_path: Path) -> None:
    path = tmp_path / "damaged.parquet"
    pq.write_table(pa.table({"id": np.arange(20)}), path, row_group_size=10)
    _damage_row_group(path, 1)
    damaged = r"row group 1 of '.*damaged.parquet'"
    ds = ps.Dataset.from_parquet(str(path))
    assert int(ds[5]["id"]) == 5
    with pytest.raises(DataLossError, match=damaged):
        ds[15]
    with pytest.raises(DataLossError, match=damaged):
        list(ds)  # never a shorter epoch
    it = iter(ps.Dataset.from_parquet(str(path), random_access=False))
    assert [int(next(it)["id"]) for _ in range(10)] == list(range(10))
    with pytest.raises(DataLossError, match=damaged):
        next(it)


def test_changed_file_is_refused_at_restore(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    pq.write_table(table(10), path, row_group_size=4)
    it = iter(ps.Dataset.from_parquet(str(path)))
    next(it)
    state = it.get_state()
    streamed = iter(ps.Dataset.from_parquet(str(path), random_access=False))
    for _ in range(9):
        next(streamed)
    stream_state = streamed.get_state()
    pq.write_table(table(6), path, row_group_size=4)
    with pytest.raises(StateMismatchError, match="parquet"):
        iter(ps.Dataset.from_parquet(str(path))).set_state(state)
    resumed = iter(ps.Dataset.from_parquet(str(path), random_access=False))
    resumed.set_state(stream_state)
    with pytest.raises(StateMismatchError, match=r"row group 2 of .*has 2 row groups"):
        next(resumed)


def test_file_changed_under_a_dataset(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    pq.write_table(table(8), path, row_group_size=4)
    ds = ps.Dataset.from_parquet(str(path), columns=["id"])
    pq.write_table(table(7), path, row_group_size=4)
    with pytest.raises(StateMismatchError, match=r"row group 1 .* has 3 rows, but 4"):
        ds[5]


def test_files_with_other_columns(files: list[str], tmp_path: Path) -> None:
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"id": np.arange(3, dtype=np.int32)}), other)
    with pytest.raises(ValueError, match=r"column 'id' of .*other.parquet.* has type int32"):
        ps.Dataset.from_parquet([files[0], str(other)], columns=["id"])
    with pytest.raises(ValueError, match=r"column 'text' of .*has no such column"):
        ps.Dataset.from_parquet([files[0], str(other)], columns=["text"])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"paths_or_glob": 3}, TypeError, "paths_or_glob must be a path or glob"),
        ({"paths_or_glob": []}, ValueError, "empty list"),
        ({"columns": "id"}, TypeError, r"columns must be a list .*columns=\['id'\]"),
        ({"columns": ["id", "id"]}, ValueError, "listed twice"),
        ({"columns": []}, ValueError, "columns is empty"),
        ({"columns": ["nope"]}, ValueError, r"no column 'nope' in .*its columns are \['id'"),
        ({"filesystem": "local"}, TypeError, "filesystem must be an fsspec filesystem"),
        ({"storage_options": "x"}, TypeError, "storage_options must be a dict"),
        ({"random_access": "yes"}, TypeError, "random_access must be a bool"),
        ({"cache_bytes": -1}, ValueError, "cache_bytes must be >= 0"),
        (
            {"filesystem": fsspec.filesystem("file"), "storage_options": {"a": 1}},
            ValueError,
            "either filesystem or storage_options",
        ),
    ],
)
def test_bad_arguments(
    files: list[str], kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    arguments = {"paths_or_glob": files[0], **kwargs}
    with pytest.raises(error, match=match):
        ps.Dataset.from_parquet(**arguments)


def test_pickled_dataset_reopens_its_files(files: list[str]) -> None:
    ds = ps.Dataset.from_parquet(files, columns=["id", "text"])
    ds[3]
    copy = pickle.loads(pickle.dumps(ds))
    assert_elements_equal(copy[20], ds[20])
    assert copy.fingerprint == ds.fingerprint


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_loader_worker_processes(files: list[str], context: str) -> None:
    ds = ps.Dataset.from_parquet(files, columns=["id", "text"]).global_shuffle(seed=8).batch(4)
    ds[0]  # files open and row groups cached here: workers must open their own
    expected = [b["id"].tolist() for b in ds]
    loader = ps.data.Loader(ds, num_workers=2, chunk_size=2, multiprocessing_context=context)
    it = iter(loader)
    got = [next(it)["id"].tolist() for _ in range(3)]
    state = it.get_state()
    it.close()
    resumed = iter(ps.data.Loader(ds, num_workers=1, multiprocessing_context=context))
    resumed.set_state(state)
    got += [b["id"].tolist() for b in resumed]
    assert got == expected


@pytest.fixture
def memory_dir() -> Iterator[str]:
    fs = fsspec.filesystem("memory")
    root = "/pipestate-parquet"
    yield f"memory://{root}"
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_memory_filesystem(memory_dir: str) -> None:
    fs = fsspec.filesystem("memory")
    for k in range(2):
        with fs.open(f"{memory_dir}/part-{k}.parquet", "wb") as f:
            pq.write_table(table(6, 6 * k), f, row_group_size=4)
    ds = ps.Dataset.from_parquet(f"{memory_dir}/*.parquet", columns=["id", "text"])
    assert ids(ds) == list(range(12))
    assert_conformant(ds.global_shuffle(seed=1).batch(5))
    given_fs = ps.Dataset.from_parquet(
        "/pipestate-parquet/part-1.parquet", columns=["id"], filesystem=fs
    )
    assert ids(given_fs) == list(range(6, 12))
    streamed = ps.Dataset.from_parquet(f"{memory_dir}/*.parquet", ["id"], random_access=False)
    assert_conformant(streamed)


def test_s3(s3_server: Any) -> None:
    from tests._s3 import BUCKET

    fs = fsspec.filesystem("s3", **s3_server.storage_options)
    for k in range(2):
        with fs.open(f"{BUCKET}/parquet/part-{k}.parquet", "wb") as f:
            pq.write_table(table(7, 7 * k), f, row_group_size=4)
    url = f"s3://{BUCKET}/parquet/*.parquet"
    ds = ps.Dataset.from_parquet(url, storage_options=s3_server.storage_options)
    assert ids(ds) == list(range(14))
    assert_elements_equal(ds[9], expected_row(9))
    projected = ps.Dataset.from_parquet(url, BATCHABLE, storage_options=s3_server.storage_options)
    assert_conformant(projected.global_shuffle(seed=2).batch(4), max_positions=4)
    # Worker processes open the files again, through read-ahead threads of their own.
    shuffled = projected.global_shuffle(seed=3).batch(3)
    loader = ps.data.Loader(shuffled, num_workers=2, chunk_size=1, multiprocessing_context="spawn")
    assert [batch["id"].tolist() for batch in loader] == [b["id"].tolist() for b in shuffled]
    streamed = ps.Dataset.from_parquet(
        url, columns=["id"], storage_options=s3_server.storage_options, random_access=False
    )
    assert_conformant(streamed, max_positions=5)
    with pytest.raises(NotFoundError, match="no files matched"):
        ps.Dataset.from_parquet(
            f"s3://{BUCKET}/nothing/*.parquet", storage_options=s3_server.storage_options
        )


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    pq.write_table(table(0), path)
    ds = ps.Dataset.from_parquet(str(path))
    assert len(ds) == 0
    assert list(ds) == []
    assert list(ps.Dataset.from_parquet(str(path), random_access=False)) == []
    assert_conformant(ds)


def test_empty_file_between_others(tmp_path: Path) -> None:
    paths = []
    for k, n in enumerate([5, 0, 6]):
        paths.append(str(tmp_path / f"f{k}.parquet"))
        pq.write_table(table(n, 5 * k), paths[-1], row_group_size=4)
    ds = ps.Dataset.from_parquet(paths, columns=["id", "score"])
    assert ids(ds) == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14, 15]
    assert_conformant(ds.global_shuffle(seed=1).batch(3))
    streamed = ps.Dataset.from_parquet(paths, columns=["id"], random_access=False)
    assert ids(streamed) == ids(ds)


def test_resumes_after_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"id": np.arange(60), "x": np.zeros(60)}), path, row_group_size=16)
    assert_resumes_after_sigkill("parquet", str(path), tmp_path / "state.json")


# ----------------------------------------------------------- property test


_PROPERTY_DIR = "memory://pipestate-property/parquet"


def _property_file(rows: int, group: int) -> str:
    """A tiny file in the memory filesystem, written once per shape."""
    path = f"{_PROPERTY_DIR}/rows{rows}-group{group}.parquet"
    fs = fsspec.filesystem("memory")
    if not fs.exists(path):
        with fs.open(path, "wb") as f:
            pq.write_table(pa.table({"x": np.arange(rows) * 3}), f, row_group_size=group)
    return path


PROPERTY_SOURCE = st.tuples(st.integers(0, 20), st.integers(1, 6), st.booleans()).map(
    lambda args: ps.Dataset.from_parquet(
        _property_file(args[0], args[1]), random_access=args[2]
    ).map(lambda row: row["x"])
)


def test_a_damaged_row_group_costs_only_its_own_rows(tmp_path: Path) -> None:
    """Rows are read 128 at a time: a block reaching into a damaged row group falls back to
    reading row by row, so every readable row before and after it is delivered, and each
    damaged row raises once (counted as read) instead of the whole block failing forever."""
    path = str(tmp_path / "damaged.parquet")
    pq.write_table(
        pa.table({"x": np.arange(400, dtype=np.int64)}),
        path,
        row_group_size=100,
        compression="none",
    )
    offset = pq.ParquetFile(path).metadata.row_group(2).column(0).data_page_offset
    data = bytearray(Path(path).read_bytes())
    for i in range(offset + 10, offset + 60):
        data[i] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    it = iter(ps.Dataset.from_parquet(path))
    rows, errors, ended = [], 0, False
    for _ in range(1000):  # bounded: an error that never moves past its block must fail
        try:
            rows.append(int(next(it)["x"]))
        except StopIteration:
            ended = True
            break
        except DataLossError:
            errors += 1
    assert ended
    assert rows == [*range(200), *range(300, 400)]
    assert errors == 100
