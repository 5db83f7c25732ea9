"""Distributed checkpoints: a 2-rank job's save and restore against one process and DCP.

Each of 2 ranks (gloo on loopback, processes started here) holds ``--mb``
megabytes of its own float32 tensors (300 MB by default). Measured in the
same run, on the same disk, best of ``--repeats``:

* **2-rank save / restore** with ``CheckpointManager`` (every rank writes its
  own shards, rank 0 commits one index);
* **one process** saving and restoring the same bytes (both ranks' tensors)
  alone: what the 2-rank job is compared with;
* **torch.distributed.checkpoint** ``dcp.save`` / ``dcp.load`` of the same
  state on the same 2 ranks;
* the **coordination cost** of an empty save (one int): 2 ranks against one
  process.

Times are the slowest rank's, between barriers. Saves sync files to disk
(``fsync``) as both libraries do by default. Ratios > 1 mean pipestate's
2-rank job is faster.

Run:  python bench/bench_distributed.py            (2 x 300 MB)
      python bench/bench_distributed.py --mb 50    (quick)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import table, write_results

TENSOR_MB = 25


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tensors(rank: int, mb: int) -> dict[str, Any]:
    import torch

    count = max(1, mb // TENSOR_MB)
    numel = mb * (1 << 20) // 4 // count
    generator = torch.Generator().manual_seed(rank)
    return {f"w{i}": torch.rand(numel, generator=generator) for i in range(count)}


def _holder(rank: int, mb: int) -> Any:
    import pipestate as ps

    class RankState(ps.checkpoint.AutoTrackable):
        """This rank's own tensors (saved per rank)."""

        _pipestate_per_rank = True

        def __init__(self, tensors: dict[str, Any]) -> None:
            self.tensors = ps.checkpoint.TrackableDict(tensors)

    return RankState(_tensors(rank, mb))


def _timed(fn: Any, repeats: int, barrier: Any) -> float:
    import torch
    import torch.distributed as dist

    best = float("inf")
    for _ in range(repeats):
        barrier()
        start = time.perf_counter()
        fn()
        barrier()
        elapsed = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        best = min(best, float(elapsed.item()))
    return best


def worker(rank: int, world: int, port: int, directory: str, mb: int, repeats: int) -> None:
    """One rank of the job: the 2-rank measurements."""
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    import pipestate as ps

    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=600),
    )
    results: dict[str, float] = {}
    holder = _holder(rank, mb)
    ckpt = ps.Checkpoint(state=holder)
    counter = {"n": 0}

    def save() -> None:
        counter["n"] += 1
        ckpt.write(f"{directory}/pipestate/ckpt-{counter['n']}")

    results["save"] = _timed(save, repeats, dist.barrier)
    path = f"{directory}/pipestate/ckpt-{counter['n']}"

    def restore() -> None:
        ps.Checkpoint(state=_holder(rank, 1)).read(path).expect_partial()

    fresh = _holder(rank, mb)
    results["restore"] = _timed(
        lambda: ps.Checkpoint(state=fresh).read(path).assert_consumed(), repeats, dist.barrier
    )
    state = {f"rank{rank}/{k}": v for k, v in _tensors(rank, mb).items()}

    def dcp_save() -> None:
        counter["n"] += 1
        dcp.save(state, checkpoint_id=f"{directory}/dcp/{counter['n']}")

    results["dcp_save"] = _timed(dcp_save, repeats, dist.barrier)
    dcp_path = f"{directory}/dcp/{counter['n']}"
    target = {k: torch.empty_like(v) for k, v in state.items()}
    results["dcp_load"] = _timed(
        lambda: dcp.load(target, checkpoint_id=dcp_path), repeats, dist.barrier
    )
    empty = ps.Checkpoint(step=1)
    results["empty_save"] = _timed(
        lambda: empty.write(f"{directory}/empty/e"), max(repeats, 5), dist.barrier
    )
    del restore
    if rank == 0:
        print("RESULT " + json.dumps(results), flush=True)
    dist.destroy_process_group()


def single(directory: str, mb: int, repeats: int) -> dict[str, float]:
    """One process saving and restoring both ranks' tensors alone."""
    import pipestate as ps

    class Both(ps.checkpoint.AutoTrackable):
        def __init__(self, scale: int) -> None:
            self.ranks = ps.checkpoint.TrackableList([_holder(0, scale), _holder(1, scale)])

    ckpt = ps.Checkpoint(state=Both(mb))
    counter = {"n": 0}

    def timed(fn: Any, n: int) -> float:
        best = float("inf")
        for _ in range(n):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        return best

    def save() -> None:
        counter["n"] += 1
        ckpt.write(f"{directory}/single/ckpt-{counter['n']}")

    out = {"save": timed(save, repeats)}
    path = f"{directory}/single/ckpt-{counter['n']}"
    fresh = ps.Checkpoint(state=Both(mb))
    out["restore"] = timed(lambda: fresh.read(path).assert_consumed(), repeats)
    empty = ps.Checkpoint(step=1)
    out["empty_save"] = timed(lambda: empty.write(f"{directory}/single-empty/e"), max(repeats, 5))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=300, help="megabytes per rank")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    if args.worker:
        rank, world, port = (int(x) for x in args.worker[:3])
        worker(rank, world, port, args.worker[3], args.mb, args.repeats)
        return
    directory = tempfile.mkdtemp(prefix="pipestate-bench-dist-", dir=args.dir)
    try:
        port = _free_port()
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        command = [sys.executable, __file__, "--mb", str(args.mb), "--repeats", str(args.repeats)]
        ranks = [
            subprocess.Popen(
                [*command, "--worker", str(r), "2", str(port), directory],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            for r in range(2)
        ]
        outputs = [p.communicate(timeout=3600)[0] for p in ranks]
        if any(p.returncode for p in ranks):
            raise SystemExit(f"a rank failed: {[p.returncode for p in ranks]}\n{outputs}")
        line = next(x for x in outputs[0].splitlines() if x.startswith("RESULT "))
        job = json.loads(line.removeprefix("RESULT "))
        shutil.rmtree(Path(directory) / "pipestate", ignore_errors=True)
        shutil.rmtree(Path(directory) / "dcp", ignore_errors=True)
        alone = single(directory, args.mb, args.repeats)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    rows = [
        [
            "save",
            job["save"],
            alone["save"],
            alone["save"] / job["save"],
            job["dcp_save"],
            job["dcp_save"] / job["save"],
        ],
        [
            "restore",
            job["restore"],
            alone["restore"],
            alone["restore"] / job["restore"],
            job["dcp_load"],
            job["dcp_load"] / job["restore"],
        ],
    ]
    print(f"2 ranks x {args.mb} MB of float32 tensors each (best of {args.repeats}, seconds)")
    headers = ["", "2 ranks", "1 process", "vs 1 process", "dcp, 2 ranks", "vs dcp"]
    print(table(headers, rows))
    overhead = job["empty_save"] - alone["empty_save"]
    print(
        f"empty save: {job['empty_save'] * 1e3:.1f} ms on 2 ranks, "
        f"{alone['empty_save'] * 1e3:.1f} ms alone: coordination {overhead * 1e3:.1f} ms"
    )
    write_results(
        "distributed",
        {"mb_per_rank": args.mb, "repeats": args.repeats, "job": job, "single": alone},
    )


if __name__ == "__main__":
    main()
