"""Reading a checkpoint: its index, and arrays verified against their checksums.

See :mod:`._index` for the layout.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import re
import weakref
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import numpy as np

from pipestate.checkpoint import _crc
from pipestate.checkpoint._distributed import Placement
from pipestate.checkpoint._index import TensorEntry, parse_index_world
from pipestate.checkpoint._limits import INDEX_LIMIT, read_limited
from pipestate.checkpoint._paths import index_path, shard_name
from pipestate.checkpoint._safetensors import (
    TensorInfo,
    native_array,
    parse_header,
    safetensors_dtype,
    widen_to_float32,
)
from pipestate.checkpoint._storage import RandomAccessFile, Storage
from pipestate.checkpoint._values import (
    Chunk,
    SavedSharding,
    Value,
    array_dtype,
    box_overlap,
    decode_value,
    sharded_reader,
    torch_reader,
)
from pipestate.errors import CorruptCheckpointError, NotFoundError

__all__ = ["CheckpointReader", "SavedArray", "gc_paused", "missing_checkpoint_error"]

_CHUNK = 4 << 20


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a large graph is parsed or restored.

    Every few hundred containers allocated can start a collection, and the full
    ones walk the whole heap (the program's objects too): with millions of nodes
    they took most of the time of a restore. What is built here holds no
    reference cycles, so nothing is lost; collection resumes at the end.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class CheckpointReader:
    """Reads one checkpoint: the validated index, and arrays verified against their checksums.

    Arrays are read from memory-mapped shards (local files) or by ranged reads,
    and returned as fresh writable arrays.

    A checkpoint saved by several ranks is read as ``placement`` sees it:
    each per-rank object's node holds that rank's values. Restored on another
    world size, per-rank nodes hold rank 0's values and are listed in
    ``foreign``: only objects with a re-sharding rule take them.

    Raises:
        NotFoundError: When the index does not exist.
        CheckpointTooLargeError: When the index is larger than
            ``PIPESTATE_MAX_INDEX_BYTES`` (256 MiB by default); nothing of it is read.
        CorruptCheckpointError: When the index is malformed.
    """

    def __init__(
        self,
        storage: Storage,
        prefix: str,
        *,
        display: str | None = None,
        placement: Placement | None = None,
    ) -> None:
        self.storage = storage
        self.prefix = prefix
        self.display = display or prefix
        self._index = index_path(prefix)
        data = read_limited(storage, self._index, INDEX_LIMIT)
        with gc_paused():
            self.num_shards, self.nodes, self.tensors, self.world_size = parse_index_world(
                data, f"checkpoint index {self._index!r}"
            )
        self.placement = placement or Placement()
        # Per-rank nodes restored on another world size (they hold rank 0's values).
        self.foreign: frozenset[int] = frozenset()
        if self.world_size > 1:
            ranked = [i for i, node in enumerate(self.nodes) if node.ranks is not None]
            if self.placement.world_size == self.world_size:
                rank = self.placement.rank
                for i in ranked:
                    node = self.nodes[i]
                    assert node.ranks is not None
                    self.nodes[i] = node._replace(attributes=node.ranks[rank])
            else:
                self.foreign = frozenset(ranked)
        self._shards: dict[int, tuple[RandomAccessFile, dict[str, TensorInfo]]] = {}
        # Per copy mode, the torch tensors read and still alive (weakly held), so that
        # tensors sharing storage share it again. Nothing in it refers back to the reader.
        self._torch_tensors: dict[bool, MutableMapping[Any, Any]] = {}
        self.on_bytes: Callable[[int], None] | None = None
        """Called with each array's length in bytes once it is read and verified (progress)."""

    def __repr__(self) -> str:
        return (
            f"CheckpointReader({self.display!r}, nodes={len(self.nodes)}, "
            f"tensors={len(self.tensors)}, shards={self.num_shards})"
        )

    def shard_path(self, shard: int) -> str:
        """The path of data shard number ``shard``."""
        directory, basename = self.storage.split(self.prefix)
        return self.storage.join(directory, shard_name(basename, shard, self.num_shards))

    def _shard(self, shard: int) -> tuple[RandomAccessFile, dict[str, TensorInfo]]:
        if shard not in self._shards:
            path = self.shard_path(shard)
            f = self.storage.open_random_access(path, what="checkpoint data shard")
            try:
                tensors, _ = parse_header(
                    f.read(0, min(8, f.size)), f.size, what=f"data shard {path!r}", read_more=f.read
                )
            except BaseException:
                f.close()
                raise
            self._shards[shard] = (f, tensors)
        return self._shards[shard]

    def entry(self, key: str) -> TensorEntry:
        """The index entry of tensor ``key``."""
        try:
            return self.tensors[key]
        except KeyError:
            raise CorruptCheckpointError(
                f"checkpoint {self.display!r} refers to tensor {key!r:.200}, which its index lacks"
            ) from None

    def read_tensor(self, key: str, *, copy: bool = True) -> np.ndarray:
        """Read tensor ``key`` and verify its checksum, as :meth:`read_raw` (same arguments
        and errors), with BF16 and float8 tensors (types NumPy lacks) widened exactly to
        float32."""
        array, native = self.read_raw(key, copy=copy)
        return array if native is None else widen_to_float32(array, native)

    def read_array(self, key: str, *, copy: bool = True) -> np.ndarray:
        """Read tensor ``key`` as :meth:`read_raw` does (same arguments and errors), with BF16
        and float8 tensors as ml_dtypes arrays (where ml_dtypes is not installed: widened
        exactly to float32). This is how NumPy values are read."""
        array, native = self.read_raw(key, copy=copy)
        return array if native is None else native_array(array, native)

    def read_raw(self, key: str, *, copy: bool = True) -> tuple[np.ndarray, str | None]:
        """Read tensor ``key`` as stored, and verify its checksum.

        Returns:
            The array, and for a type NumPy lacks its safetensors code (the
            array then holds its bytes in an unsigned dtype of the same size).

        Args:
            key: The tensor's key.
            copy: Return a fresh writable array; with ``False`` a local shard
                may return a read-only view of its memory map instead.

        Raises:
            CorruptCheckpointError: When the shard disagrees with the index, is
                truncated, or the bytes do not match the recorded crc32c.
        """
        entry = self.entry(key)
        f, header = self._shard(entry.shard)
        info = header.get(key)
        expected_dtype = entry.native or safetensors_dtype(entry.dtype)
        where = f"value {key!r:.200} in data shard {f.path!r}"
        raw = expected_dtype == "U8" and entry.dtype != np.uint8
        if (
            info is None
            or info.offset != entry.offset
            or info.length != entry.length
            or info.dtype != expected_dtype
            or info.shape != ((entry.length,) if raw else entry.shape)
        ):
            raise CorruptCheckpointError(f"{where}: the shard's header does not match the index")
        view = f.view(entry.offset, entry.length)
        if view is not None and len(view) != entry.length:
            raise CorruptCheckpointError(f"{where}: the file is truncated")
        out = None if view is not None and not copy else np.empty(entry.shape, entry.dtype)
        if view is not None:
            # A local shard: checksummed in place in its memory map, then copied once.
            crc = _crc.extend(0, view)
            if out is not None:
                out.reshape(-1).view(np.uint8)[:] = np.frombuffer(view, dtype=np.uint8)
        else:
            assert out is not None
            flat = out.reshape(-1).view(np.uint8)
            crc = 0
            for start in range(0, entry.length, _CHUNK):
                size = min(_CHUNK, entry.length - start)
                chunk = f.read(entry.offset + start, size)
                if len(chunk) != size:
                    raise CorruptCheckpointError(f"{where}: the file is truncated")
                crc = _crc.extend(crc, chunk)
                flat[start : start + size] = np.frombuffer(chunk, dtype=np.uint8)
        if crc != entry.crc32c:
            raise CorruptCheckpointError(
                f"{where}: checksum mismatch (crc32c {crc:#010x}, index says "
                f"{entry.crc32c:#010x}); the checkpoint is corrupt"
            )
        if self.on_bytes is not None:
            self.on_bytes(entry.length)
        if out is None:
            assert view is not None
            return np.frombuffer(view, dtype=entry.dtype).reshape(entry.shape), entry.native
        return out, entry.native

    def decode(
        self,
        encoded: Any,
        *,
        where: str,
        copy: bool = True,
        placeholders: list[Any] | None = None,
        lazy_arrays: bool = False,
    ) -> Value:
        """Decode one attribute's JSON, reading its arrays (see :meth:`read_array`).

        A sharded tensor (DTensor) is read whole; with ``placeholders`` (and
        torch installed) it is left as a ``SavedDTensor``, also appended there,
        that reads only the chunks its target needs (see
        :func:`pipestate.torch._dtensor.resolve`). A sharded array (``"sharded"``)
        is read whole too; with ``lazy_arrays``, it is left as a
        :class:`SavedArray` that reads the chunks a box of it overlaps.
        """
        read = self.read_array if copy else functools.partial(self.read_array, copy=False)
        widened = self.read_tensor if copy else functools.partial(self.read_tensor, copy=False)
        read_raw = self.read_raw if copy else functools.partial(self.read_raw, copy=False)
        tensors = self._torch_tensors.setdefault(copy, weakref.WeakValueDictionary())
        read_torch = torch_reader(read_raw, widened, tensors)
        # Chunks are copied into the tensor assembled from them: no copy of their own.
        read_sharded = sharded_reader(
            functools.partial(self.read_raw, copy=False),
            functools.partial(self.read_tensor, copy=False),
            placeholders,
            copy=copy,
        )

        def read_dtensor(saved: SavedSharding) -> Any:
            self._check_chunks(saved)
            return read_sharded(saved)

        def read_array_chunks(saved: SavedSharding) -> Any:
            self._check_chunks(saved)
            lazy = SavedArray(saved, functools.partial(self.read_array, copy=False))
            return lazy if lazy_arrays else lazy.full()

        return decode_value(
            encoded,
            read,
            where=where,
            read_torch=read_torch,
            read_dtensor=read_dtensor,
            read_sharded=read_array_chunks,
        )

    def _check_chunks(self, saved: SavedSharding) -> None:
        """Refuse chunks whose arrays the files don't hold as the index says, before the
        tensor they make up is allocated (its size is then what the files hold).

        Raises:
            CorruptCheckpointError: Naming the value and the chunk.
        """
        dtypes = set()
        for chunk in saved.chunks:
            entry = self.entry(chunk.key)
            raw = safetensors_dtype(entry.dtype) == "U8" and entry.dtype != np.uint8
            shape = entry.shape
            if shape != chunk.shape and not raw:
                raise CorruptCheckpointError(
                    f"{saved.where}: chunk {chunk.key!r:.200} has shape {list(chunk.shape)} in "
                    f"the sharded tensor but {list(shape)} in the index"
                )
            dtypes.add(entry.native or entry.dtype.str)
            _, header = self._shard(entry.shard)
            info = header.get(chunk.key)
            if info is None or info.length != entry.length or info.offset != entry.offset:
                raise CorruptCheckpointError(
                    f"{saved.where}: chunk {chunk.key!r:.200} is not in its data shard as the "
                    "index says"
                )
        if len(dtypes) > 1:
            raise CorruptCheckpointError(
                f"{saved.where}: the chunks of a sharded tensor have different dtypes "
                f"({sorted(dtypes)})"
            )

    def close(self) -> None:
        """Close the shards opened so far."""
        for f, _ in self._shards.values():
            f.close()
        self._shards.clear()

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SavedArray:
    """A sharded array as saved, not read yet: any box of it is read from the chunks it overlaps.

    Each chunk is read (and its checksum verified) at most once, on first use.
    """

    def __init__(self, saved: SavedSharding, read_array: Callable[[str], np.ndarray]) -> None:
        self.saved = saved
        self.shape = saved.shape
        self.dtype = array_dtype(saved.dtype) or np.dtype(np.float32)
        self._read_array = read_array
        self._chunks: dict[str, np.ndarray] = {}

    def __repr__(self) -> str:
        return (
            f"SavedArray({self.saved.where!r:.200}, {self.saved.dtype}{list(self.shape)}, "
            f"chunks={len(self.saved.chunks)})"
        )

    def _chunk(self, chunk: Chunk) -> np.ndarray:
        data = self._chunks.get(chunk.key)
        if data is None:
            data = self._read_array(chunk.key)
            if data.shape != chunk.shape or data.dtype != self.dtype:
                raise CorruptCheckpointError(
                    f"chunk {chunk.key!r:.200} of the sharded array at {self.saved.where!r:.200} "
                    f"holds {data.dtype}{list(data.shape)}, the index says "
                    f"{self.dtype}{list(chunk.shape)}"
                )
            self._chunks[chunk.key] = data
        return data

    def read(
        self, offsets: tuple[int, ...], shape: tuple[int, ...], *, copy: bool = True
    ) -> np.ndarray:
        """The box at ``offsets`` of ``shape``, from the chunks that overlap it.

        Without ``copy``, a box that is one saved chunk is returned as read: a
        read-only view of the memory map, valid while the reader is open.

        Raises:
            CorruptCheckpointError: When a chunk's array is not what the index says.
        """
        if not copy:
            for chunk in self.saved.chunks:
                if chunk.offsets == offsets and chunk.shape == shape:
                    return self._chunk(chunk)
        out = np.empty(shape, self.dtype)
        if out.size == 0:
            return out
        for chunk in self.saved.chunks:
            common = box_overlap(offsets, shape, chunk)
            if common is not None:
                out[common[0]] = self._chunk(chunk)[common[1]]
        return out

    def full(self) -> np.ndarray:
        """The whole array, a new NumPy array."""
        return self.read((0,) * len(self.shape), self.shape)


def missing_checkpoint_error(storage: Storage, prefix: str, display: str) -> NotFoundError:
    """A :class:`NotFoundError` for ``prefix``, suggesting numbered checkpoints that do exist."""
    directory, basename = storage.split(prefix)
    pattern = re.compile(re.escape(basename) + r"-([0-9]+)\.index$")
    numbers = sorted(
        int(m.group(1)) for m in map(pattern.match, storage.listdir(directory)) if m is not None
    )
    message = f"no checkpoint at {display!r}: {index_path(display)!r} does not exist"
    if numbers:
        shown = ", ".join(f"{display}-{n}" for n in numbers[-3:])
        message += (
            f". Checkpoint.save() appends a number to the prefix; did you mean "
            f"{display}-{numbers[-1]!s}? (found: {shown})"
        )
    else:
        message += ". Pass the path save() returned, e.g. 'ckpt-1' for prefix 'ckpt'"
    return NotFoundError(message)
