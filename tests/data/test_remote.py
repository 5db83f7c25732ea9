"""Remote reading: block read-ahead and retries of transient errors (``pipestate.data._remote``)."""

from __future__ import annotations

import errno
import io
from collections.abc import Iterator
from typing import Any

import fsspec
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
