"""Remote reading: block read-ahead and retries of transient errors (``pipestate.data._remote``)."""

from __future__ import annotations

import errno
import io
from collections.abc import Iterator
from typing import Any

import fsspec
import numpy as np
import pytest

import pipestate as ps
from pipestate.data import _remote
from pipestate.errors import DataLossError, NotFoundError, UnavailableError

from ._faulty_fs import FaultyMemoryFileSystem, faulty

__all__ = ["faulty"]

DATA = bytes(range(256)) * 40  # 10 240 bytes: 10 blocks of 1 KiB
FAST = {"backoff": 0.001, "max_backoff": 0.002}


@pytest.fixture
def url() -> Iterator[str]:
    path = "/pipestate-remote/data.bin"
    fs = fsspec.filesystem("memory")
    fs.pipe(path, DATA)
    yield f"faultymem://{path}"
    fs.rm(path)


def _open(url: str, **options: Any) -> io.BufferedReader:
    stream = _remote.open_input(url, ps.data.ReadOptions(**{**FAST, **options}), "test")
    assert isinstance(stream, io.BufferedReader)
    return stream


@pytest.mark.parametrize("read_ahead", [0, 1, 3])
def test_sequential_read_fetches_each_block_once(
    url: str, faulty: type[FaultyMemoryFileSystem], read_ahead: int
) -> None:
    with _open(url, block_size=1024, read_ahead=read_ahead) as stream:
        assert stream.read() == DATA
        raw = stream.raw
        assert isinstance(raw, _remote.RemoteFile)
        assert len(raw._blocks) <= 1 + read_ahead  # bounded memory
    starts = sorted(start for _, start, _ in faulty.reads)
    assert starts == list(range(0, len(DATA), 1024))  # every block once, none twice
    assert faulty.bytes_read() == len(DATA)


def test_small_reads_and_seeks(url: str) -> None:
    with _open(url, block_size=1000, read_ahead=2) as stream:
        chunks = [stream.read(7) for _ in range(300)]
        assert b"".join(chunks) == DATA[:2100]
        assert stream.seek(9_999) == 9_999
        assert stream.read(5) == DATA[9_999:10_004]
        stream.seek(-3, io.SEEK_END)
        assert stream.read() == DATA[-3:]
        assert stream.read(10) == b""
        stream.seek(5)
        assert stream.readline() == DATA[5 : DATA.index(b"\n", 5) + 1]
        stream.seek(20_000)
        assert stream.read(4) == b""


@pytest.mark.parametrize("read_ahead", [0, 2])
def test_transient_failures_are_retried(
    url: str, faulty: type[FaultyMemoryFileSystem], read_ahead: int
) -> None:
    faulty.reset(failures=4, error=ConnectionResetError)
    with _open(url, block_size=1024, read_ahead=read_ahead, attempts=5) as stream:
        assert stream.read() == DATA
    assert faulty.attempts == 10 + 4  # 10 blocks, 4 failed tries


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ConnectionError("reset"), True),
        (TimeoutError("slow"), True),
        (OSError(errno.EIO, "5xx"), True),
        (OSError(errno.EBUSY, "SlowDown"), True),
        (OSError(121, "EREMOTEIO: InternalError"), True),
        (OSError("no errno"), True),
        (type("EndpointConnectionError", (Exception,), {})("x"), True),
        (type("ReadTimeoutError", (Exception,), {})("x"), True),
        (type("ClientResponseError", (Exception,), {"status": 503})("x"), True),
        (type("ClientResponseError", (Exception,), {"status": 429})("x"), True),
        (type("ClientResponseError", (Exception,), {"status": 403})("x"), False),
        (
            type(
                "ClientError",
                (Exception,),
                {"response": {"ResponseMetadata": {"HTTPStatusCode": 500}}},
            )("x"),
            True,
        ),
        (
            type(
                "ClientError",
                (Exception,),
                {"response": {"ResponseMetadata": {"HTTPStatusCode": 400}}},
            )("x"),
            False,
        ),
        (type("ConnectionTimeoutError", (Exception,), {"status": 404})("x"), False),
        (FileNotFoundError("gone"), False),
        (PermissionError("denied"), False),
        (IsADirectoryError("dir"), False),
        (OSError(errno.EINVAL, "InvalidRange"), False),
        (ValueError("bad"), False),
        (KeyError("k"), False),
        (DataLossError("damaged"), False),
        (UnavailableError("already retried"), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_is_transient(error: BaseException, transient: bool) -> None:
    assert _remote.is_transient(error) is transient


def test_error_after_the_last_attempt(url: str, faulty: type[FaultyMemoryFileSystem]) -> None:
    faulty.reset(failures=100, error=TimeoutError)
    with _open(url, block_size=1024, read_ahead=0, attempts=3) as stream:
        stream.seek(2048)
        with pytest.raises(
            UnavailableError,
            match=r"test: reading bytes 2048-3072 of 'faultymem:///pipestate-remote/data.bin' "
            r"failed 3 time\(s\) over .* s with transient errors; the last: TimeoutError: "
            r"injected failure .*ReadOptions\(attempts=",
        ) as info:
            stream.read(1)
    assert isinstance(info.value, OSError)
    assert isinstance(info.value.__cause__, TimeoutError)
    assert faulty.attempts == 3


@pytest.mark.parametrize("error", [FileNotFoundError, PermissionError])
def test_permanent_errors_are_not_retried(
    url: str, faulty: type[FaultyMemoryFileSystem], error: type[OSError]
) -> None:
    faulty.reset(failures=1, error=error)
    with _open(url, block_size=1024, read_ahead=0, attempts=5) as stream, pytest.raises(error):
        stream.read(1)
    assert faulty.attempts == 1


def test_a_read_ahead_error_surfaces_at_its_block(
    url: str, faulty: type[FaultyMemoryFileSystem]
) -> None:
    with _open(url, block_size=1024, read_ahead=2, attempts=1) as stream:
        assert stream.read(10) == DATA[:10]  # blocks 1 and 2 are being fetched
        stream.seek(5000)  # ... and dropped: the reader went elsewhere
        faulty.reset(failures=1)
        with pytest.raises(UnavailableError, match="reading bytes 4096-5120"):
            stream.read(1)
        faulty.reset()
        assert stream.read(1) == DATA[5000:5001]  # asked again, fetched again


def test_missing_file(faulty: type[FaultyMemoryFileSystem]) -> None:
    with pytest.raises(FileNotFoundError):
        _open("faultymem:///pipestate-remote/absent.bin")
    ds = ps.data.TextLineDataset("faultymem:///pipestate-remote/absent.txt")
    with pytest.raises(NotFoundError, match=r"text_line: file .*absent.txt' does not exist"):
        next(iter(ds))


def test_file_sources_read_through_failures(faulty: type[FaultyMemoryFileSystem]) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe("/pipestate-remote/lines.txt", b"".join(b"line %d\n" % i for i in range(2000)))
    with ps.data.RecordWriter("memory:///pipestate-remote/r.tfrecord", index=False) as writer:
        for i in range(500):
            writer.write(b"record %d" % i)
    options = ps.data.ReadOptions(block_size=512, attempts=6, **FAST)
    faulty.reset(failures=5)
    lines = ps.data.TextLineDataset("faultymem:///pipestate-remote/lines.txt", read_options=options)
    assert [bytes(x) for x in lines] == [b"line %d" % i for i in range(2000)]
    faulty.reset(failures=5)
    records = ps.data.RecordDataset(
        "faultymem:///pipestate-remote/r.tfrecord", read_options=options, buffer_size=300
    )
    assert [bytes(x) for x in records] == [b"record %d" % i for i in range(500)]
    assert max(n for _, _, n in faulty.reads) == 300  # buffer_size is the block size
    fs.rm("/pipestate-remote/lines.txt")
    fs.rm("/pipestate-remote/r.tfrecord")


def test_s3(s3_server: Any) -> None:
    options = s3_server.storage_options
    url = "s3://pipestate-test/remote/data.bin"
    with fsspec.open(url, "wb", **options) as f:
        f.write(DATA)
    read_options = ps.data.ReadOptions(block_size=3000, read_ahead=2)
    with _remote.open_input(url, read_options, "test", storage_options=options) as stream:
        assert stream.read(10) == DATA[:10]
        stream.seek(6500)
        assert stream.read() == DATA[6500:]
    fs, path = _remote.filesystem(url, options)
    assert _remote.read_range(fs, path, url, 100, 200, read_options, "test") == DATA[100:200]
    with pytest.raises(FileNotFoundError):
        _remote.open_input(url + ".absent", read_options, "test", storage_options=options)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"block_size": 0}, ValueError, "ReadOptions: block_size must be >= 1, got block_size=0"),
        ({"block_size": 1.5}, TypeError, "ReadOptions: block_size must be an integer"),
        ({"read_ahead": -1}, ValueError, "ReadOptions: read_ahead must be >= 0"),
        ({"attempts": 0}, ValueError, "ReadOptions: attempts must be >= 1"),
        ({"backoff": -1}, ValueError, "ReadOptions: backoff must be a finite number"),
        ({"max_backoff": float("inf")}, ValueError, "max_backoff must be a finite number"),
        ({"backoff": "1"}, TypeError, "ReadOptions: backoff must be a number of seconds"),
        ({"backoff": True}, TypeError, "ReadOptions: backoff must be a number of seconds"),
    ],
)
def test_read_options_validation(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        ps.data.ReadOptions(**kwargs)


def test_read_options_are_not_in_the_fingerprint() -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe("/pipestate-remote/fp.txt", b"a\nb\n")
    plain = ps.data.TextLineDataset("memory:///pipestate-remote/fp.txt")
    tuned = ps.data.TextLineDataset(
        "memory:///pipestate-remote/fp.txt", read_options=ps.data.ReadOptions(block_size=1)
    )
    assert plain.fingerprint == tuned.fingerprint
    assert [bytes(x) for x in tuned] == [b"a", b"b"]
    with pytest.raises(
        TypeError, match=r"text_line: read_options must be a pipestate\.data\.ReadOptions"
    ):
        ps.data.TextLineDataset("memory:///pipestate-remote/fp.txt", read_options=3)
    fs.rm("/pipestate-remote/fp.txt")


def test_next_after_an_unavailable_error_loses_nothing(
    faulty: type[FaultyMemoryFileSystem],
) -> None:
    fs = fsspec.filesystem("memory")
    lines = [b"line %d " % i + b"x" * (i % 50) for i in range(300)]
    fs.pipe("/pipestate-remote/retry.txt", b"\n".join(lines))
    options = ps.data.ReadOptions(block_size=256, read_ahead=0, attempts=2, **FAST)
    it = iter(
        ps.data.TextLineDataset("faultymem:///pipestate-remote/retry.txt", read_options=options)
    )
    got: list[bytes] = []
    failures = last_failed = 0
    while True:
        retrying = failures and len(got) == last_failed
        if len(got) % 11 == 5 and not retrying:
            faulty.reset(failures=2)  # the next request fails twice: all its attempts
        try:
            got.append(bytes(next(it)))
        except UnavailableError:
            failures += 1
            last_failed = len(got)
            continue
        except StopIteration:
            break
    assert failures >= 20  # one per 11 lines
    assert got == lines
    fs.rm("/pipestate-remote/retry.txt")


# ------------------------------------------------- Parquet and Arrow IPC sources
ARROW_ROOT = "/pipestate-remote-arrow"
ARROW_FILES = (30, 22)  # rows per file
ARROW_KINDS = ["parquet", "parquet-stream", "arrow"]


@pytest.fixture
def arrow_files() -> Iterator[dict[str, list[str]]]:
    """Two Parquet files (row groups of 4 rows) and two Arrow IPC files in ``memory://``,
    by kind: their ``faultymem://`` URLs."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    fs = fsspec.filesystem("memory")
    urls: dict[str, list[str]] = {"parquet": [], "arrow": []}
    first = 0
    for k, n in enumerate(ARROW_FILES):
        ids = list(range(first, first + n))
        data = pa.table({"id": ids, "text": [f"row {i} " + "x" * (i % 40) for i in ids]})
        with fs.open(f"{ARROW_ROOT}/part-{k}.parquet", "wb") as f:
            pq.write_table(data, f, row_group_size=4)
        with (
            fs.open(f"{ARROW_ROOT}/part-{k}.arrow", "wb") as f,
            pa.ipc.new_file(f, data.schema) as writer,
        ):
            for batch in data.to_batches(max_chunksize=5):
                writer.write_batch(batch)
        for kind in urls:
            urls[kind].append(f"faultymem://{ARROW_ROOT}/part-{k}.{kind}")
        first += n
    yield urls
    fs.rm(ARROW_ROOT, recursive=True)


def _arrow_source(kind: str, urls: dict[str, list[str]], **options: Any) -> ps.Dataset:
    read_options = ps.data.ReadOptions(**{**FAST, "block_size": 256, **options})
    if kind == "arrow":
        return ps.Dataset.from_arrow(urls["arrow"], read_options=read_options)
    # cache_bytes=0 keeps one row group decoded: most reads go to the files again
    return ps.Dataset.from_parquet(
        urls["parquet"],
        random_access=kind == "parquet",
        cache_bytes=0,
        read_options=read_options,
    )


def _ids(elements: Any) -> list[int]:
    return [int(x) for e in elements for x in np.asarray(e["id"]).ravel()]


@pytest.mark.parametrize("kind", ARROW_KINDS)
def test_arrow_sources_read_through_failures(
    kind: str, arrow_files: dict[str, list[str]], faulty: type[FaultyMemoryFileSystem]
) -> None:
    faulty.reset(failures=4, error=ConnectionResetError)
    # no read-ahead: every request is made, and counted, before the last row is read
    ds = _arrow_source(kind, arrow_files, attempts=5, read_ahead=0)
    assert _ids(ds) == list(range(sum(ARROW_FILES)))
    assert faulty.failures == 0  # every injected failure was met ...
    assert faulty.attempts == len(faulty.reads) + 4  # ... and retried
    assert max(n for _, _, n in faulty.reads) <= 256  # in ranged reads of one block


@pytest.mark.parametrize("kind", ARROW_KINDS)
def test_arrow_sources_unavailable_names_the_file(
    kind: str, arrow_files: dict[str, list[str]], faulty: type[FaultyMemoryFileSystem]
) -> None:
    faulty.reset(failures=100, error=TimeoutError)
    first = arrow_files["arrow" if kind == "arrow" else "parquet"][0]
    op = "arrow" if kind == "arrow" else "parquet"
    with pytest.raises(
        UnavailableError,
        match=rf"{op}: reading (the size|bytes \d+-\d+) of {first!r} failed 3 time\(s\)",
    ) as info:
        _arrow_source(kind, arrow_files, attempts=3, read_ahead=0)
    assert isinstance(info.value.__cause__, TimeoutError)
    assert faulty.attempts == 3


def _read_through_outages(
    pipeline: ps.Dataset, faulty: type[FaultyMemoryFileSystem], *, continue_after: bool
) -> tuple[list[list[int]], list[str]]:
    """Every element of ``pipeline``, while every fourth read finds the storage down.

    Each outage lasts until an ``UnavailableError`` is raised. Then, with
    ``continue_after``, the iterator goes on: with ``next`` after every other
    error, else restored from the state taken after the error. Without it, a
    fresh iterator restores the state saved before the failed read (as a job
    restarts from its last checkpoint). Returns the ids read, per element, and
    the errors' messages.
    """
    it = iter(pipeline)
    got: list[list[int]] = []
    messages: list[str] = []
    armed_at = -1
    while True:
        if len(got) % 4 == 0 and armed_at != len(got):
            armed_at = len(got)
            faulty.reset(failures=10**6)  # every request fails until the error is seen
        before = it.get_state()
        try:
            element = next(it)
        except UnavailableError as err:
            messages.append(str(err))
            faulty.reset()
            if not continue_after or len(messages) % 2:
                state = it.get_state() if continue_after else before
                it = iter(pipeline)
                it.set_state(state)
            continue
        except StopIteration:
            break
        got.append(_ids([element]))
    return got, messages


def test_streamed_parquet_continues_after_unavailable_exactly_once(
    arrow_files: dict[str, list[str]], faulty: type[FaultyMemoryFileSystem]
) -> None:
    """The state after an ``UnavailableError`` still points at the row that failed:
    ``next``, or a restore of that state, reads it."""
    pipeline = _arrow_source("parquet-stream", arrow_files, attempts=2, read_ahead=0)
    expected = [_ids([row]) for row in pipeline]
    got, messages = _read_through_outages(pipeline, faulty, continue_after=True)
    assert got == expected
    assert len(messages) >= 5
    assert all("parquet: reading bytes " in m and f"{ARROW_ROOT}/part-" in m for m in messages)


@pytest.mark.parametrize("kind", ["parquet", "arrow-in-a-new-process"])
def test_random_access_arrow_sources_resume_after_unavailable_exactly_once(
    kind: str, arrow_files: dict[str, list[str]], faulty: type[FaultyMemoryFileSystem]
) -> None:
    """A state saved before a read that raised ``UnavailableError`` restores to the same
    rows: every row once. (The iterator that raised has counted its element as consumed,
    as after any error of a random-access pipeline.)"""
    import pickle

    source = _arrow_source(kind.split("-")[0], arrow_files, attempts=2, read_ahead=0)
    pipeline = source.global_shuffle(seed=5).batch(3)
    expected = [_ids([batch]) for batch in pipeline]
    if kind == "arrow-in-a-new-process":
        # As in a Loader worker: no file read yet, the first read reads them all.
        pipeline = pickle.loads(pickle.dumps(pipeline))
    got, messages = _read_through_outages(pipeline, faulty, continue_after=False)
    assert got == expected
    suffix = ".arrow'" if kind.startswith("arrow") else ".parquet'"
    assert len(messages) >= (1 if kind.startswith("arrow") else 3)
    assert all(f"faultymem://{ARROW_ROOT}/part-" in m and suffix in m for m in messages)


def test_arrow_sources_check_read_options(arrow_files: dict[str, list[str]]) -> None:
    parquet, arrow = arrow_files["parquet"], arrow_files["arrow"]
    with pytest.raises(
        TypeError, match=r"parquet: read_options must be a pipestate\.data\.ReadOptions or None"
    ):
        ps.Dataset.from_parquet(parquet, read_options={"attempts": 3})
    with pytest.raises(
        TypeError, match=r"arrow: read_options must be a pipestate\.data\.ReadOptions or None"
    ):
        ps.Dataset.from_arrow(arrow, read_options=3)
    tuned = ps.data.ReadOptions(block_size=100, attempts=9)
    # Read options change how, never what: a state restores under other settings.
    assert (
        ps.Dataset.from_parquet(parquet, read_options=tuned).fingerprint
        == ps.Dataset.from_parquet(parquet).fingerprint
    )
    assert (
        ps.Dataset.from_arrow(arrow, read_options=tuned).fingerprint
        == ps.Dataset.from_arrow(arrow).fingerprint
    )


@pytest.mark.parametrize("kind", ["parquet", "arrow"])
def test_arrow_sources_in_forked_workers_retry_on_their_own(
    kind: str, arrow_files: dict[str, list[str]], faulty: type[FaultyMemoryFileSystem]
) -> None:
    """Loader workers open the remote files again, with read-ahead threads of their own,
    and retry their own failed requests."""
    pipeline = _arrow_source(kind, arrow_files, attempts=4).global_shuffle(seed=2).batch(5)
    pipeline[0]  # files open, blocks cached and read-ahead threads started here
    expected = [_ids([batch]) for batch in pipeline]
    faulty.reset(failures=3)  # each worker inherits these: its first three requests fail
    loader = ps.data.Loader(pipeline, num_workers=2, chunk_size=2, multiprocessing_context="fork")
    assert [_ids([batch]) for batch in loader] == expected
    assert faulty.attempts == 0  # every request was a worker's
