"""A data-parallel JAX loop on ``jax.distributed`` (CPU, loopback), run by the tests.

Each process reads its shard of one global stream in batches and gathers
every process's batch (``process_allgather``: a cross-process computation)
into a replicated total; a jitted step updates parameters sharded over the
devices of every process (``w``: rows over the global mesh, ``b``: replicated)
with optax's Adam. It saves through ``CheckpointManager`` every
``--save-every`` steps: with ``jax.distributed`` initialized, the save finds
the job's coordinator by itself. It appends a JSON line per process to
``--record``: the elements consumed up to each committed save, the
parameters' global values, and the outcome of every save. ``--port 0`` runs
one process without ``jax.distributed`` (its parameters on its own devices);
``--restore-from`` resumes a given checkpoint instead of the latest.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import pipestate as ps
from pipestate.checkpoint import current_coordinator

GLOBAL_LENGTH = 1_000
BATCH = 2
# The key process 0 sets once its last save has ended (a process that skipped a save
# waits for it, so that it does not leave the job while process 0 still needs it).
FINISHED_KEY = "test/finished"


def global_stream(seed: int = 7) -> ps.Dataset:
    """The job's global stream: every element exactly once per pass, in a seeded order."""
    return ps.Dataset.range(GLOBAL_LENGTH).global_shuffle(seed=seed)


def pipeline(world_size: int, rank: int) -> ps.Dataset:
    return global_stream().shard(world_size, rank).batch(BATCH)


def _log(path: str, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps({**record, "time": time.time()}) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _gather(batch: np.ndarray, world_size: int) -> np.ndarray:
    """Every process's batch, in process order (the same array on every process)."""
    if world_size == 1:
        return batch[None]
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(batch))


def _global(array: jax.Array) -> list[Any]:
    """The global value of ``array``, the same on every process, as nested lists."""
    if jax.process_count() == 1:
        return list(np.asarray(array).tolist())
    from jax.experimental import multihost_utils

    return list(np.asarray(multihost_utils.process_allgather(array, tiled=True)).tolist())


def initial_params() -> dict[str, jax.Array]:
    """``w`` sharded by rows over every process's devices, ``b`` replicated on all of them."""
    mesh = Mesh(np.array(jax.devices()), ("x",))
    w = np.linspace(-1, 1, 32, dtype=np.float32).reshape(8, 4)
    b = np.full(4, 0.5, np.float32)
    return {
        "w": jax.make_array_from_callback(w.shape, NamedSharding(mesh, P("x")), lambda i: w[i]),
        "b": jax.make_array_from_callback(b.shape, NamedSharding(mesh, P()), lambda i: b[i]),
    }


OPTIMIZER = optax.adam(0.05)


@jax.jit
def train_step(params: Any, opt_state: Any, x: jax.Array) -> tuple[Any, Any]:
    grads = jax.tree.map(lambda p: p * 0.1 + x, params)
    updates, opt_state = OPTIMIZER.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ckpt-dir", required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--save-every", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--skip-save", type=int, default=0, help="this process skips save N")
    parser.add_argument("--exit-at-save", type=int, default=0, help="this process exits at save N")
    parser.add_argument("--restore-from", default="", help="this checkpoint, not the latest")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()

    if args.port:
        jax.distributed.initialize(
            coordinator_address=f"127.0.0.1:{args.port}",
            num_processes=args.num_processes,
            process_id=args.process_id,
            initialization_timeout=30,
        )
    rank, world_size = jax.process_index(), jax.process_count()
    coordinator = current_coordinator()

    iterator = iter(pipeline(world_size, rank))
    total = ps.checkpoint.Variable(np.zeros((), np.int64))
    step = ps.checkpoint.Variable(np.zeros((), np.int64))
    params = initial_params()
    checkpoint = ps.Checkpoint(
        data=iterator, total=total, step=step, params=params, opt_state=OPTIMIZER.init(params)
    )
    options = ps.checkpoint.CheckpointOptions(timeout=args.timeout)
    manager = ps.CheckpointManager(checkpoint, args.ckpt_dir, max_to_keep=3)
    if args.restore_from:
        checkpoint.restore(args.restore_from).assert_consumed()
        restored: str | None = args.restore_from
    else:
        restored = manager.restore_or_initialize()
    _log(
        args.record,
        {
            "event": "start",
            "rank": rank,
            "world_size": world_size,
            "restored": restored,
            "step": int(step.numpy()),
            "total": int(total.numpy()),
            "params": {name: _global(a) for name, a in checkpoint.params.items()},
            "coordinator": type(coordinator).__name__,
            "coordinator_rank": getattr(coordinator, "rank", None),
            "coordinator_world_size": getattr(coordinator, "world_size", None),
            "namespace": coordinator.namespace() if coordinator is not None else None,
        },
    )
    consumed: list[int] = []
    saves = 0
    code = 0
    for _ in range(args.steps):
        batch = np.asarray(next(iterator))
        consumed.extend(int(x) for x in batch)
        gathered = _gather(batch, world_size)
        total.assign(total.numpy() + gathered.sum())
        x = np.float32(gathered.mean() / GLOBAL_LENGTH)
        checkpoint.params, checkpoint.opt_state = train_step(
            checkpoint.params, checkpoint.opt_state, x
        )
        step.assign(step.numpy() + 1)
        if args.no_save or int(step.numpy()) % args.save_every:
            continue
        saves += 1
        if saves == args.exit_at_save:
            _log(args.record, {"event": "exit", "rank": rank, "step": int(step.numpy())})
            return 0
        if saves == args.skip_save:
            _log(args.record, {"event": "skipped", "rank": rank, "step": int(step.numpy())})
            client = jax._src.distributed.global_state.client
            client.blocking_key_value_get_bytes(FINISHED_KEY, int(args.timeout * 3000) + 30_000)
            return 0
        try:
            path = manager.save(options=options)
        except ps.errors.DistributedSaveError as err:
            _log(
                args.record,
                {
                    "event": "save_failed",
                    "rank": rank,
                    "step": int(step.numpy()),
                    "error": str(err),
                    "missing": list(err.missing_ranks),
                    "failed": list(err.failed_ranks),
                },
            )
            code = 3
            break
        _log(
            args.record,
            {
                "event": "saved",
                "rank": rank,
                "step": int(step.numpy()),
                "path": path,
                "consumed": consumed,
                "total": int(total.numpy()),
                "params": {name: _global(a) for name, a in checkpoint.params.items()},
            },
        )
    if not code:  # gathering the parameters needs every process
        _log(
            args.record,
            {
                "event": "end",
                "rank": rank,
                "step": int(step.numpy()),
                "consumed": consumed,
                "params": {name: _global(a) for name, a in checkpoint.params.items()},
            },
        )
    if args.port and rank == 0:
        jax._src.distributed.global_state.client.key_value_set(FINISHED_KEY, "1")
    return code


if __name__ == "__main__":
    sys.exit(main())
