"""The cost of profiling: off (a pipeline that was never, or was once, profiled) and on.

Run: .venv/bin/python bench/bench_profile.py [ELEMENTS]

Each pipeline is drained four ways, alternately, best of 5 (CPU time of the
process): ``iter(ds)`` (the baseline), ``iter(ds)`` after ``ds.profile()``
ran on the same dataset (profiling must leave nothing behind: "off"),
``ps.data.profiled(ds)`` ("on") and ``ps.data.profiled(ds, sampling=False)``
("exact": every call timed). The ratios are over the baseline; targets:
off <= 1.05, on <= 1.30 on every pipeline here, including P3, whose
streaming ops cost well under a microsecond per element (less than timing a
call): they are timed on a sample of their calls (the default), and what is
left is the per-call check of whether to time (~0.1 µs per call).

  P1  range -> map(x*2) -> batch(32)                           random access
  P3  range -> map(py fn) -> filter(even) -> shuffle(1000) -> batch(32)   streaming
  P4  range -> map(normalise 128 float64) -> batch(32)           random access
  P5  P4 with filter(even) before the batch                     streaming
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import pipestate as ps
from _common import table, write_results
from bench_parallel import _drain, is_even, py_fn


def normalise(x: Any) -> np.ndarray:
    """About 10 µs of NumPy work: a typical per-example feature transform."""
    a = np.arange(128, dtype=np.float64) + float(x)
    return ((a - a.mean()) / (a.std() + 1e-6)).astype(np.float32)


def _cpu(fn: Callable[[], Any]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def _plain(ds: ps.Dataset) -> float:
    return _cpu(lambda: _drain(iter(ds)))


def _on(ds: ps.Dataset) -> float:
    return _cpu(lambda: _drain(ps.data.profiled(ds)))


def _exact(ds: ps.Dataset) -> float:
    return _cpu(lambda: _drain(ps.data.profiled(ds, sampling=False)))


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    pipelines = {
        "P1": ps.Dataset.range(n).map(lambda x: x * 2).batch(32),
        "P3": ps.Dataset.range(n).map(py_fn).filter(is_even).shuffle(1000, seed=0).batch(32),
        "P4": ps.Dataset.range(n // 4).map(normalise).batch(32),
        "P5": ps.Dataset.range(n // 4).filter(is_even).map(normalise).batch(32),
    }
    rows = []
    results: dict[str, Any] = {}
    for name, ds in pipelines.items():
        ds.profile(1000)  # profiling once must leave the dataset as it was
        best = dict.fromkeys(("plain", "off", "on", "exact"), float("inf"))
        for _ in range(5):
            best["plain"] = min(best["plain"], _plain(ds))
            best["off"] = min(best["off"], _plain(ds))
            best["on"] = min(best["on"], _on(ds))
            best["exact"] = min(best["exact"], _exact(ds))
        off, on, exact = (best[key] / best["plain"] for key in ("off", "on", "exact"))
        rows.append([name, best["plain"] * 1e3, off, on, exact])
        results[name] = {
            "plain_seconds": best["plain"],
            "off_ratio": off,
            "on_ratio": on,
            "exact_ratio": exact,
        }
    head = ["pipeline", "plain ms (baseline)", "off / plain", "on / plain", "exact / plain"]
    print(table(head, rows))
    write_results("bench_profile", {"elements": n, "pipelines": results})


if __name__ == "__main__":
    main()
