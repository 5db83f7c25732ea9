"""A ``jax.Array`` sharded across the devices of two processes (CPU, loopback), run by the tests.

Each process has 2 CPU devices; the job's global mesh spans the 4 of them
(``jax.devices()`` lists every process's devices, ``jax.local_devices()`` its
own). An array made with ``jax.make_array_from_callback`` over the global mesh
holds on each process only the shards of its devices (``addressable_shards``);
it is not fully addressable, and fetching it whole (``jax.device_get``,
``np.asarray``) raises on every process. ``--mode probe`` records what each
process holds, and what fetching does, as a JSON line per process in ``--record``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

GLOBAL_SHAPE = (8, 6)


def global_value(shape: tuple[int, ...] = GLOBAL_SHAPE) -> np.ndarray:
    """The array's global value, the same on every process."""
    return np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)


def mesh_1d() -> Mesh:
    """Every process's devices on one axis ``x``, in global device order."""
    return Mesh(np.array(jax.devices()), ("x",))


def mesh_2d() -> Mesh:
    """A 2 x 2 mesh: axis ``proc`` across the processes, ``dev`` across each one's devices."""
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
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
                "value": np.asarray(shard.data).tolist(),
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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--process-id", type=int, required=True)
    parser.add_argument("--num-processes", type=int, default=2)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--mode", choices=["probe"], default="probe")
    args = parser.parse_args()
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{args.port}",
        num_processes=args.num_processes,
        process_id=args.process_id,
        initialization_timeout=30,
    )
    record = {"rank": jax.process_index(), "mode": args.mode, **probe()}
    with open(args.record, "a") as f:
        f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
