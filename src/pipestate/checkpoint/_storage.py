"""File access for checkpoints through fsspec: local paths and any URL.

Behaviour follows what the filesystem can do, never the URL's prefix: a
filesystem that exposes local files (``fs.local_file``) gets memory-mapped
reads, ``fsync`` and atomic rename; any other filesystem gets ranged reads and
whole-object writes, where the single final write of a file is its commit.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import stat
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, BinaryIO

import fsspec

from pipestate.errors import CorruptCheckpointError, NotFoundError

__all__ = [
    "RandomAccessFile",
    "Storage",
    "as_path",
    "check_storage_options",
    "temporary_pattern",
]


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
            self._file = storage.fs.open(path, "rb")
            self.size = int(storage.fs.size(path))

    def read(self, offset: int, length: int) -> bytes:
        """Return exactly ``length`` bytes from ``offset`` (the caller checked the bounds)."""
        if length == 0:
            return b""
        if self._map is not None:
            return self._map[offset : offset + length]
        self._file.seek(offset)
        data: bytes = self._file.read(length)
        return data

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
            self._file.close()
            self._file = None

    def __repr__(self) -> str:
        kind = "mmap" if self._map is not None else "fsspec"
        return f"RandomAccessFile({self.path!r}, size={self.size}, {kind})"


class Storage:
    """One fsspec filesystem and the operations checkpoints need from it.

    Paths given to the methods are paths *on the filesystem* (as returned by
    :meth:`for_path`), not URLs.
    """

    def __init__(self, fs: fsspec.AbstractFileSystem) -> None:
        self.fs = fs
        # A filesystem of local files allows mmap, fsync and an atomic os.replace.
        self.local = bool(getattr(fs, "local_file", False))

    @classmethod
    def for_path(
        cls, url: str, storage_options: Mapping[str, Any] | None = None
    ) -> tuple[Storage, str]:
        """Return the storage for a local path or URL, and the path on that filesystem.

        ``storage_options`` are passed to the fsspec filesystem's constructor
        (e.g. ``{"client_kwargs": {"endpoint_url": ...}}`` for S3); fsspec's
        own configuration (``fsspec.config.conf``, ``FSSPEC_<PROTOCOL>_<KEY>``
        environment variables) applies as well.
        """
        fs, path = fsspec.core.url_to_fs(url, **check_storage_options(storage_options))
        return cls(fs), path

    def __repr__(self) -> str:
        return f"Storage(protocol={self.fs.protocol!r}, local={self.local})"

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
        if self.local:
            return os.path.isfile(path)
        return bool(self.fs.isfile(path))

    def isdir(self, path: str) -> bool:
        """Whether ``path`` is an existing directory."""
        if self.local:
            return os.path.isdir(path)
        return bool(self.fs.isdir(path))

    def refresh(self, directory: str) -> None:
        """Forget cached listings of ``directory``, so that files other processes wrote are seen."""
        if not self.local:
            self.fs.invalidate_cache(directory)

    def listdir(self, directory: str) -> list[str]:
        """Names (not paths) of the entries of ``directory``; empty when it does not exist."""
        try:
            if self.local:
                return sorted(os.listdir(directory or "."))
            self.refresh(directory)
            return sorted(self.split(p)[1] for p in self.fs.ls(directory, detail=False))
        except (FileNotFoundError, NotADirectoryError):
            return []

    # -- reading ---------------------------------------------------------------
    def read_bytes(self, path: str, *, what: str = "file") -> bytes:
        """Read a whole (small) file; raise :class:`NotFoundError` when it is missing."""
        try:
            if self.local:
                with _open_regular(path) as f:
                    return f.read()
            data: bytes = self.fs.cat_file(path)
            return data
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as err:
            raise NotFoundError(f"{what} {path!r} does not exist") from err

    def open_random_access(self, path: str, *, what: str = "file") -> RandomAccessFile:
        """Open a file for ranged reads (memory-mapped when local)."""
        try:
            return RandomAccessFile(self, path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as err:
            raise NotFoundError(f"{what} {path!r} does not exist") from err

    # -- writing ---------------------------------------------------------------
    def makedirs(self, directory: str) -> None:
        """Create ``directory`` and its parents if needed."""
        if directory:
            self.fs.makedirs(directory, exist_ok=True)

    @contextmanager
    def open_write(self, path: str, *, fsync: bool) -> Iterator[BinaryIO]:
        """Open ``path`` for streaming writes under its final name; flush (and fsync) on exit."""
        if self.local:
            # A new file, never the old one truncated: a reader may still have the old
            # one memory-mapped, and touching its vanished pages would kill the process.
            self.remove(path)
            with open(path, "wb", buffering=0) as raw:
                yield raw
                if fsync:
                    os.fsync(raw.fileno())
        else:
            with self.fs.open(path, "wb") as f:
                yield f

    def write_atomic(self, path: str, data: bytes, *, fsync: bool) -> None:
        """Replace ``path`` with ``data`` so that readers see the old or the new file, never a part.

        Local files go through a temporary name, ``fsync`` and ``os.replace``,
        then the directory is synced. Elsewhere the one ``pipe_file`` call is
        the commit: object stores and in-memory filesystems publish a file only
        once it is complete.
        """
        if not self.local:
            self.fs.pipe_file(path, data)
            return
        directory = os.path.dirname(path) or "."
        tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                if fsync:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        if fsync:
            self.fsync_dir(directory)

    def fsync_dir(self, directory: str) -> None:
        """Make renames and new files in a local directory durable."""
        if not self.local:
            return
        fd = os.open(directory or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def remove(self, path: str) -> bool:
        """Delete a file if it exists; return whether there was one."""
        try:
            if self.local:
                os.unlink(path)
            else:
                self.fs.rm_file(path)
        except FileNotFoundError:
            return False
        return True
