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
from pipestate.errors import CheckpointMismatchError, CorruptCheckpointError

__all__ = ["is_array_target", "is_key_array", "restore_leaf", "saved_key", "saved_leaf"]

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


_KEY_FIELDS = frozenset({"prng_impl", "key_data"})


def is_key_array(leaf: Any) -> bool:
    """Whether ``leaf`` (an array or a ``ShapeDtypeStruct``) holds typed PRNG keys."""
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and bool(jax.numpy.issubdtype(dtype, jax.dtypes.prng_key))


def _key_impl(leaf: Any) -> str:
    if isinstance(leaf, jax.Array):
        return str(jax.random.key_impl(leaf))
    impl = getattr(getattr(leaf.dtype, "_impl", None), "name", None)
    return str(impl)


def saved_key(keys: jax.Array) -> dict[str, Any]:
    """What a typed PRNG key array is saved as: its implementation's name and its key data
    (an array of unsigned integers, saved as any ``jax.Array``)."""
    return {"prng_impl": _key_impl(keys), "key_data": saved_leaf(jax.random.key_data(keys))}


def _is_saved_key(saved: object) -> bool:
    return isinstance(saved, dict) and saved.keys() == _KEY_FIELDS


def _key_data_target(target: Any) -> Any:
    """The shape, dtype and sharding of ``target``'s key data (a trailing dimension added)."""
    if isinstance(target, jax.Array):
        return jax.random.key_data(target)
    abstract = jax.eval_shape(jax.random.key_data, target)
    sharding = getattr(target, "sharding", None)
    if isinstance(sharding, jax.sharding.NamedSharding):
        padding = (None,) * (abstract.ndim - len(sharding.spec))
        spec = jax.sharding.PartitionSpec(*sharding.spec, *padding)  # type: ignore[no-untyped-call]
        sharding = jax.sharding.NamedSharding(sharding.mesh, spec)
    elif sharding is not None and not isinstance(sharding, jax.sharding.SingleDeviceSharding):
        sharding = None  # another kind of sharding of keys: their data on the default device
    return jax.ShapeDtypeStruct(  # type: ignore[no-untyped-call]
        abstract.shape, abstract.dtype, sharding=sharding
    )


def _restore_key(saved: object, target: Any, name: str, where: str) -> Any:
    if not _is_saved_key(saved):
        raise CheckpointMismatchError(
            f"cannot restore {where}: leaf {name} is an array of PRNG keys in the target, but "
            "the checkpoint holds no keys there; give a target of the saved kind"
        )
    assert isinstance(saved, dict)
    impl = saved["prng_impl"]
    if not isinstance(impl, str):
        raise CorruptCheckpointError(f"{where}: leaf {name} has a malformed PRNG implementation")
    wanted = _key_impl(target) if target is not None else impl
    if impl != wanted:
        raise CheckpointMismatchError(
            f"cannot restore {where}: leaf {name} holds {impl} PRNG keys in the checkpoint and "
            f"{wanted} keys in the target"
        )
    try:
        if target is None:
            data = jax.numpy.asarray(_whole(saved["key_data"]))
        else:
            data = _place(saved["key_data"], _key_data_target(target), name, where)
        return jax.random.wrap_key_data(data, impl=impl)
    except (TypeError, ValueError) as err:
        if isinstance(err, CheckpointMismatchError):
            raise
        raise CheckpointMismatchError(
            f"cannot restore {where}: leaf {name} holds {impl} PRNG keys whose saved key data "
            f"does not make keys ({err})"
        ) from None


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
    """Reads boxes of ``saved``; a box may be a read-only view of the checkpoint's memory map."""
    if isinstance(saved, SavedArray):
        return functools.partial(saved.read, copy=False)
    array = np.asarray(saved)

    def read(offsets: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
        return array[tuple(slice(o, o + n) for o, n in zip(offsets, shape))]

    return read


def _saved_dtype(saved: object) -> np.dtype[Any]:
    if isinstance(saved, SavedArray):
        return saved.dtype
    return np.asarray(saved).dtype


def _check_dtype(saved: object, dtype: np.dtype[Any], name: str, where: str) -> None:
    """Refuse a dtype JAX would silently change (64-bit types without ``jax_enable_x64``)."""
    placed = np.dtype(jax.dtypes.canonicalize_dtype(dtype))
    if placed != dtype:
        raise CheckpointMismatchError(
            f"cannot restore {where}: leaf {name} is asked for as {dtype}, which JAX holds as "
            f"{placed} here (64-bit types need jax.config.update('jax_enable_x64', True)); "
            f"give a target of dtype {placed} to restore the saved {_saved_dtype(saved)} into it"
        )


def _cast(part: np.ndarray, dtype: np.dtype[Any], name: str, where: str) -> np.ndarray:
    """``part`` as ``dtype``; an integer value the target's type can't hold is refused, never
    wrapped (floats round as NumPy casts them)."""
    if part.dtype == dtype:
        return part
    if dtype.kind in "iub" and part.dtype.kind in "iub" and part.size:
        info = np.iinfo(dtype) if dtype.kind != "b" else np.iinfo(np.uint8)
        low, high = int(part.min()), int(part.max())
        if low < info.min or high > (info.max if dtype.kind != "b" else 1):
            raise CheckpointMismatchError(
                f"cannot restore {where}: leaf {name} holds {part.dtype} values from {low} to "
                f"{high}, which {dtype} can't hold; give a target of a wider dtype"
            )
    if dtype.kind in "iu" and part.dtype.kind in "fc":
        raise CheckpointMismatchError(
            f"cannot restore {where}: leaf {name} holds {part.dtype} values and the target is "
            f"{dtype}; cast it yourself after restoring into a {part.dtype} target"
        )
    return part.astype(dtype)


def _owned(part: np.ndarray, devices: Any) -> np.ndarray:
    """``part``, copied if it is a view and a device may keep it: the CPU backend takes a
    host array without copying it, and a view of the checkpoint's memory map must not outlive
    its reader (nor change when the file does)."""
    if part.base is None or not any(d.platform == "cpu" for d in devices):
        return part
    return np.array(part)


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
    _check_dtype(saved, dtype, name, where)
    sharding = getattr(target, "sharding", None)
    if sharding is None or (isinstance(target, jax.Array) and not target.committed):
        # Where jax puts a new value (this process's default device: in a job of several
        # processes jax.devices()[0] is process 0's), and uncommitted as the target is
        # (optax's step count, jnp.zeros(...)): a jitted step may still move it next to
        # sharded arguments, as it could before the restore.
        placed: jax.Array = jax.device_put(_cast(_whole(saved), dtype, name, where))
        return placed
    read = _reader_of(saved)
    devices = sharding.device_set
    boxes: dict[_Box, np.ndarray] = {}

    def data(index: Any) -> np.ndarray:
        box = _box(index, shape) if index is not None else ((0,) * len(shape), shape)
        part = boxes.get(box)
        if part is None:
            # Replicas of one box (several devices) share one read.
            part = boxes[box] = _owned(_cast(read(*box), dtype, name, where), devices)
        return part

    return jax.make_array_from_callback(shape, sharding, data)


_SCALARS = (bool, int, float, complex)


def _kind(saved: object, name: str, where: str) -> str:
    """What a saved leaf is: ``"array"`` (arrays, NumPy scalars), ``"number"`` (a Python
    number), ``"str"``, or ``"keys"``; anything else no save writes."""
    if isinstance(saved, (SavedArray, np.ndarray, np.generic)):
        return "array"
    if isinstance(saved, _SCALARS):
        return "number"
    if isinstance(saved, str):
        return "str"
    if _is_saved_key(saved):
        return "keys"
    raise CorruptCheckpointError(
        f"{where}: leaf {name} holds {type(saved).__name__} {saved!r:.80}, which no pytree "
        "save writes (a leaf is an array, a scalar or a string)"
    )


def _python_scalar(saved: object, target: Any, name: str, where: str) -> Any:
    kind = type(target)
    if isinstance(saved, _SCALARS):
        value: Any = saved
    else:
        _mismatch(where, name, _saved_shape(saved), ())
        value = _whole(saved)[()].item()
    if kind is int and isinstance(value, (float, complex)):
        raise CheckpointMismatchError(
            f"cannot restore {where}: leaf {name} holds the {type(value).__name__} {value!r:.40} "
            "and the target is an int; give a float target"
        )
    if kind is float and isinstance(value, complex):
        raise CheckpointMismatchError(
            f"cannot restore {where}: leaf {name} holds a complex number and the target is a "
            "float; give a complex target"
        )
    return kind(value)


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
    if is_key_array(target):
        return _restore_key(saved, target, name, where)
    if _is_saved_key(saved):
        if target is None:
            return _restore_key(saved, None, name, where)
        raise CheckpointMismatchError(
            f"cannot restore {where}: leaf {name} holds PRNG keys in the checkpoint, and the "
            f"target's leaf is {type(target).__name__}; give a key array (jax.random.key) target"
        )
    kind = _kind(saved, name, where)
    if target is not None and not isinstance(target, str) and kind == "str":
        raise CheckpointMismatchError(
            f"cannot restore {where}: leaf {name} holds the string {saved!r:.60} and the "
            f"target's leaf is {type(target).__name__}; give a str target"
        )
    if isinstance(target, str) and kind != "str":
        raise CheckpointMismatchError(
            f"cannot restore {where}: leaf {name} is a str in the target and holds "
            f"{type(saved).__name__} {saved!r:.60} in the checkpoint"
        )
    if kind == "number" and (
        is_array_target(target) or isinstance(target, (np.ndarray, np.generic))
    ):
        number = np.asarray(saved)
        if number.dtype == object:
            raise CheckpointMismatchError(
                f"cannot restore {where}: leaf {name} holds the int {saved!r:.60}, which no "
                "array dtype holds; give an int target"
            )
        saved = number
    if is_array_target(target):
        return _place(saved, target, name, where)
    if isinstance(target, (np.ndarray, np.generic)):
        _mismatch(where, name, _saved_shape(saved), tuple(target.shape))
        value = _cast(_whole(saved), np.dtype(target.dtype), name, where)
        return value if isinstance(target, np.ndarray) else value[()]
    if isinstance(target, _SCALARS):
        return _python_scalar(saved, target, name, where)
    if isinstance(saved, SavedArray):
        return saved.full()
    if isinstance(saved, np.ndarray):
        return np.array(saved)
    return saved
