"""Reading files through fsspec: bounded read-ahead, and retries of transient errors.

Local files are read through the OS's own file object: the kernel reads
ahead, and a local disk has no transient errors worth retrying. Every other
filesystem (S3, GCS, HTTP, ``memory://``) is read through :class:`RemoteFile`:
the file is cut into blocks of ``ReadOptions.block_size`` bytes, each fetched
with one ranged request (``fs.cat_file(path, start, end)``); while the reader
moves forward, the next ``read_ahead`` blocks are fetched on background
threads. At most ``1 + read_ahead`` blocks of a file are held at once, so
memory stays bounded whatever the file's size. A request that fails with a
transient error (:func:`is_transient`) is retried with exponential backoff;
after the last attempt :class:`~pipestate.errors.UnavailableError` names the
URL, the byte range and the attempts.

Sources use :func:`open_input` (or :func:`open_file`, given a filesystem)
for sequential reads and for readers that seek (pyarrow's Parquet and IPC
readers), and :class:`RangeReader` (or :func:`read_range`) for random reads
of byte ranges.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import math
import os
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

from pipestate._validate import brief, check_int
from pipestate.data._engine import available_cores
from pipestate.errors import PipestateError, UnavailableError

T = TypeVar("T")

__all__ = [
    "RangeReader",
    "ReadOptions",
    "RemoteFile",
    "call_with_retries",
    "check_read_options",
    "check_storage_options",
    "filesystem",
    "is_local",
    "is_transient",
    "open_file",
    "open_input",
    "read_range",
]


@dataclasses.dataclass(frozen=True)
class ReadOptions:
    """How the file sources read from filesystems other than the local disk.

    These settings change speed and robustness, never elements: they are not
    part of a pipeline's fingerprint, so a saved position restores under
    other settings.

    Attributes:
      block_size: bytes fetched by one ranged request (default 4 MiB).
      read_ahead: blocks fetched ahead of a sequential reader on background
        threads (default 2; 0 fetches each block when it is needed). Memory
        per open file is at most ``(1 + read_ahead) * block_size``.
      attempts: tries per request, the first one included (default 5; 1
        never retries).
      backoff: seconds to wait before the second try (default 0.1); each
        later wait doubles, up to ``max_backoff``, with random jitter of up
        to half the wait.
      max_backoff: the longest wait between two tries, in seconds (default 5).

    Raises:
      TypeError: a setting of the wrong type.
      ValueError: a ``block_size`` or ``attempts`` below 1, a negative
        ``read_ahead`` or a negative or non-finite backoff.

    Example:
      >>> import pipestate as ps
      >>> options = ps.data.ReadOptions(block_size=8 << 20, attempts=8)
      >>> ds = ps.Dataset.from_webdataset("s3://bucket/shard-{000..009}.tar",
      ...                                 read_options=options)  # doctest: +SKIP
    """

    block_size: int = 4 << 20
    read_ahead: int = 2
    attempts: int = 5
    backoff: float = 0.1
    max_backoff: float = 5.0

    def __post_init__(self) -> None:
        op = "ReadOptions"
        for name, minimum in (("block_size", 1), ("read_ahead", 0), ("attempts", 1)):
            number = check_int(name, getattr(self, name), minimum=minimum, op=op)
            object.__setattr__(self, name, number)
        for name in ("backoff", "max_backoff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{op}: {name} must be a number of seconds, got {brief(value, 80)}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"{op}: {name} must be a finite number of seconds >= 0, got {name}={value!r}"
                )
            object.__setattr__(self, name, float(value))


DEFAULT_READ_OPTIONS = ReadOptions()


def check_read_options(value: Any, op: str) -> ReadOptions:
    """Validates a ``read_options`` argument: a :class:`ReadOptions`, or ``None`` for defaults."""
    if value is None:
        return DEFAULT_READ_OPTIONS
    if not isinstance(value, ReadOptions):
        raise TypeError(
            f"{op}: read_options must be a pipestate.data.ReadOptions or None, got "
            f"{type(value).__name__} {brief(value, 80)}"
        )
    return value


def check_storage_options(value: Any, op: str) -> dict[str, Any]:
    """Validates a ``storage_options`` argument (fsspec's): a mapping with str keys, or ``None``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise TypeError(
            f"{op}: storage_options must be a dict of fsspec filesystem arguments (str keys) "
            f"or None, got {type(value).__name__}"
        )
    return dict(value)


# ------------------------------------------------------------------ transient errors
# Errors that no retry can fix: the file's absence, a permission, a bad request.
_PERMANENT = (
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    FileExistsError,
)
_PERMANENT_ERRNOS = frozenset(
    {
        errno.ENOENT,
        errno.EACCES,
        errno.EPERM,
        errno.EINVAL,
        errno.ENOSYS,
        errno.EROFS,
        errno.EISDIR,
        errno.ENOTDIR,
        errno.ENAMETOOLONG,
    }
)
# Clients' own exception classes that are not OSErrors (botocore's
# EndpointConnectionError and ReadTimeoutError, aiohttp's ServerDisconnectedError
# under ClientConnectionError) are recognised by these words in a class name.
_TRANSIENT_NAMES = ("Connection", "Timeout", "Throttl", "SlowDown", "Unavailable")


def is_transient(error: BaseException) -> bool:
    """Whether retrying might fix ``error``: a connection error, a timeout, a server's 5xx.

    ``ConnectionError`` and ``TimeoutError`` are; an ``OSError`` is unless it
    says the file is missing, not permitted or the request invalid (s3fs maps
    S3's ``InternalError``, ``SlowDown`` and unknown errors to ``OSError`` with
    ``EREMOTEIO`` / ``EBUSY`` / ``EIO``, and ``NoSuchKey`` to
    ``FileNotFoundError``); another client's exception is when it carries an
    HTTP status of 5xx, 408 or 429 (aiohttp's ``ClientResponseError``,
    botocore's ``ClientError``), or, carrying none, when its class name says
    connection, timeout or throttling. pipestate's own errors never are.
    """
    if isinstance(error, (PipestateError, *_PERMANENT)):
        return False
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    if isinstance(error, OSError):
        return error.errno not in _PERMANENT_ERRNOS
    status = _http_status(error)
    if status is not None:
        return status >= 500 or status in (408, 429)
    return any(word in cls.__name__ for cls in type(error).__mro__ for word in _TRANSIENT_NAMES)


def _http_status(error: BaseException) -> int | None:
    """The HTTP status a client's error carries (aiohttp's ``status``, botocore's response)."""
    for name in ("status", "status_code"):
        status = getattr(error, name, None)
        if isinstance(status, int) and not isinstance(status, bool):
            return status
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(status, int):
            return status
    return None


def call_with_retries(
    fn: Callable[[], T], what: Callable[[], str], options: ReadOptions, op: str
) -> T:
    """``fn()``, tried up to ``options.attempts`` times while it fails with transient errors.

    Raises:
      UnavailableError: the last attempt failed with a transient error; the
        message names ``what()`` (the URL and byte range) and the attempts.
      Exception: any other error of ``fn``, at once and unchanged.
    """
    attempts = options.attempts
    started = time.monotonic()
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as err:
            if not is_transient(err):
                raise
            if attempt == attempts:
                detail = str(err) if len(str(err)) <= 300 else str(err)[:297] + "..."
                raise UnavailableError(
                    f"{op}: {what()} failed {attempts} time(s) over "
                    f"{time.monotonic() - started:.1f} s with transient errors; the last: "
                    f"{type(err).__name__}: {detail}. Check the storage service "
                    "and the connection, or allow more tries with "
                    "ps.data.ReadOptions(attempts=..., max_backoff=...)."
                ) from err
            wait = min(options.max_backoff, options.backoff * 2 ** (attempt - 1))
            time.sleep(wait * random.uniform(0.5, 1.0))
    raise AssertionError("unreachable: attempts >= 1")  # pragma: no cover


# ------------------------------------------------------------------ opening files
def filesystem(path: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec filesystem of ``path`` (a local path or a URL) and the path inside it."""
    fs, fs_path = fsspec.core.url_to_fs(path, **(storage_options or {}))
    return fs, fs_path


def is_local(fs: Any) -> bool:
    """Whether ``fs`` is the local disk (read with the OS's file object, no retries)."""
    return isinstance(fs, LocalFileSystem)


def open_input(
    path: str,
    options: ReadOptions,
    op: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
    block_size: int | None = None,
) -> BinaryIO:
    """Opens ``path`` for sequential reading (seekable), with read-ahead and retries if remote.

    ``block_size`` overrides ``options.block_size`` (a source's ``buffer_size``).

    Raises:
      FileNotFoundError: the file does not exist (never retried).
      UnavailableError: the file's size could not be read after the last attempt.
    """
    fs, fs_path = filesystem(path, storage_options)
    return open_file(fs, fs_path, path, options, op, block_size=block_size)


def open_file(
    fs: Any,
    fs_path: str,
    url: str,
    options: ReadOptions,
    op: str,
    *,
    block_size: int | None = None,
) -> BinaryIO:
    """:func:`open_input` for a file of a filesystem already made: ``fs_path`` in ``fs``.

    ``url`` names the file in errors.

    Raises:
      FileNotFoundError: the file does not exist (never retried).
      UnavailableError: the file's size could not be read after the last attempt.
    """
    if is_local(fs):
        stream: BinaryIO = fs.open(fs_path, "rb")
        return stream
    if block_size:
        options = dataclasses.replace(options, block_size=block_size)
    raw = RemoteFile(fs, fs_path, url, options, op)
    # Headers and lines are small reads: a buffer in front of the blocks keeps
    # each from costing a call into the block cache.
    return io.BufferedReader(raw, buffer_size=min(options.block_size, 1 << 16))


def read_range(
    fs: Any,
    fs_path: str,
    url: str,
    start: int,
    end: int,
    options: ReadOptions,
    op: str,
    *,
    exact: bool = True,
) -> bytes:
    """Bytes ``[start, end)`` of a file, in one request retried as :func:`call_with_retries`.

    With ``exact=False`` a file that ends before ``end`` gives fewer bytes.

    Raises:
      UnavailableError: the request kept failing, or (``exact``) kept returning
        fewer bytes.
      FileNotFoundError: the file does not exist.
    """

    def fetch() -> bytes:
        data = fs.cat_file(fs_path, start=start, end=end)
        if exact and len(data) != end - start:
            raise _ShortReadError(
                f"the server returned {len(data)} of the {end - start} bytes asked for"
            )
        return bytes(data)

    return call_with_retries(fetch, lambda: f"reading bytes {start}-{end} of {url!r}", options, op)


class _ShortReadError(OSError):
    """A ranged request returned fewer bytes than the file has there (retried)."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EIO, message)


# ---------------------------------------------------------------- the block cache
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _read_ahead_pool() -> ThreadPoolExecutor:
    """The threads that fetch blocks ahead (shared by every open file of the process)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            # The threads wait on the network, not on a core: a few more than
            # the cores keep several files' blocks in flight.
            _executor = ThreadPoolExecutor(
                max_workers=max(4, available_cores()), thread_name_prefix="pipestate-read-ahead"
            )
        return _executor


def _forget_pool_after_fork() -> None:
    # A forked child (a Loader worker) inherits the pool object but not its
    # threads: it makes its own on first use.
    global _executor, _executor_lock
    _executor = None
    _executor_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


class RemoteFile(io.RawIOBase):
    """A seekable, read-only file of a remote filesystem, read in blocks fetched ahead.

    Reading at position ``p`` needs block ``p // block_size``; it and the
    ``read_ahead`` blocks after it are kept (fetched on the pool's threads if
    not yet there), every other block is dropped. A seek anywhere costs
    nothing until the next read. A fetch's error surfaces at the read that
    needs its block.

    Raises:
      FileNotFoundError: (when made) the file does not exist.
      UnavailableError: (when made, or reading) a request kept failing.
    """

    def __init__(self, fs: Any, fs_path: str, url: str, options: ReadOptions, op: str) -> None:
        super().__init__()
        self._fs = fs
        self._fs_path = fs_path
        self._url = url
        self._options = options
        self._op = op
        size = call_with_retries(
            lambda: fs.size(fs_path), lambda: f"reading the size of {url!r}", options, op
        )
        if size is None:
            raise UnavailableError(
                f"{op}: the filesystem of {url!r} does not report the file's size, which "
                "ranged reads need"
            )
        self._size = int(size)
        self._position = 0
        self._blocks: dict[int, bytes | Future[bytes]] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            position = offset
        elif whence == io.SEEK_CUR:
            position = self._position + offset
        elif whence == io.SEEK_END:
            position = self._size + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if position < 0:
            raise ValueError(f"negative seek position {position}")
        self._position = position
        return position

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        position = self._position
        if position >= self._size or not len(buffer):
            return 0
        size = self._options.block_size
        index = position // size
        block = self._block(index)
        start = position - index * size
        count = min(len(buffer), len(block) - start)
        memoryview(buffer).cast("B")[:count] = block[start : start + count]
        self._position = position + count
        return count

    def readall(self) -> bytes:
        """The rest of the file, joined from whole blocks (read ahead as any read).

        A failed block leaves the position where it was: a retry reads it all again.
        """
        if self.closed:
            raise ValueError("I/O operation on closed file")
        size = self._options.block_size
        position = self._position
        parts = []
        while position < self._size:
            index = position // size
            block = self._block(index)
            parts.append(block[position - index * size :])
            position = index * size + len(block)
        self._position = max(position, self._position)
        return b"".join(parts)

    def _block(self, index: int) -> bytes:
        """Block ``index``, with the blocks after it requested; the others dropped."""
        options = self._options
        last = min(index + options.read_ahead, (self._size - 1) // options.block_size)
        blocks = self._blocks
        for stale in [k for k in blocks if not index <= k <= last]:
            pending = blocks.pop(stale)
            if isinstance(pending, Future):
                pending.cancel()
        if last > index:
            pool = _read_ahead_pool()
            for k in range(index + 1, last + 1):
                if k not in blocks:
                    blocks[k] = pool.submit(self._fetch, k)
        block = blocks.get(index)
        if block is None:
            block = self._fetch(index)  # in this thread: no hand-off for the block needed now
        elif isinstance(block, Future):
            try:
                block = block.result()
            except BaseException:
                del blocks[index]  # asked again, it is fetched again
                raise
        blocks[index] = block
        return block

    def _fetch(self, index: int) -> bytes:
        size = self._options.block_size
        start = index * size
        end = min(start + size, self._size)
        return read_range(self._fs, self._fs_path, self._url, start, end, self._options, self._op)

    def close(self) -> None:
        if not self.closed:
            for pending in self._blocks.values():
                if isinstance(pending, Future):
                    pending.cancel()
            self._blocks = {}
        super().close()

    def __repr__(self) -> str:
        return f"RemoteFile({self._url!r}, size={self._size}, {self._options})"


class RangeReader:
    """Random reads of byte ranges of a fixed list of files, from any thread.

    Local files are read with ``os.pread`` from files each thread keeps open
    (the last few it used; they close with the thread or when evicted), so
    reads need no lock; remote ones with one :func:`read_range` request per
    read. Pickles without its open files (for worker processes).
    """

    _OPEN_FILES = 8  # per thread

    def __init__(
        self,
        paths: Sequence[str],
        options: ReadOptions,
        op: str,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._paths = tuple(paths)
        self._options = options
        self._op = op
        self._storage_options = dict(storage_options or {})
        self._local = [is_local(filesystem(p, self._storage_options)[0]) for p in self._paths]
        self._files = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_files"]  # open files stay with their process
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._files = threading.local()

    def read(self, file: int, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of file number ``file`` (fewer where the file ends first).

        Raises:
          FileNotFoundError: the file does not exist.
          UnavailableError: a remote request kept failing.
        """
        path = self._paths[file]
        if not self._local[file]:
            fs, fs_path = filesystem(path, self._storage_options)
            return read_range(fs, fs_path, path, start, end, self._options, self._op, exact=False)
        files: OrderedDict[int, io.FileIO] | None = getattr(self._files, "open", None)
        if files is None:
            files = self._files.open = OrderedDict()
        f = files.get(file)
        if f is None:
            f = io.FileIO(filesystem(path)[1], "r")
            files[file] = f
            if len(files) > self._OPEN_FILES:
                files.popitem(last=False)[1].close()
        else:
            files.move_to_end(file)
        return os.pread(f.fileno(), end - start, start)
