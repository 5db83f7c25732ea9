"""Torch model + AdamW checkpoints: pipestate against ``torch.save`` / ``torch.load`` and DCP.

A model of a few large ``nn.Linear`` layers (``--model-mb`` of parameters,
600 MB by default) with its AdamW state (two more tensors per parameter),
in float32 and in bfloat16. Measured in the same run, on the same disk:

* save: ``Checkpoint(model=, optimizer=).write`` against ``torch.save`` of
  both state dicts, and against ``torch.distributed.checkpoint.save`` in one
  process without a process group (its row is skipped, with the reason,
  where this torch refuses that);
* load: ``Checkpoint.restore`` into a fresh model and optimizer against
  ``torch.load`` followed by ``load_state_dict`` (the same end state), with
  ``torch.load`` alone shown too;
* size on disk against ``torch.save``'s file.

No save syncs to disk (``torch.save`` does not): this compares the work each
library does, with the page cache warm for every reader. Ratios > 1 mean
pipestate is faster (or smaller for size).

Run:  python bench/bench_torch_checkpoint.py             (600 MB model, ~1.8 GB per save)
      python bench/bench_torch_checkpoint.py --quick     (24 MB model, seconds)
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from _common import table, write_results
from pipestate.checkpoint import Checkpoint, CheckpointOptions

WIDTH = 4096


def make(model_mb: float, dtype: torch.dtype) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A model of ``model_mb`` MB of float32-sized parameters, and AdamW with its state filled."""
    torch.manual_seed(0)
    per_layer = WIDTH * WIDTH * 4
    layers = max(1, round(model_mb * 1e6 / per_layer))
    model = torch.nn.Sequential(*(torch.nn.Linear(WIDTH, WIDTH) for _ in range(layers))).to(dtype)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for parameter in model.parameters():
        parameter.grad = torch.ones_like(parameter)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model, optimizer


def timed(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def size_of(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        total += (
            sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            if path.is_dir()
            else path.stat().st_size
        )
    return total


def dcp_save(state: dict[str, Any], directory: Path) -> Callable[[], object] | str:
    """A DCP save in this process without a process group, or why there is none."""
    try:
        import torch.distributed.checkpoint as dcp
    except ImportError as err:
        return f"torch.distributed.checkpoint is not importable: {err}"

    def save() -> None:
        shutil.rmtree(directory, ignore_errors=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dcp.save(state, checkpoint_id=str(directory))

    try:
        save()
    except Exception as err:
        return f"dcp.save without a process group failed: {type(err).__name__}: {err}"
    return save


def run(model_mb: float, dtype: torch.dtype, scratch: Path, repeats: int) -> dict[str, Any]:
    model, optimizer = make(model_mb, dtype)
    state_bytes = sum(t.nbytes for t in model.state_dict().values())
    state_bytes += sum(
        t.nbytes for s in optimizer.state_dict()["state"].values() for t in s.values()
    )
    ckpt = Checkpoint(model=model, optimizer=optimizer)
    prefix = scratch / "ps" / "ckpt"
    options = CheckpointOptions(fsync=False)
    pt = scratch / "model.pt"
    both = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}

    ours_save = timed(lambda: ckpt.write(str(prefix), options=options), repeats)
    torch_save = timed(lambda: torch.save(both, pt), repeats)
    dcp = dcp_save(both, scratch / "dcp")
    dcp_seconds = timed(dcp, repeats) if callable(dcp) else None

    fresh_model, fresh_optimizer = make(min(model_mb, model_mb), dtype)
    target = Checkpoint(model=fresh_model, optimizer=fresh_optimizer)
    ours_load = timed(lambda: target.read(str(prefix)).assert_consumed(), repeats)

    def torch_load_into() -> None:
        loaded = torch.load(pt, weights_only=True)
        fresh_model.load_state_dict(loaded["model"])
        fresh_optimizer.load_state_dict(loaded["optimizer"])

    torch_load_only = timed(lambda: torch.load(pt, weights_only=True), repeats)
    torch_load = timed(torch_load_into, repeats)
    for a, b in zip(model.state_dict().values(), fresh_model.state_dict().values()):
        assert torch.equal(a.view(torch.uint8), b.view(torch.uint8))

    ours_size = size_of([p for p in prefix.parent.iterdir() if p.name.startswith("ckpt")])
    torch_size = pt.stat().st_size
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "state_mb": state_bytes / 1e6,
        "save_s": {"pipestate": ours_save, "torch.save": torch_save, "dcp.save": dcp_seconds},
        "dcp_skipped": None if callable(dcp) else dcp,
        "load_s": {
            "pipestate": ours_load,
            "torch.load+load_state_dict": torch_load,
            "torch.load": torch_load_only,
        },
        "size_bytes": {"pipestate": ours_size, "torch.save": torch_size},
        "save_speedup_vs_torch_save": torch_save / ours_save,
        "save_speedup_vs_dcp": dcp_seconds / ours_save if dcp_seconds else None,
        "load_speedup_vs_torch_load_into": torch_load / ours_load,
        "load_speedup_vs_torch_load": torch_load_only / ours_load,
        "size_ratio_vs_torch_save": ours_size / torch_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-mb", type=float, default=600.0, help="float32 parameter MB")
    parser.add_argument("--quick", action="store_true", help="a 24 MB model, for a smoke run")
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per measure (best kept)")
    args = parser.parse_args()
    model_mb = 24.0 if args.quick else args.model_mb
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = []
    for dtype in (torch.float32, torch.bfloat16):
        scratch = Path(tempfile.mkdtemp(prefix="bench-torch-ckpt-", dir=args.dir))
        try:
            results.append(run(model_mb, dtype, scratch, args.repeats))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    rows = []
    for r in results:
        save, load = r["save_s"], r["load_s"]
        rows.append(
            [
                r["dtype"],
                f"{r['state_mb']:.0f}",
                f"{save['pipestate']:.2f}",
                f"{save['torch.save']:.2f}",
                f"{save['dcp.save']:.2f}" if save["dcp.save"] else "skipped",
                f"{r['save_speedup_vs_torch_save']:.2f}x",
                f"{r['save_speedup_vs_dcp']:.2f}x" if r["save_speedup_vs_dcp"] else "-",
                f"{load['pipestate']:.2f}",
                f"{load['torch.load+load_state_dict']:.2f}",
                f"{load['torch.load']:.2f}",
                f"{r['load_speedup_vs_torch_load_into']:.2f}x",
                f"{r['load_speedup_vs_torch_load']:.2f}x",
                f"{r['size_ratio_vs_torch_save']:.4f}",
            ]
        )
    headers = [
        "dtype",
        "state MB",
        "save ps s",
        "torch.save s",
        "dcp.save s",
        "save vs torch",
        "save vs dcp",
        "load ps s",
        "load+lsd s",
        "torch.load s",
        "load vs load+lsd",
        "load vs torch.load",
        "size ratio",
    ]
    print(table(headers, rows))
    for r in results:
        if r["dcp_skipped"]:
            print(f"dcp.save ({r['dtype']}) skipped: {r['dcp_skipped']}")
    print(f"results: {write_results('torch_checkpoint', {'runs': results})}")


if __name__ == "__main__":
    main()
