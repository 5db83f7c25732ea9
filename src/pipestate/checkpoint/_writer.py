"""Writing a checkpoint: shards planned, written and checksummed, then the index that commits them.

See :mod:`._index` for the layout.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import queue
import re
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from pipestate.checkpoint import _crc
from pipestate.checkpoint._cleanup import remove_stale_files
from pipestate.checkpoint._index import (
    DISTRIBUTED_FORMAT_VERSION,
    FORMAT_NAME,
    FORMAT_VERSION,
    MAX_SHARDS,
    body_crc,
)
from pipestate.checkpoint._paths import SHARD_SUFFIX, index_path, shard_name
from pipestate.checkpoint._safetensors import (
    build_header,
    carrier_dtype,
    ml_dtype_code,
    safetensors_dtype,
)
from pipestate.checkpoint._storage import Storage
from pipestate.errors import CheckpointWriteError

__all__ = [
    "DEFAULT_MAX_SHARD_BYTES",
    "copy_checkpoint",
    "plan_shards",
    "prepare_array",
    "write_checkpoint",
    "write_error",
    "write_index",
    "write_shards",
]

DEFAULT_MAX_SHARD_BYTES = 2 << 30
_CHUNK = 4 << 20
# Below this many bytes a shard is written inline; above, on a writer thread.
_THREADED_WRITE_BYTES = 4 * _CHUNK
_FULL_ERRNOS = frozenset(
    code for code in (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", None)) if code
)


@dataclass(frozen=True)
class _Pending:
    key: str
    array: np.ndarray
    st_dtype: str
    # The safetensors code of a type NumPy lacks (BF16, F8_E4M3, ...) that ``array`` carries.
    native: str | None = None

    @property
    def index_dtype(self) -> str:
        return self.native if self.native is not None else self.array.dtype.str

    @property
    def nbytes(self) -> int:
        return int(self.array.nbytes)

    @property
    def st_shape(self) -> tuple[int, ...]:
        if self.st_dtype == "U8" and self.array.dtype != np.uint8:
            return (self.nbytes,)
        return tuple(self.array.shape)

    @property
    def alignment(self) -> int:
        return 1 if self.st_dtype == "U8" else min(self.array.dtype.itemsize, 8)


def prepare_array(
    key: str,
    array: np.ndarray,
    *,
    copy: Callable[[str, np.ndarray], np.ndarray] | None = None,
    native: str | None = None,
) -> _Pending:
    """Check that ``array`` can be saved; bring it to little-endian C order (copying if needed).

    With ``copy`` (``copy(key, array)`` returns a copy in C order), the result
    never shares memory with ``array``: an async save must not see later
    changes to the saved objects. With ``native`` (a safetensors code such as
    ``"BF16"``), ``array`` carries the bytes of that type in its unsigned
    carrier dtype (see ``NATIVE_CARRIERS``), and is stored as that type.
    Arrays of the ml_dtypes types that safetensors has (bfloat16, float8) are
    stored as themselves the same way.

    Raises:
        TypeError: For object, structured and sub-array dtypes, which have no byte layout to
            save, and ml_dtypes types safetensors lacks (int4, float4_e2m1fn, ...).
        ValueError: For a ``native`` code whose carrier is not ``array``'s dtype.
    """
    if native is None:
        native = ml_dtype_code(array.dtype, key)
        if native is not None:
            carrier = carrier_dtype(native)
            assert carrier is not None
            array = array.view(carrier)
    if native is not None and carrier_dtype(native) != array.dtype:
        raise ValueError(
            f"cannot save the array at {key!r} as {native}: its carrier must be "
            f"{carrier_dtype(native)}, got {array.dtype}"
        )
    dtype = array.dtype
    if (
        dtype.kind == "O"
        or dtype.fields is not None
        or dtype.subdtype is not None
        or dtype.itemsize == 0
    ):
        raise TypeError(
            f"cannot save the array at {key!r}: dtype {dtype} has no fixed byte layout; "
            "convert it to a numeric, bool, bytes (S) or str (U) dtype"
        )
    copied = False
    if dtype.byteorder == ">" or (dtype.byteorder == "=" and sys.byteorder == "big"):
        array, copied = array.astype(dtype.newbyteorder("<")), True
    if not array.flags.c_contiguous:
        array, copied = array.copy(order="C"), True
    if copy is not None and not copied:
        array = copy(key, array)
    if native is not None:
        return _Pending(key, array, native, native)
    return _Pending(key, array, safetensors_dtype(array.dtype))


def _plan(arrays: list[_Pending], max_shard_bytes: int) -> list[list[_Pending]]:
    shards: list[list[_Pending]] = [[]]
    size = 0
    for item in arrays:
        if shards[-1] and size + item.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(item)
        size += item.nbytes
    # Falling alignment keeps each tensor aligned to its item size in the file.
    return [sorted(s, key=lambda a: (-a.alignment, a.key)) for s in shards]


def _write_all(f: BinaryIO, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[f.write(view) :]


class _ChunkWriter:
    """Writes chunks on a background thread, so checksumming the next chunk overlaps the write."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._queue: queue.Queue[bytes | memoryview | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name="pipestate-shard-writer", daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        return f"_ChunkWriter({self._f!r}, alive={self._thread.is_alive()})"

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:
                try:
                    _write_all(self._f, chunk)
                except BaseException as err:  # surfaced on the producer's next call
                    self._error = err

    def write(self, chunk: bytes | memoryview) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def close(self) -> None:
        """Wait for the queued chunks; re-raise the writer's error, if any."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


def _write_shard(
    storage: Storage,
    path: str,
    items: list[_Pending],
    fsync: bool,
    on_bytes: Callable[[int], None] | None = None,
) -> dict[str, tuple[int, int]]:
    header = build_header(
        [(a.key, a.st_dtype, a.st_shape, a.nbytes) for a in items], {"format": FORMAT_NAME}
    )
    placed: dict[str, tuple[int, int]] = {}
    offset = len(header)
    with storage.open_write(path, fsync=fsync) as f:
        _write_all(f, header)
        big = sum(a.nbytes for a in items) >= _THREADED_WRITE_BYTES
        writer = _ChunkWriter(f) if big else None
        write = writer.write if writer is not None else functools.partial(_write_all, f)
        try:
            for item in items:
                flat = item.array.reshape(-1).view(np.uint8)
                crc = 0
                for start in range(0, len(flat), _CHUNK):
                    chunk = flat[start : start + _CHUNK]
                    crc = _crc.extend(crc, chunk)
                    # No copy: the writer thread is joined before this returns, and an
                    # async save's arrays are its own snapshot.
                    write(chunk.data)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
                placed[item.key] = (offset, crc)
                offset += item.nbytes
        finally:
            if writer is not None:
                writer.close()
    return placed


def write_checkpoint(
    storage: Storage,
    prefix: str,
    nodes: list[dict[str, Any]],
    arrays: list[_Pending],
    *,
    max_shard_bytes: int,
    fsync: bool,
    on_bytes: Callable[[int], None] | None = None,
) -> None:
    """Write shards, then the index atomically; remove leftovers of an older save at ``prefix``.

    ``on_bytes(n)`` is called as each chunk of ``n`` array bytes is written
    (from the shard writers' threads), for a progress display.
    """
    directory, basename = storage.split(prefix)
    storage.makedirs(directory)
    # An older checkpoint at this very prefix is being replaced: drop its index
    # first, so that a crash leaves no checkpoint rather than one whose index
    # points at rewritten shards.
    if storage.remove(index_path(prefix)) and fsync:
        storage.fsync_dir(directory)
    shards = _plan(arrays, max_shard_bytes)
    num_shards = len(shards)
    if num_shards > MAX_SHARDS:
        raise ValueError(
            f"the checkpoint needs {num_shards} shards, more than {MAX_SHARDS}; "
            "raise CheckpointOptions.max_shard_bytes"
        )
    paths = [
        storage.join(directory, shard_name(basename, i, num_shards)) for i in range(num_shards)
    ]
    try:
        _write_shards_and_index(storage, prefix, nodes, shards, paths, fsync, on_bytes)
    except BaseException:
        # Nothing commits these shards now; free their space (a full disk is the usual cause).
        for path in paths:
            with contextlib.suppress(OSError):
                storage.remove(path)
        raise
    # The checkpoint is committed: stale files that cannot be removed now are removed later.
    with contextlib.suppress(OSError):
        remove_stale_files(storage, directory, basename, num_shards)


def _write_shards_and_index(
    storage: Storage,
    prefix: str,
    nodes: list[dict[str, Any]],
    shards: list[list[_Pending]],
    paths: list[str],
    fsync: bool,
    on_bytes: Callable[[int], None] | None = None,
) -> None:
    tensors = write_shards(storage, shards, paths, first=0, fsync=fsync, on_bytes=on_bytes)
    if fsync:
        # The shards' directory entries must be durable before the index that commits them.
        storage.fsync_dir(storage.split(prefix)[0])
    write_index(storage, prefix, nodes, tensors, len(shards), fsync=fsync)


def write_shards(
    storage: Storage,
    shards: list[list[_Pending]],
    paths: list[str],
    *,
    first: int,
    fsync: bool,
    on_bytes: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write ``shards`` to ``paths`` (shard numbers ``first``, ``first + 1``, ...).

    ``on_bytes(n)`` is called as each chunk of ``n`` bytes is written (progress).

    Returns:
        The index's tensor entries of the arrays written.
    """
    if len(shards) == 1:
        placements = [_write_shard(storage, paths[0], shards[0], fsync, on_bytes)]
    else:
        with ThreadPoolExecutor(max_workers=min(len(shards), 4)) as pool:
            placements = list(
                pool.map(
                    lambda i: _write_shard(storage, paths[i], shards[i], fsync, on_bytes),
                    range(len(shards)),
                )
            )
    tensors: dict[str, Any] = {}
    for shard, (items, placed) in enumerate(zip(shards, placements)):
        for item in items:
            offset, crc = placed[item.key]
            tensors[item.key] = {
                "dtype": item.index_dtype,
                "shape": list(item.array.shape),
                "shard": first + shard,
                "offset": offset,
                "length": item.nbytes,
                "crc32c": crc,
            }
    return tensors


def write_index(
    storage: Storage,
    prefix: str,
    nodes: list[dict[str, Any]],
    tensors: dict[str, Any],
    num_shards: int,
    *,
    fsync: bool,
    world_size: int = 1,
) -> None:
    """Write the index of ``prefix`` atomically: the commit of its shards.

    A checkpoint of several ranks (``world_size > 1``) is format version 2:
    its body names the world size, and its per-rank objects' nodes hold each
    rank's values under ``"ranks"``.
    """
    body: dict[str, Any] = {"num_shards": num_shards, "nodes": nodes, "tensors": tensors}
    version = FORMAT_VERSION
    if world_size > 1:
        body["world_size"] = world_size
        version = DISTRIBUTED_FORMAT_VERSION
    document = {
        "format": FORMAT_NAME,
        "version": version,
        "crc32c": body_crc(body),
        "checkpoint": body,
    }
    storage.write_atomic(index_path(prefix), json.dumps(document).encode("utf-8"), fsync=fsync)


def plan_shards(arrays: list[_Pending], max_shard_bytes: int) -> list[list[_Pending]]:
    """The arrays grouped into shards of at most ``max_shard_bytes`` (a larger array: alone)."""
    return _plan(arrays, max_shard_bytes)


def copy_checkpoint(storage: Storage, source: str, target: str, fsync: bool) -> None:
    """Replace the checkpoint ``target`` by a copy of ``source`` (paths on ``storage``), index last.

    Both lie in one directory. The old ``target`` is dropped first, index
    first: the caller's state file must no longer name it.
    """
    directory, source_name = storage.split(source)
    target_name = storage.split(target)[1]
    storage.remove(index_path(target))
    if fsync:
        storage.fsync_dir(directory)
    old_shards = re.compile(re.escape(target_name) + SHARD_SUFFIX)
    new_shards = re.compile(re.escape(source_name) + SHARD_SUFFIX)
    names = storage.listdir(directory)
    for name in names:
        if old_shards.fullmatch(name):
            storage.remove(storage.join(directory, name))
    for name in names:
        if new_shards.fullmatch(name):
            copied = target_name + name[len(source_name) :]
            storage.copy(
                storage.join(directory, name), storage.join(directory, copied), fsync=fsync
            )
    if fsync:
        storage.fsync_dir(directory)
    index = storage.read_bytes(index_path(source), what="checkpoint index")
    storage.write_atomic(index_path(target), index, fsync=fsync)


def write_error(err: OSError, display: str) -> CheckpointWriteError:
    """A :class:`CheckpointWriteError` for a failed save of ``display``, with ``err``'s errno."""
    if err.errno in _FULL_ERRNOS:
        cause = (
            "The storage is full or a file-size limit was reached. Free some space (e.g. "
            "delete old checkpoints or lower max_to_keep) and save again."
        )
    else:
        cause = "Fix the storage problem and save again."
    reason = err.strerror or str(err) or type(err).__name__
    if err.filename is not None:
        reason += f" ({err.filename!r})"
    message = (
        f"could not write checkpoint {display!r}: {reason}. The checkpoint was not saved; "
        f"earlier checkpoints and the state file are intact. {cause}"
    )
    if err.errno is None:
        return CheckpointWriteError(message)
    return CheckpointWriteError(err.errno, message)
