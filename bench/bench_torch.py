"""pipestate.torch.DataLoader against torchdata's StatefulDataLoader: start-up and throughput.

Run: .venv/bin/python bench/bench_torch.py [--quick]

(a) start-up with num_workers=2, in a fresh process that imports torch:
    ``iter()`` + the first batch, and ``load_state_dict()`` of a mid-epoch
    state + ``iter()`` + the first batch (median of several loaders made one
    after the other). Ratio = pipestate time / StatefulDataLoader time
    (goal: <= 0.5).
(b) throughput, samples/s over one epoch after the first batch, at
    num_workers=0 and 2, for a cheap ``__getitem__`` and one spending ~200 us
    of Python per sample. Ratio = pipestate speed / StatefulDataLoader speed
    (goal: >= 1.0).

Both loaders use their default start method. The StatefulDataLoader rows
are skipped when torchdata is not installed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
import pipestate.torch as pt
from _common import table, write_results

try:
    from torchdata.stateful_dataloader import StatefulDataLoader
except ImportError:  # the peer rows are skipped
    StatefulDataLoader = None

BATCH = 32


class Cheap(torch.utils.data.Dataset):  # type: ignore[misc]
    """A row of a tensor and its label: collation dominates."""

    def __init__(self, length: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(length, 64, generator=generator)
        self.y = torch.arange(length)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        return self.x[index], self.y[index]


class Costly(Cheap):
    """``Cheap`` plus ~200 us of Python per sample (a decode or an augmentation).

    The work is counted in CPU time, so a process the scheduler pauses (the
    machine is shared) does the same work as one it doesn't.
    """

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        deadline = time.thread_time() + 200e-6
        while time.thread_time() < deadline:
            pass
        return self.x[index], self.y[index]


def _make(kind: str, dataset: Any, workers: int) -> Any:
    loader_class = pt.DataLoader if kind == "pipestate" else StatefulDataLoader
    return loader_class(dataset, batch_size=BATCH, shuffle=True, num_workers=workers)


def _kinds() -> list[str]:
    return ["pipestate", "stateful"] if StatefulDataLoader is not None else ["pipestate"]


# ------------------------------------------------------------------ start-up
def startup_child(trials: int) -> dict[str, dict[str, float]]:
    """In a fresh process (run by ``startup``): median start-up times per loader."""
    dataset = Cheap(4096)
    results: dict[str, dict[str, list[float]]] = {
        kind: {"iter": [], "resume": []} for kind in _kinds()
    }
    states = {}
    for kind in _kinds():  # a mid-epoch state of each loader to resume from
        loader = _make(kind, dataset, 2)
        it = iter(loader)
        for _ in range(20):
            next(it)
        states[kind] = loader.state_dict()
        del it, loader
    for _ in range(trials):
        for kind in _kinds():  # interleaved, so both see the same machine
            loader = _make(kind, dataset, 2)
            began = time.perf_counter()
            next(iter(loader))
            results[kind]["iter"].append(time.perf_counter() - began)
            del loader
            loader = _make(kind, dataset, 2)
            began = time.perf_counter()
            loader.load_state_dict(states[kind])
            next(iter(loader))
            results[kind]["resume"].append(time.perf_counter() - began)
            del loader
    return {
        kind: {what: statistics.median(times) for what, times in found.items()}
        for kind, found in results.items()
    }


def startup(trials: int) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, __file__, "--startup-child", str(trials)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    rows = []
    for what in ("iter", "resume"):
        row: dict[str, Any] = {"case": what, "pipestate_s": found["pipestate"][what]}
        if "stateful" in found:
            row["stateful_s"] = found["stateful"][what]
            row["ratio"] = row["pipestate_s"] / row["stateful_s"]
        rows.append(row)
    return rows


# ---------------------------------------------------------------- throughput
def _epoch_rate(loader: Any) -> float:
    """Samples per second over one epoch, after its first batch."""
    it = iter(loader)
    next(it)
    began = time.perf_counter()
    samples = sum(len(batch[1]) for batch in it)
    return samples / (time.perf_counter() - began)


def throughput(quick: bool) -> list[dict[str, Any]]:
    cases = {
        "cheap": Cheap(8192 if quick else 32768),
        "200us": Costly(640 if quick else 2560),
    }
    rows = []
    for name, dataset in cases.items():
        for workers in (0, 2):
            best: dict[str, float] = {}
            for _ in range(2 if quick else 3):
                for kind in _kinds():  # interleaved; the best of the trials
                    loader = _make(kind, dataset, workers)
                    best[kind] = max(best.get(kind, 0.0), _epoch_rate(loader))
                    del loader
            row: dict[str, Any] = {
                "case": name,
                "num_workers": workers,
                "pipestate_per_s": best["pipestate"],
            }
            if "stateful" in best:
                row["stateful_per_s"] = best["stateful"]
                row["ratio"] = best["pipestate"] / best["stateful"]
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--startup-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # torchdata's import-time notices
    if args.startup_child:
        print(json.dumps(startup_child(args.startup_child)))
        return
    if StatefulDataLoader is None:
        print("torchdata is not installed: the StatefulDataLoader rows are skipped")
    started = startup(3 if args.quick else 7)
    print("(a) start-up, num_workers=2, seconds (median); ratio = pipestate / StatefulDataLoader")
    print(
        table(
            ["case", "pipestate s", "StatefulDataLoader s", "ratio"],
            [
                [r["case"], r["pipestate_s"], r.get("stateful_s", "-"), r.get("ratio", "-")]
                for r in started
            ],
        )
    )
    rates = throughput(args.quick)
    print("\n(b) throughput, samples/s; ratio = pipestate / StatefulDataLoader")
    print(
        table(
            ["__getitem__", "num_workers", "pipestate", "StatefulDataLoader", "ratio"],
            [
                [
                    r["case"],
                    r["num_workers"],
                    r["pipestate_per_s"],
                    r.get("stateful_per_s", "-"),
                    r.get("ratio", "-"),
                ]
                for r in rates
            ],
        )
    )
    path = write_results("bench_torch", {"startup": started, "throughput": rates})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
