"""Random-access pipeline benchmarks: throughput against plain Python, restore cost, state size.

Run: .venv/bin/python bench/bench_pipeline.py [--quick]

(a) throughput of two pipelines against a plain-Python generator chain doing
    the same work, as a ratio (pipestate / baseline; 1.0 = as fast);
(b) get_state() + set_state() time after 10k vs 1M consumed elements (must not
    grow with position);
(c) the size of the JSON state of a global shuffle over 1M rows (target < 1 KB).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import pipestate as ps
from _common import best_of, table, write_results


def _drain(iterator: Iterator[Any]) -> int:
    count = 0
    for _ in iterator:
        count += 1
    return count


def _baseline_map_batch(n: int) -> Iterator[np.ndarray]:
    def doubled() -> Iterator[int]:
        for x in range(n):
            yield x * 2

    batch: list[int] = []
    for x in doubled():
        batch.append(x)
        if len(batch) == 32:
            yield np.array(batch, dtype=np.int64)
            batch = []
    if batch:
        yield np.array(batch, dtype=np.int64)


def _baseline_shuffle_batch(data: np.ndarray, seed: int) -> Iterator[np.ndarray]:
    order = np.random.default_rng(seed).permutation(len(data))
    for start in range(0, len(data), 64):
        yield data[order[start : start + 64]]


def throughput(quick: bool) -> list[dict[str, Any]]:
    n = 100_000 if quick else 1_000_000
    rows = 10_000 if quick else 100_000
    data = np.random.default_rng(0).standard_normal((rows, 128), dtype=np.float32)
    cases: list[tuple[str, int, Callable[[], Any], Callable[[], Any]]] = [
        (
            f"range({n:,}).map(x*2).batch(32)",
            n,
            lambda: _drain(iter(ps.Dataset.range(n).map(lambda x: x * 2).batch(32))),
            lambda: _drain(_baseline_map_batch(n)),
        ),
        (
            f"from_tensor_slices(float32[{rows:,},128]).global_shuffle().batch(64)",
            rows,
            lambda: _drain(
                iter(ps.Dataset.from_tensor_slices(data).global_shuffle(seed=0).batch(64))
            ),
            lambda: _drain(_baseline_shuffle_batch(data, 0)),
        ),
    ]
    results = []
    for name, elements, ours, baseline in cases:
        t_ours = best_of(ours, 3)
        t_base = best_of(baseline, 3)
        results.append(
            {
                "pipeline": name,
                "pipestate_elements_per_s": elements / t_ours,
                "baseline_elements_per_s": elements / t_base,
                "ratio": t_base / t_ours,
            }
        )
    return results


def restore_cost() -> list[dict[str, Any]]:
    ds = ps.Dataset.from_tensor_slices(np.arange(2_000_000)).global_shuffle(seed=1).batch(1)
    pairs = {}
    for consumed in (10_000, 1_000_000):
        iterator = iter(ds)
        for _ in range(consumed):  # really read them: the state is what a real run has
            next(iterator)
        pairs[consumed] = (iterator, iter(ds))

    def round_trip(consumed: int) -> None:
        saved, restored = pairs[consumed]
        for _ in range(1000):
            restored.set_state(saved.get_state())

    best = dict.fromkeys(pairs, float("inf"))
    for _ in range(5):  # interleaved, so drift in machine speed hits both alike
        for consumed in pairs:
            best[consumed] = min(best[consumed], best_of(lambda c=consumed: round_trip(c), 1))
    return [{"consumed": c, "get_plus_set_us": t / 1000 * 1e6} for c, t in best.items()]


def state_size() -> dict[str, Any]:
    data = np.zeros((1_000_000, 4), np.float32)
    iterator = iter(ps.Dataset.from_tensor_slices(data).global_shuffle().batch(64).repeat())
    for _ in range(1000):
        next(iterator)
    text = json.dumps(iterator.get_state())
    return {
        "pipeline": "1M rows, global_shuffle(seed=None), batch(64), repeat()",
        "state_bytes": len(text),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    start = time.perf_counter()
    tp = throughput(args.quick)
    rc = restore_cost()
    size = state_size()
    print("(a) throughput, ratio = pipestate speed / plain-Python baseline speed")
    print(
        table(
            ["pipeline", "pipestate el/s", "baseline el/s", "ratio"],
            [
                [
                    r["pipeline"],
                    r["pipestate_elements_per_s"],
                    r["baseline_elements_per_s"],
                    r["ratio"],
                ]
                for r in tp
            ],
        )
    )
    print("\n(b) get_state() + set_state() time by position")
    print(
        table(
            ["elements consumed", "get+set (us)"],
            [[r["consumed"], r["get_plus_set_us"]] for r in rc],
        )
    )
    growth = rc[1]["get_plus_set_us"] / rc[0]["get_plus_set_us"]
    print(f"    ratio 1M / 10k: {growth:.2f} (1.0 = independent of position)")
    print(f"\n(c) state size: {size['state_bytes']} bytes for {size['pipeline']} (target < 1024)")
    path = write_results(
        "pipeline",
        {"throughput": tp, "restore": rc, "restore_growth_1m_vs_10k": growth, "state_size": size},
    )
    print(f"\nwrote {path} in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
