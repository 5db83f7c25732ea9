"""A data-parallel training loop on torch.distributed (gloo), run by torchrun or by the tests.

Each rank reads its shard of one global stream, all-reduces what it read into a
replicated total, and saves through ``CheckpointManager`` every ``--save-every``
steps. It appends a JSON line per rank to ``--record``: the elements consumed up to
each committed save, and the outcome of every save.

Under torchrun the rank and world come from the environment; with ``--launch``
the tests start the ranks themselves (``--rank``, ``--world-size``, ``--port``)
so that one rank can be killed without torchrun stopping the others.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import sys
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

import pipestate as ps
from pipestate.checkpoint import _writer

GLOBAL_LENGTH = 10_000


def global_stream(seed: int = 7) -> ps.Dataset:
    """The job's global stream: every element exactly once per pass, in a seeded order."""
    return ps.Dataset.range(GLOBAL_LENGTH).global_shuffle(seed=seed)


def pipeline(world_size: int, rank: int) -> ps.Dataset:
    return global_stream().shard(world_size, rank).map(lambda x: x * 1)


def _log(path: str, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _die_during_save(rank: int, when: int) -> None:
    """SIGKILL this rank while it writes the shards of its ``when``-th save."""
    original = _writer._write_shard
    calls = {"n": 0}

    def dying(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == when:
            path = args[1]
            with open(path, "wb") as f:  # half a shard on disk, then the rank is gone
                f.write(b"\0" * 1024)
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    _writer._write_shard = dying  # type: ignore[assignment]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt-dir", required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--save-every", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--rng", action="store_true", help="also checkpoint an RNGState")
    parser.add_argument("--die-rank", type=int, default=-1)
    parser.add_argument("--die-at-save", type=int, default=0)
    parser.add_argument("--async-save", action="store_true")
    parser.add_argument("--launch", action="store_true")
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--world-size", type=int, default=1)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    if args.launch:
        rank, world_size = args.rank, args.world_size
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{args.port}",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=60),
        )
    else:
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
        rank, world_size = dist.get_rank(), dist.get_world_size()

    if rank == args.die_rank:
        _die_during_save(rank, args.die_at_save)

    iterator = iter(pipeline(world_size, rank))
    total = ps.checkpoint.Variable(np.zeros((), np.int64))
    step = ps.checkpoint.Variable(np.zeros((), np.int64))
    objects: dict[str, Any] = {"data": iterator, "total": total, "step": step}
    rng = None
    if args.rng:
        rng = ps.checkpoint.RNGState()
        objects["rng"] = rng
    checkpoint = ps.Checkpoint(**objects)
    options = ps.checkpoint.CheckpointOptions(timeout=args.timeout, enable_async=args.async_save)
    manager = ps.CheckpointManager(checkpoint, args.ckpt_dir, max_to_keep=3)
    if rng is not None:
        np.random.seed(1000 + rank)
    try:
        restored = manager.restore_or_initialize()
    except ps.errors.CheckpointMismatchError as err:
        _log(args.record, {"event": "restore_failed", "rank": rank, "error": str(err)})
        return 4
    _log(
        args.record,
        {
            "event": "start",
            "rank": rank,
            "world_size": world_size,
            "restored": restored,
            "step": int(step.numpy()),
            "total": int(total.numpy()),
        },
    )
    consumed: list[int] = []
    draws: list[float] = []
    start = int(step.numpy())
    for s in range(start, start + args.steps):
        element = int(next(iterator))
        consumed.append(element)
        if rng is not None:
            draws.append(float(np.random.random()))
        summed = torch.tensor([element], dtype=torch.int64)
        dist.all_reduce(summed)
        total.assign(int(total.numpy()) + int(summed.item()))
        step.assign(s + 1)
        if (s + 1) % args.save_every == 0:
            try:
                path = manager.save(options=options)
                if args.async_save:
                    manager.sync()
            except ps.errors.DistributedSaveError as err:
                _log(
                    args.record,
                    {
                        "event": "save_failed",
                        "rank": rank,
                        "step": s + 1,
                        "error": str(err),
                        "missing": list(err.missing_ranks),
                        "failed": list(err.failed_ranks),
                    },
                )
                return 3
            _log(
                args.record,
                {
                    "event": "saved",
                    "rank": rank,
                    "step": s + 1,
                    "path": path,
                    "consumed": consumed,
                    "draws": draws,
                    "total": int(total.numpy()),
                },
            )
    manager.close()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
