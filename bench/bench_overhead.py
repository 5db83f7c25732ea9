"""Per-element overhead of P1 and P3 against plain-Python generator chains, in CPU time.

Run: .venv/bin/python bench/bench_overhead.py [ELEMENTS]

P1 ``range → map(x*2) → batch(32)``, P3 ``range → map(py fn) → filter(even) →
shuffle(1000) → batch(32)`` with and without ``prefetch(2)``; each is timed
alternately with the generator chain of ``bench_parallel.py`` doing the same
work (best of 5, CPU time of the process), and the ratio is the chain's time
over pipestate's (1.0 = as fast).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import pipestate as ps
from _common import table
from bench_parallel import _drain, base_p1, base_p3, is_even, py_fn


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    p1 = ps.Dataset.range(n).map(lambda x: x * 2).batch(32)
    p3 = ps.Dataset.range(n).map(py_fn).filter(is_even).shuffle(1000, seed=0).batch(32)
    cases: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "P1": (lambda: _drain(iter(p1)), lambda: _drain(base_p1(n))),
        "P3": (lambda: _drain(iter(p3)), lambda: _drain(base_p3(n))),
        "P3 + prefetch(2)": (lambda: _drain(iter(p3.prefetch(2))), lambda: _drain(base_p3(n))),
    }
    rows = []
    for name, (ours, baseline) in cases.items():
        best_ours = best_base = float("inf")
        for _ in range(5):
            start = time.process_time()
            ours()
            best_ours = min(best_ours, time.process_time() - start)
            start = time.process_time()
            baseline()
            best_base = min(best_base, time.process_time() - start)
        rows.append([name, best_ours * 1e9 / n, best_base * 1e9 / n, best_base / best_ours])
    print(table(["pipeline", "pipestate ns/element", "baseline ns/element", "ratio"], rows))


if __name__ == "__main__":
    main()
