"""``jax.Array`` leaves: saved from where their shards live, restored onto any sharding.

Saving never gathers an array onto one device. An array on one device, or
replicated on all of its devices, is saved as one NumPy array (one copy to
the host, of one replica). Any other array is saved in chunks: each shard
with ``replica_id == 0`` (one of each distinct box) is copied to the host and
written as a chunk at its global offsets (a :class:`ShardedArray`, saved as a
``"sharded"`` value).

Restoring onto a ``jax.Array`` or ``jax.ShapeDtypeStruct`` builds a new array
of its shape, dtype and sharding with ``jax.make_array_from_callback``: each
device's box is read from the saved chunks it overlaps, and nothing else.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from pipestate.checkpoint._reader import SavedArray
from pipestate.checkpoint._values import ShardedArray
from pipestate.errors import CheckpointMismatchError

__all__ = ["is_array_target", "restore_leaf", "saved_leaf"]

_Box = tuple[tuple[int, ...], tuple[int, ...]]


def _describe(array: jax.Array) -> str:
    text = f"sharded as {array.sharding}"
    return text if len(text) <= 300 else text[:297] + "..."


def _box(index: tuple[Any, ...], shape: tuple[int, ...]) -> _Box:
    """The offsets and shape of a shard's index (a tuple of slices) in an array of ``shape``."""
    offsets, extent = [], []
    for i, size in enumerate(shape):
        part = index[i] if i < len(index) else slice(None)
        start, stop, step = part.indices(size) if isinstance(part, slice) else (part, part + 1, 1)
        if step != 1:
            raise ValueError(f"a shard's index {index} has a step; shards are boxes")
        offsets.append(start)
        extent.append(max(stop - start, 0))
    return tuple(offsets), tuple(extent)


def saved_leaf(array: jax.Array) -> np.ndarray | ShardedArray:
    """What a ``jax.Array`` leaf is saved as: one host array, or its distinct shards as chunks.

    The host arrays may be views of device memory (on CPU): a snapshot (an
    async save) copies them, as it copies any array.
    """
    shape = tuple(int(d) for d in array.shape)
    shards = array.addressable_shards
    if array.is_fully_replicated and shards:
        return np.asarray(shards[0].data)
    if len(array.sharding.device_set) == 1 and shards:
        return np.asarray(shards[0].data)
    owned = [s for s in shards if s.replica_id == 0]
    for shard in owned:
        # Start every device-to-host copy before waiting for the first one.
        shard.data.copy_to_host_async()
    chunks = [(_box(shard.index, shape)[0], np.asarray(shard.data)) for shard in owned]
    held = sum(math.prod(c.shape) for _, c in chunks)
    return ShardedArray(
        shape,
        np.dtype(array.dtype),
        chunks,
        complete=array.is_fully_addressable and held == math.prod(shape),
        what=_describe(array),
    )


def is_array_target(leaf: object) -> bool:
    """Whether a target leaf is a ``jax.Array`` or a ``jax.ShapeDtypeStruct``."""
    return isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct))


def _saved_shape(saved: object) -> tuple[int, ...]:
    if isinstance(saved, SavedArray):
        return saved.shape
    return tuple(np.shape(saved))  # type: ignore[call-overload]


def _whole(saved: object) -> np.ndarray:
    """The saved value as a NumPy array of its own (never a view of a memory map)."""
    if isinstance(saved, SavedArray):
        return saved.full()
    return np.array(saved)


def _reader_of(saved: object) -> Callable[[tuple[int, ...], tuple[int, ...]], np.ndarray]:
    if isinstance(saved, SavedArray):
        # Views of the memory map: make_array_from_callback copies them onto the devices.
        return functools.partial(saved.read, copy=False)
    array = np.asarray(saved)

    def read(offsets: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
        return array[tuple(slice(o, o + n) for o, n in zip(offsets, shape))]

    return read


def _mismatch(where: str, name: str, saved: tuple[int, ...], target: tuple[int, ...]) -> None:
    if saved != target:
        raise CheckpointMismatchError(
            f"cannot restore {where}: leaf {name} has shape {list(saved)} in the checkpoint "
            f"and {list(target)} in the target; give a target of the saved shape"
        )


def _place(saved: object, target: Any, name: str, where: str) -> jax.Array:
    shape = tuple(int(d) for d in target.shape)
    _mismatch(where, name, _saved_shape(saved), shape)
    dtype = np.dtype(target.dtype)
    sharding = getattr(target, "sharding", None)
    if sharding is None or (isinstance(target, jax.Array) and not target.committed):
        # Where jax puts a new value (this process's default device: in a job of several
        # processes jax.devices()[0] is process 0's), and uncommitted as the target is
        # (optax's step count, jnp.zeros(...)): a jitted step may still move it next to
        # sharded arguments, as it could before the restore.
        placed: jax.Array = jax.device_put(_whole(saved).astype(dtype, copy=False))
        return placed
    read = _reader_of(saved)
    boxes: dict[_Box, np.ndarray] = {}

    def data(index: Any) -> np.ndarray:
        box = _box(index, shape) if index is not None else ((0,) * len(shape), shape)
        part = boxes.get(box)
        if part is None:
            # Replicas of one box (several devices) share one read.
            part = boxes[box] = read(*box).astype(dtype, copy=False)
        return part

    return jax.make_array_from_callback(shape, sharding, data)


def restore_leaf(saved: object, target: Any, name: str, where: str) -> Any:
    """The leaf restored from ``saved`` for ``target``: of its kind, shape, dtype and sharding.

    ``jax.Array`` and ``jax.ShapeDtypeStruct`` targets give a ``jax.Array``
    (for a ``ShapeDtypeStruct`` without a sharding, or an uncommitted array
    such as optax's step count: on this process's default device,
    uncommitted, so that jit may still move it); NumPy
    arrays and scalars give NumPy values, Python scalars Python values, cast
    to the target's type. Other targets (a ``None`` target: any leaf) get the
    saved value as it is.

    Raises:
        CheckpointMismatchError: When shapes differ (naming the leaf and both shapes).
    """
    if is_array_target(target):
        return _place(saved, target, name, where)
    if isinstance(target, (np.ndarray, np.generic)):
        _mismatch(where, name, _saved_shape(saved), tuple(target.shape))
        value = _whole(saved).astype(target.dtype, copy=False)
        return value if isinstance(target, np.ndarray) else value[()]
    if isinstance(target, (bool, int, float, complex)):
        _mismatch(where, name, _saved_shape(saved), ())
        return type(target)(_whole(saved)[()].item())
    if isinstance(saved, SavedArray):
        return saved.full()
    if isinstance(saved, np.ndarray):
        return np.array(saved)
    return saved
