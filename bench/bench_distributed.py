"""Distributed checkpoints: a 2-rank job's save and restore against one process and DCP.

Each of 2 ranks (gloo on loopback, processes started here) holds ``--mb``
megabytes of its own float32 tensors (300 MB by default). Measured in the
same run, on the same disk, best of ``--repeats``:

* **2-rank save / restore** with ``CheckpointManager`` (every rank writes its
  own shards, rank 0 commits one index);
* **one process** (rank 0, while rank 1 waits) saving and restoring the same
  bytes (both ranks' tensors) alone: what the 2-rank job is compared with;
* **torch.distributed.checkpoint** ``dcp.save`` / ``dcp.load`` of the same
  state on the same 2 ranks;
* the **coordination cost** of an empty save (one int): 2 ranks against one
  process.

Each round runs the six measurements one after another on the same disk (each
round starting with another library), and the best round of each is kept.
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
    """One rank of the job. Each round measures, one after another on the same disk: the
    2-rank save, rank 0 saving both ranks' bytes alone (rank 1 waits), and DCP's save; then
    the same three restores. The best round of each is kept."""
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
    alone = ps.checkpoint.CheckpointOptions(distributed=False)
    ckpt = ps.Checkpoint(state=_holder(rank, mb))
    fresh = ps.Checkpoint(state=_holder(rank, mb))
    both = ps.Checkpoint(state=_both(mb)) if rank == 0 else None
    both_fresh = ps.Checkpoint(state=_both(mb)) if rank == 0 else None
    state = {f"rank{rank}/{k}": v for k, v in _tensors(rank, mb).items()}
    target = {k: torch.empty_like(v) for k, v in state.items()}
    names = ("save", "single_save", "dcp_save", "restore", "single_restore", "dcp_load")
    best = dict.fromkeys(names, float("inf"))

    def round_of(root: str) -> list[tuple[str, Any]]:
        """The saves, then the restores, of one round (rank 1 waits while rank 0 is alone)."""
        single_save = single_restore = None
        if both is not None and both_fresh is not None:
            saver, reader = both, both_fresh

            def single_save() -> None:
                saver.write(f"{root}/single", options=alone)

            def single_restore() -> None:
                reader.read(f"{root}/single").assert_consumed()

        def job_save() -> None:
            ckpt.write(f"{root}/job")

        def job_restore() -> None:
            fresh.read(f"{root}/job").assert_consumed()

        def dcp_save() -> None:
            dcp.save(state, checkpoint_id=f"{root}/dcp")

        def dcp_load() -> None:
            dcp.load(target, checkpoint_id=f"{root}/dcp")

        saves = [("save", job_save), ("single_save", single_save), ("dcp_save", dcp_save)]
        loads = [("restore", job_restore), ("single_restore", single_restore)]
        return [*saves, *loads, ("dcp_load", dcp_load)]

    for n in range(repeats):
        root = f"{directory}/round-{n}"
        steps = round_of(root)
        # Each round starts with another library, so none always follows the others' writes.
        saves, loads = steps[:3], steps[3:]
        shift = n % 3
        for name, fn in [*saves[shift:], *saves[:shift], *loads[shift:], *loads[:shift]]:
            best[name] = min(best[name], _timed(fn or (lambda: None), 1, dist.barrier))
        dist.barrier()
        if rank == 0:
            shutil.rmtree(root, ignore_errors=True)
    empty = ps.Checkpoint(step=1)
    best["empty_save"] = _timed(
        lambda: empty.write(f"{directory}/empty/e"), max(repeats, 5), dist.barrier
    )
    if rank == 0:
        empty_alone = ps.Checkpoint(step=1)
        times = []
        for _ in range(max(repeats, 5)):
            start = time.perf_counter()
            empty_alone.write(f"{directory}/empty-alone/e", options=alone)
            times.append(time.perf_counter() - start)
        best["single_empty_save"] = min(times)
        print("RESULT " + json.dumps(best), flush=True)
    dist.barrier()
    dist.destroy_process_group()


def _both(mb: int) -> Any:
    """Both ranks' tensors in one object: what one process saving the job's bytes holds."""
    import pipestate as ps

    holder = ps.checkpoint.AutoTrackable()
    holder.ranks = ps.checkpoint.TrackableList([_holder(0, mb), _holder(1, mb)])
    return holder


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
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    rows = [
        [
            "save",
            job["save"],
            job["single_save"],
            job["single_save"] / job["save"],
            job["dcp_save"],
            job["dcp_save"] / job["save"],
        ],
        [
            "restore",
            job["restore"],
            job["single_restore"],
            job["single_restore"] / job["restore"],
            job["dcp_load"],
            job["dcp_load"] / job["restore"],
        ],
    ]
    print(f"2 ranks x {args.mb} MB of float32 tensors each (best of {args.repeats}, seconds)")
    headers = ["", "2 ranks", "1 process", "vs 1 process", "dcp, 2 ranks", "vs dcp"]
    print(table(headers, rows))
    overhead = job["empty_save"] - job["single_empty_save"]
    print(
        f"empty save: {job['empty_save'] * 1e3:.1f} ms on 2 ranks, "
        f"{job['single_empty_save'] * 1e3:.1f} ms alone: coordination {overhead * 1e3:.1f} ms"
    )
    write_results("distributed", {"mb_per_rank": args.mb, "repeats": args.repeats, "job": job})


if __name__ == "__main__":
    main()
