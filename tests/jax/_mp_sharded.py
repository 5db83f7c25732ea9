"""A ``jax.Array`` sharded across the devices of two processes (CPU, loopback), run by the tests.

Each process has 2 CPU devices; the job's global mesh spans the 4 of them
(``jax.devices()`` lists every process's devices, ``jax.local_devices()`` its
own). An array made with ``jax.make_array_from_callback`` over the global mesh
holds on each process only the shards of its devices (``addressable_shards``);
it is not fully addressable, and fetching it whole (``jax.device_get``,
``np.asarray``) raises on every process. ``--mode probe`` records what each
process holds, and what fetching does, as a JSON line per process in ``--record``.

``--mode save`` saves a pytree of such arrays (``params``: rows over the 4
devices, blocks of the 2 x 2 mesh in bfloat16, rows over each process's
devices replicated across the processes with the first replica on process 1,
and a replicated vector; ``own``: arrays of no global mesh) with
``CheckpointManager`` on every process, ``--saves`` times (the values change
with each save; ``--async-save``: in the background); ``--die-rank`` and
``--die-at-save`` SIGKILL that process while it writes its shards of that
save. ``--mode restore`` reads the latest checkpoint's ``params`` onto the
saved shardings and onto others, with ``restore_pytree`` and with
``Checkpoint.restore``, and records what each process then holds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

GLOBAL_SHAPE = (8, 6)
# The leaves of the saved pytree: shape and dtype.
LEAVES = {
    "w": ((8, 6), "float32"),
    "m": ((8, 6), "bfloat16"),
    "r": ((4, 4), "float32"),
    "b": ((6,), "float32"),
}


def global_value(shape: tuple[int, ...] = GLOBAL_SHAPE) -> np.ndarray:
    """The array's global value, the same on every process."""
    return np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)


def leaf_value(name: str, save: int) -> np.ndarray:
    """The global value of leaf ``name`` at save ``save`` (1, 2, ...), the same on every process."""
    import ml_dtypes

    shape, dtype = LEAVES[name]
    # bfloat16 holds these exactly (steps of 0.5 below 64), so restores compare bit for bit.
    base = global_value(shape) * {"w": 1.0, "m": 0.5, "r": 2.0, "b": 3.0}[name]
    base += (10 if name == "m" else 1000) * save
    return base.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype))


def mesh_1d() -> Mesh:
    """Every process's devices on one axis ``x``, in global device order."""
    return Mesh(np.array(jax.devices()), ("x",))


def mesh_2d(reverse: bool = False) -> Mesh:
    """A 2 x 2 mesh: axis ``proc`` across the processes, ``dev`` across each one's devices.

    ``reverse``: the last process first, so that replica 0 of a value replicated
    across the processes lives on it.
    """
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id), reverse=reverse)
    return Mesh(np.array(devices).reshape(jax.process_count(), -1), ("proc", "dev"))


def make_sharded(sharding: NamedSharding, value: np.ndarray) -> jax.Array:
    """The global ``value`` placed with ``sharding``: each process fills its own shards."""
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def _box(index: tuple[slice, ...], shape: tuple[int, ...]) -> list[list[int]]:
    """A shard's index as ``[start, stop]`` per dimension."""
    return [list(s.indices(n)[:2]) for s, n in zip(index, shape)]


def describe(array: jax.Array) -> dict[str, Any]:
    """What this process holds of ``array``: its shards, boxes, replicas and values."""
    return {
        "fully_addressable": array.is_fully_addressable,
        "fully_replicated": array.is_fully_replicated,
        "shards": [
            {
                "device": shard.device.id,
                "process": shard.device.process_index,
                "box": _box(shard.index, array.shape),
                "replica": shard.replica_id,
                "value": np.asarray(shard.data).astype(np.float64).tolist(),
            }
            for shard in array.addressable_shards
        ],
    }


def _fetch(array: jax.Array) -> str:
    try:
        jax.device_get(array)
    except RuntimeError as err:
        return f"RuntimeError: {err}"
    return "ok"


def probe() -> dict[str, Any]:
    value = global_value()
    by_rows = make_sharded(NamedSharding(mesh_1d(), P("x")), value)
    blocks = make_sharded(NamedSharding(mesh_2d(), P("dev", "proc")), value)
    replicated = make_sharded(NamedSharding(mesh_1d(), P()), value)
    return {
        "devices": [[d.id, d.process_index] for d in jax.devices()],
        "local_devices": [d.id for d in jax.local_devices()],
        "by_rows": describe(by_rows),
        "blocks": describe(blocks),
        "replicated": describe(replicated),
        "fetch_sharded": _fetch(by_rows),
        "fetch_replicated": _fetch(replicated),
    }


def shardings(layout: str) -> dict[str, NamedSharding]:
    """Each leaf's sharding: as saved (``same``), or cut otherwise (``other``)."""
    rows, grid = mesh_1d(), mesh_2d()
    if layout == "same":
        return {
            "w": NamedSharding(rows, P("x")),
            "m": NamedSharding(grid, P("dev", "proc")),
            # Rows over each process's devices, replicated across the processes.
            "r": NamedSharding(mesh_2d(reverse=True), P("dev")),
            "b": NamedSharding(rows, P()),
        }
    return {
        "w": NamedSharding(grid, P("proc", "dev")),
        "m": NamedSharding(rows, P("x")),
        "r": NamedSharding(rows, P(None, "x")),
        "b": NamedSharding(grid, P("dev")),
    }


def own_value(process: int) -> np.ndarray:
    """What process ``process`` holds in its own array (each process a different value)."""
    return global_value((4, 2)) + 100 * process


def own_arrays() -> dict[str, jax.Array]:
    """Arrays of no global mesh: each process's own, over its own devices, and one on process
    0's devices alone (which the other processes hold none of)."""
    local = NamedSharding(Mesh(np.array(jax.local_devices()), ("x",)), P("x"))
    first = [d for d in jax.devices() if d.process_index == 0]
    on_first = NamedSharding(Mesh(np.array(first), ("x",)), P())
    value = global_value((4, 2))
    return {
        "local": make_sharded(local, own_value(jax.process_index())),
        "on_first": jax.make_array_from_callback(
            value.shape, on_first, lambda index: value[index], dtype=value.dtype
        ),
    }


def _die_during_save(when: int) -> None:
    """SIGKILL this process while it writes the shards of its ``when``-th save."""
    from pipestate.checkpoint import _writer

    original = _writer._write_shard
    calls = {"n": 0}

    def dying(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == when:
            with open(args[1], "wb") as f:  # half a shard on disk, then the process is gone
                f.write(b"\0" * 1024)
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    _writer._write_shard = dying  # type: ignore[assignment]


def save(args: argparse.Namespace, record: dict[str, Any]) -> int:
    import pipestate as ps

    placed = shardings("same")
    if jax.process_index() == args.die_rank:
        _die_during_save(args.die_at_save)
    params = {name: make_sharded(placed[name], leaf_value(name, 0)) for name in LEAVES}
    step = ps.checkpoint.Variable(np.zeros((), np.int64))
    checkpoint = ps.Checkpoint(params=params, own=own_arrays(), step=step)
    manager = ps.CheckpointManager(checkpoint, args.ckpt_dir, max_to_keep=3)
    options = ps.checkpoint.CheckpointOptions(timeout=args.timeout, enable_async=args.async_save)
    code = 0
    try:
        for n in range(1, args.saves + 1):
            checkpoint.params = {
                name: make_sharded(placed[name], leaf_value(name, n)) for name in LEAVES
            }
            step.assign(n)
            manager.save(options=options)  # async: waits for the save before, raising its error
        manager.sync()
    except ps.errors.DistributedSaveError as err:
        record["error"] = str(err)
        record["missing"] = list(err.missing_ranks)
        code = 3
    record["saved"] = manager.checkpoints  # the committed ones
    return code


def restore(args: argparse.Namespace, record: dict[str, Any]) -> int:
    """The latest ``params`` onto each layout, by ``restore_pytree`` and ``Checkpoint.restore``."""
    import pipestate as ps
    from pipestate.jax import restore_pytree

    latest = ps.checkpoint.latest_checkpoint(args.ckpt_dir)
    for layout in ("same", "other"):
        placed = shardings(layout)
        target = {
            name: jax.ShapeDtypeStruct(shape, jax.numpy.dtype(dtype), sharding=placed[name])
            for name, (shape, dtype) in LEAVES.items()
        }
        tree = restore_pytree(args.ckpt_dir, target=target, key="params")
        record[f"{layout}/restore_pytree"] = {name: describe(tree[name]) for name in LEAVES}
        zeros = {
            name: make_sharded(placed[name], np.zeros(LEAVES[name][0], target[name].dtype))
            for name in LEAVES
        }
        step = ps.checkpoint.Variable(np.zeros((), np.int64))
        checkpoint = ps.Checkpoint(params=zeros, step=step)
        checkpoint.restore(latest).assert_existing_objects_matched()
        restored = checkpoint.params
        record[f"{layout}/checkpoint_restore"] = {name: describe(restored[name]) for name in LEAVES}
        record["step"] = int(step.numpy())
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--process-id", type=int, required=True)
    parser.add_argument("--num-processes", type=int, default=2)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--mode", choices=["probe", "save", "restore"], default="probe")
    parser.add_argument("--ckpt-dir", default="")
    parser.add_argument("--saves", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--die-rank", type=int, default=-1)
    parser.add_argument("--die-at-save", type=int, default=0)
    parser.add_argument("--async-save", action="store_true")
    args = parser.parse_args()
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{args.port}",
        num_processes=args.num_processes,
        process_id=args.process_id,
        initialization_timeout=30,
    )
    record: dict[str, Any] = {"rank": jax.process_index(), "mode": args.mode}
    if args.mode == "probe":
        record.update(probe())
        code = 0
    else:
        code = (save if args.mode == "save" else restore)(args, record)
    with open(args.record, "a") as f:
        f.write(json.dumps(record) + "\n")
    if code:
        # The job lost a process: leave without jax.distributed's shutdown barrier, which
        # would wait for the dead process until its heartbeat timeout.
        sys.stdout.flush()
        os._exit(code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
