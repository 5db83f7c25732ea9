"""File access for checkpoints through fsspec: local paths and any URL.

Behaviour follows what the filesystem can do, never the URL's prefix: a
filesystem that exposes local files (``fs.local_file``) gets memory-mapped
reads, ``fsync`` and atomic rename; any other filesystem gets ranged reads and
whole-object writes, where the single final write of a file is its commit.

Every call into the filesystem goes through one guard: an exception that is
not an ``OSError`` (botocore's, aiohttp's, a plugin's own) becomes a
:class:`~pipestate.errors.StorageError` naming the operation and the path, and
with a ``timeout`` a call that does not return in time raises
:class:`~pipestate.errors.StorageTimeoutError` (the call is left running on a
daemon thread).
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import re
import shutil
import stat
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, BinaryIO, TypeVar

import fsspec

from pipestate.errors import (
    CorruptCheckpointError,
    NotFoundError,
    PipestateError,
    StorageError,
    StorageTimeoutError,
)

_T = TypeVar("_T")

__all__ = [
    "RandomAccessFile",
    "Storage",
    "as_path",
    "check_storage_options",
    "check_timeout",
    "temporary_pattern",
]


def check_timeout(timeout: object) -> float | None:
    """``timeout`` as positive seconds or ``None``; ``TypeError`` / ``ValueError`` otherwise."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r}")
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(
            f"timeout must be a positive, finite number of seconds or None, got {timeout!r}"
        )
    return float(timeout)


def _call_with_deadline(fn: Callable[[], _T], timeout: float, what: str) -> _T:
    """Run ``fn`` on a daemon thread; raise :class:`StorageTimeoutError` after ``timeout`` s.

    A call that overruns keeps running in the background: nothing can stop a
    thread blocked in a socket, and a daemon thread never holds up the exit.
    """
    done = threading.Event()
    result: list[Any] = []

    def target() -> None:
        try:
            result.append((True, fn()))
        except BaseException as err:
            result.append((False, err))
        finally:
            done.set()

    threading.Thread(target=target, name=f"pipestate-storage({what})", daemon=True).start()
    if not done.wait(timeout):
        raise StorageTimeoutError(
            f"{what} did not finish within the storage timeout of {timeout:g} s; the storage is "
            "unreachable or hung. Check the endpoint (or raise `timeout`) and try again"
        )
    ok, value = result[0]
    if ok:
        return value  # type: ignore[no-any-return]
    raise value


def as_path(value: object, what: str) -> str:
    """``value`` as a path string, or ``TypeError`` / ``ValueError`` naming ``what``."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, bytes) or not isinstance(value, str):
        raise TypeError(
            f"{what} must be a str or os.PathLike (a local path or an fsspec URL), "
            f"got {value!r} of type {type(value).__name__}"
        )
    if not value:
        raise ValueError(
            f"{what} must not be empty, got {value!r}; pass a path such as 'ckpt/model'"
        )
    if "\0" in value:
        raise ValueError(f"{what} must not contain NUL characters, got {value!r}")
    return value


def check_storage_options(storage_options: object) -> dict[str, Any]:
    """``storage_options`` as a dict of keyword arguments, or ``TypeError``."""
    if storage_options is None:
        return {}
    if not isinstance(storage_options, Mapping) or not all(
        isinstance(k, str) for k in storage_options
    ):
        raise TypeError(
            "storage_options must be a mapping of str keys to fsspec filesystem arguments "
            f"(e.g. {{'anon': True}}) or None, got {storage_options!r:.100}"
        )
    return dict(storage_options)


def temporary_pattern(basename: str, *, escaped: bool = False) -> str:
    """A regular expression matching the temporaries :meth:`Storage.write_atomic` uses for a file.

    ``basename`` is taken literally unless ``escaped`` says it is a regular
    expression already.
    """
    name = basename if escaped else re.escape(basename)
    return rf"\.{name}\.tmp-[0-9a-f]{{32}}"


def _open_regular(path: str) -> BinaryIO:
    """Open a local regular file for reading.

    A FIFO or device under a checkpoint's name would block or never end; it is
    opened without blocking and refused.

    Raises:
        CorruptCheckpointError: When ``path`` is not a regular file.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CorruptCheckpointError(f"{path!r} is not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class RandomAccessFile:
    """A file opened for reading at arbitrary offsets: a memory map or an fsspec file."""

    def __init__(self, storage: Storage, path: str) -> None:
        self.path = path
        self._map: mmap.mmap | None = None
        self._file: Any = None
        if storage.local:
            with _open_regular(path) as f:
                self.size = os.fstat(f.fileno()).st_size
                if self.size:
                    self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        else:
            self._storage = storage
            # A cached listing may describe an older version of the file (its ETag).
            storage.refresh(storage.split(path)[0])
            self._file = storage.call("open", path, storage.fs.open, path, "rb")
            self.size = int(storage.call("size of", path, storage.fs.size, path))

    def read(self, offset: int, length: int) -> bytes:
        """Return exactly ``length`` bytes from ``offset`` (the caller checked the bounds)."""
        if length == 0:
            return b""
        if self._map is not None:
            return self._map[offset : offset + length]

        def read() -> bytes:
            self._file.seek(offset)
            data: bytes = self._file.read(length)
            return data

        return self._storage.call("read", self.path, read)

    def view(self, offset: int, length: int) -> memoryview | None:
        """A zero-copy view of the bytes when memory-mapped (the caller checked the bounds)."""
        if self._map is None or offset + length > self.size:
            return None
        return memoryview(self._map)[offset : offset + length]

    def close(self) -> None:
        """Release the memory map or the file handle."""
        if self._map is not None:
            # A view handed out may still be alive; the map then goes with it.
            with contextlib.suppress(BufferError):
                self._map.close()
            self._map = None
        if self._file is not None:
            file, self._file = self._file, None
            self._storage.call("close", self.path, file.close)

    def __repr__(self) -> str:
        kind = "mmap" if self._map is not None else "fsspec"
        return f"RandomAccessFile({self.path!r}, size={self.size}, {kind})"


class Storage:
    """One fsspec filesystem and the operations checkpoints need from it.

    Paths given to the methods are paths *on the filesystem* (as returned by
    :meth:`for_path`), not URLs.
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, *, timeout: float | None = None) -> None:
        self.fs = fs
        # A filesystem of local files allows mmap, fsync and an atomic os.replace.
        self.local = bool(getattr(fs, "local_file", False))
        self.timeout = check_timeout(timeout)

    @classmethod
    def for_path(
        cls,
        url: str,
        storage_options: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> tuple[Storage, str]:
        """Return the storage for a local path or URL, and the path on that filesystem.

        ``storage_options`` are passed to the fsspec filesystem's constructor
        (e.g. ``{"client_kwargs": {"endpoint_url": ...}}`` for S3); fsspec's
        own configuration (``fsspec.config.conf``, ``FSSPEC_<PROTOCOL>_<KEY>``
        environment variables) applies as well. ``timeout`` bounds every
        single storage call, in seconds.
        """
        fs, path = fsspec.core.url_to_fs(url, **check_storage_options(storage_options))
        return cls(fs, timeout=timeout), path

    def __repr__(self) -> str:
        return f"Storage(protocol={self.fs.protocol!r}, local={self.local}, timeout={self.timeout})"

    def call(self, op: str, path: str, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Call ``fn`` (a filesystem operation ``op`` on ``path``) within the timeout.

        ``OSError`` and pipestate's own errors pass through; any other
        exception becomes :class:`StorageError` naming ``op`` and ``path``.

        Raises:
            StorageTimeoutError: When the call does not return within ``timeout``.
            StorageError: When the filesystem raised something that is not an ``OSError``.
        """
        what = f"{op} {path!r} on {self._name()}"
        try:
            if self.timeout is None:
                return fn(*args, **kwargs)
            return _call_with_deadline(lambda: fn(*args, **kwargs), self.timeout, what)
        except (OSError, PipestateError):
            raise
        except Exception as err:
            raise StorageError(
                f"{what} failed: {type(err).__name__}: {err}. The storage is failing or "
                "unreachable; check its endpoint and credentials and try again"
            ) from err

    def _name(self) -> str:
        protocol = self.fs.protocol
        return f"{protocol if isinstance(protocol, str) else protocol[0]} storage"

    # -- paths -----------------------------------------------------------------
    def join(self, directory: str, name: str) -> str:
        """Join a directory and a file name."""
        if self.local:
            return os.path.join(directory, name)
        return f"{directory.rstrip('/')}/{name}" if directory else name

    def split(self, path: str) -> tuple[str, str]:
        """Split a path into its directory and its last component."""
        if self.local:
            return os.path.split(path)
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    # -- queries ---------------------------------------------------------------
    def isfile(self, path: str) -> bool:
        """Whether ``path`` is an existing file."""
        if self.local and self.timeout is None:
            return os.path.isfile(path)
        if self.local:
            return self.call("stat", path, os.path.isfile, path)
        return bool(self.call("stat", path, self.fs.isfile, path))

    def isdir(self, path: str) -> bool:
        """Whether ``path`` is an existing directory."""
        if self.local and self.timeout is None:
            return os.path.isdir(path)
        if self.local:
            return self.call("stat", path, os.path.isdir, path)
        return bool(self.call("stat", path, self.fs.isdir, path))

    def refresh(self, directory: str) -> None:
        """Forget cached listings of ``directory``, so that files other processes wrote are seen."""
        if not self.local:
            self.call("refresh the listing of", directory, self.fs.invalidate_cache, directory)

    def listdir(self, directory: str) -> list[str]:
        """Names (not paths) of the entries of ``directory``; empty when it does not exist."""
        try:
            if self.local:
                return sorted(self.call("list", directory, os.listdir, directory or "."))
            self.refresh(directory)
            names = self.call("list", directory, self.fs.ls, directory, detail=False)
            return sorted(self.split(p)[1] for p in names)
        except (FileNotFoundError, NotADirectoryError):
            return []

    # -- reading ---------------------------------------------------------------
    def read_bytes(self, path: str, *, what: str = "file") -> bytes:
        """Read a whole (small) file; raise :class:`NotFoundError` when it is missing."""
        try:
            if self.local:

                def read() -> bytes:
                    with _open_regular(path) as f:
                        return f.read()

                return self.call("read", path, read)
            for attempt in range(3):
                try:
                    data: bytes = self.call("read", path, self.fs.cat_file, path)
                    return data
                except OSError as err:
                    # Replaced while being read (s3fs's FileExpired): the new one is whole.
                    if type(err).__name__ != "FileExpired" or attempt == 2:
                        raise
                    self.refresh(self.split(path)[0])
            raise AssertionError("unreachable")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as err:
            raise NotFoundError(f"{what} {path!r} does not exist") from err

    def open_random_access(self, path: str, *, what: str = "file") -> RandomAccessFile:
        """Open a file for ranged reads (memory-mapped when local)."""
        try:
            if self.local:
                return self.call("open", path, RandomAccessFile, self, path)
            return RandomAccessFile(self, path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as err:
            raise NotFoundError(f"{what} {path!r} does not exist") from err

    # -- writing ---------------------------------------------------------------
    def makedirs(self, directory: str) -> None:
        """Create ``directory`` and its parents if needed."""
        if directory:
            self.call("create directory", directory, self.fs.makedirs, directory, exist_ok=True)

    @contextmanager
    def open_write(self, path: str, *, fsync: bool) -> Iterator[BinaryIO]:
        """Open ``path`` for streaming writes under its final name; flush (and fsync) on exit.

        When the body raises, a remote file is discarded rather than
        committed: an object store's multipart upload is aborted, so that no
        incomplete upload is left behind (and billed).
        """
        if self.local:
            # A new file, never the old one truncated: a reader may still have the old
            # one memory-mapped, and touching its vanished pages would kill the process.
            self.remove(path)
            raw = self.call("open", path, open, path, "wb", buffering=0)
            try:
                yield raw if self.timeout is None else _GuardedFile(self, path, raw)  # type: ignore[misc]
                if fsync:
                    self.call("fsync", path, os.fsync, raw.fileno())
            finally:
                raw.close()
            return
        f = self.call("open", path, self.fs.open, path, "wb")
        try:
            yield _GuardedFile(self, path, f)  # type: ignore[misc]
        except BaseException:
            self._discard(path, f)
            raise
        try:
            self.call("finish writing", path, f.close)
        except BaseException:
            self._discard(path, f)
            raise

    def _discard(self, path: str, f: Any) -> None:
        """Throw away a remote file being written (abort its multipart upload); never commit it."""
        try:
            discard = getattr(f, "discard", None)
            if callable(discard):
                self.call("abort the upload of", path, discard)
        except Exception:  # the caller's error is the one to report
            pass
        finally:
            with contextlib.suppress(Exception):
                f.closed = True  # fsspec files commit on close(); this one must not

    def abort_uploads(self, directory: str, names: re.Pattern[str]) -> list[str]:
        """Abort unfinished multipart uploads of files in ``directory`` whose names match.

        A write interrupted by a crash, or whose abort failed because the store
        was unreachable, leaves its upload open (invisible, but stored and
        billed). Only object stores with multipart uploads have any (s3fs's
        ``list_multipart_uploads``); elsewhere this does nothing.

        Returns:
            The names whose uploads were aborted.
        """
        listing = getattr(self.fs, "list_multipart_uploads", None)
        abort = getattr(self.fs, "abort_mpu", None)
        split = getattr(self.fs, "split_path", None)
        if not (callable(listing) and callable(abort) and callable(split)):
            return []
        bucket, key_prefix, _ = split(directory)
        key_prefix = key_prefix.rstrip("/") + "/" if key_prefix else ""
        aborted = []
        for upload in self.call("list the uploads of", directory, listing, bucket):
            key = upload.get("Key", "")
            name = key[len(key_prefix) :]
            if key.startswith(key_prefix) and "/" not in name and names.fullmatch(name):
                self.call("abort the upload of", key, abort, bucket, key, upload["UploadId"])
                aborted.append(name)
        return aborted

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Create ``path`` holding ``data`` unless it exists; return whether it was created.

        Uses the filesystem's exclusive create (``O_EXCL`` locally, a
        conditional ``If-None-Match: *`` write on S3 and compatible stores).
        """
        try:
            if self.local:

                def create() -> None:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                        f.flush()
                        os.fsync(f.fileno())

                self.call("create", path, create)
            else:
                self.call("create", path, self.fs.pipe_file, path, data, mode="create")
        except FileExistsError:
            return False
        except StorageError as err:
            if _is_precondition_failure(err.__cause__):
                return False
            raise
        return True

    def copy(self, source: str, target: str, *, fsync: bool) -> None:
        """Make ``target`` a copy of ``source``: a hard link locally, else a server-side copy."""
        if not self.local:
            self.call("copy", source, self.fs.copy, source, target)
            return
        self.remove(target)
        try:
            self.call("link", source, os.link, source, target)
        except OSError:
            # No hard links here (another filesystem, FAT, some network mounts): copy the bytes.
            def copy() -> None:
                with open(source, "rb") as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 4 << 20)
                    dst.flush()
                    if fsync:
                        os.fsync(dst.fileno())

            self.call("copy", source, copy)

    def write_atomic(self, path: str, data: bytes, *, fsync: bool) -> None:
        """Replace ``path`` with ``data`` so that readers see the old or the new file, never a part.

        Local files go through a temporary name, ``fsync`` and ``os.replace``,
        then the directory is synced. Elsewhere the one ``pipe_file`` call is
        the commit: object stores and in-memory filesystems publish a file only
        once it is complete.
        """
        if not self.local:
            self.call("write", path, self.fs.pipe_file, path, data)
            return
        directory = os.path.dirname(path) or "."
        tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")

        def write() -> None:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                if fsync:
                    os.fsync(f.fileno())
            os.replace(tmp, path)

        try:
            self.call("write", path, write)
        except BaseException:
            with contextlib.suppress(OSError):
                if os.path.exists(tmp):
                    os.unlink(tmp)
            raise
        if fsync:
            self.fsync_dir(directory)

    def fsync_dir(self, directory: str) -> None:
        """Make renames and new files in a local directory durable."""
        if not self.local:
            return

        def sync() -> None:
            fd = os.open(directory or ".", os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

        self.call("sync directory", directory, sync)

    def remove(self, path: str) -> bool:
        """Delete a file if it exists; return whether there was one."""
        try:
            if self.local:
                self.call("delete", path, os.unlink, path)
            else:
                self.call("delete", path, self.fs.rm_file, path)
        except FileNotFoundError:
            return False
        return True


def _is_precondition_failure(err: BaseException | None) -> bool:
    """Whether a store refused a conditional write because the object exists (HTTP 412)."""
    text = f"{type(err).__name__} {err}"
    return "PreconditionFailed" in text or "412" in text


class _GuardedFile:
    """A file being written whose calls go through :meth:`Storage.call`."""

    def __init__(self, storage: Storage, path: str, file: Any) -> None:
        self._storage = storage
        self._path = path
        self._file = file

    def __repr__(self) -> str:
        return f"_GuardedFile({self._path!r}, timeout={self._storage.timeout})"

    def write(self, data: Any) -> int:
        written: int = self._storage.call("write", self._path, self._file.write, data)
        return written

    def flush(self) -> None:
        self._storage.call("flush", self._path, self._file.flush)

    def fileno(self) -> int:
        fileno: int = self._file.fileno()
        return fileno
