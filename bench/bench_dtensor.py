"""A sharded model (FSDP2, 2 gloo ranks on CPU): pipestate against ``torch.distributed.checkpoint``.

A stack of ``nn.Linear`` layers of ``--model-mb`` MB of float32 parameters
(200 MB by default), sharded with ``fully_shard`` over a 1-D mesh of 2 ranks:
every parameter is a ``DTensor``, each rank holds half. Measured in the same
run, on the same disk, best of ``--repeats``, between barriers (so the time
is the slowest rank's):

* save: ``Checkpoint(model=).write`` (every rank writes its chunks, rank 0
  commits the index) against ``dcp.save(model.state_dict())``;
* restore: ``Checkpoint.restore`` into the same sharded model against
  ``dcp.load`` into its state dict (in place: the same end state).

Neither syncs files to disk (``CheckpointOptions(fsync=False)``,
``FileSystemWriter(sync_files=False)``). Ratios > 1 mean pipestate is faster.
The script starts its own ranks.

Run:  python bench/bench_dtensor.py                  (200 MB model)
      python bench/bench_dtensor.py --model-mb 20    (seconds)
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
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import init_device_mesh

from _common import table, write_results
from pipestate.checkpoint import Checkpoint, CheckpointOptions

WIDTH = 2048
WORLD = 2


def timed(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        fn()
        dist.barrier()
        best = min(best, time.perf_counter() - start)
    return best


def rank_main(args: argparse.Namespace) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{args.port}",
        rank=args.rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=600),
    )
    mesh = init_device_mesh("cpu", (WORLD,))
    torch.manual_seed(0)
    layers = max(1, round(args.model_mb * 1e6 / (WIDTH * WIDTH * 4)))
    model = torch.nn.Sequential(*(torch.nn.Linear(WIDTH, WIDTH) for _ in range(layers)))
    for layer in model:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    scratch = Path(args.scratch)
    options = CheckpointOptions(fsync=False)
    ours_path = str(scratch / "pipestate" / "ckpt")
    ours = Checkpoint(model=model)

    def ours_save() -> None:
        ours.write(ours_path, options=options)

    def ours_restore() -> None:
        Checkpoint(model=model).restore(ours_path).assert_nontrivial_match()

    def dcp_save() -> None:
        writer = dcp.FileSystemWriter(str(scratch / "dcp"), sync_files=False)
        dcp.save(model.state_dict(), storage_writer=writer)

    def dcp_restore() -> None:
        dcp.load(model.state_dict(), checkpoint_id=str(scratch / "dcp"))

    before = {k: v.to_local().clone() for k, v in model.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = {
            "pipestate_save": timed(ours_save, args.repeats),
            "dcp_save": timed(dcp_save, args.repeats),
            "pipestate_restore": timed(ours_restore, args.repeats),
            "dcp_restore": timed(dcp_restore, args.repeats),
        }
    after = model.state_dict()
    assert all(torch.equal(after[k].to_local(), v) for k, v in before.items())
    if args.rank == 0:
        sizes = {
            name: sum(f.stat().st_size for f in (scratch / name).rglob("*") if f.is_file())
            for name in ("pipestate", "dcp")
        }
        Path(args.out).write_text(json.dumps({**results, "bytes": nbytes, "disk": sizes}))
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-mb", type=float, default=200.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rank", type=int, default=-1)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--scratch", default="")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if args.rank >= 0:
        rank_main(args)
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scratch = Path(tempfile.mkdtemp(prefix="bench_dtensor_"))
    out = scratch / "result.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        command = [sys.executable, __file__, *sys.argv[1:], "--port", str(port)]
        command += ["--scratch", str(scratch), "--out", str(out)]
        ranks = [subprocess.Popen([*command, "--rank", str(r)], env=env) for r in range(WORLD)]
        if any(p.wait(timeout=1800) != 0 for p in ranks):
            raise SystemExit("a rank failed")
        r = json.loads(out.read_text())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    mb = r["bytes"] / 1e6
    rows = [
        ["save", r["pipestate_save"], r["dcp_save"], r["dcp_save"] / r["pipestate_save"]],
        [
            "restore",
            r["pipestate_restore"],
            r["dcp_restore"],
            r["dcp_restore"] / r["pipestate_restore"],
        ],
    ]
    print(f"FSDP2 model of {mb:.0f} MB over {WORLD} gloo ranks (CPU), best of {args.repeats}")
    print(table(["", "pipestate s", "dcp s", "pipestate speedup"], rows))
    disk = {name: f"{size / 1e6:.1f} MB" for name, size in r["disk"].items()}
    print(f"on disk: pipestate {disk['pipestate']}, dcp {disk['dcp']}")
    path = write_results("dtensor", {"model_mb": mb, "world_size": WORLD, **r})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
