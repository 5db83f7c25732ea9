"""Materialised elements: ``cache``'s second epoch vs its first, ``Dataset.load`` vs NumPy.

Run: .venv/bin/python bench/bench_cache.py [--quick]

(a) ``range(n).map(costly).cache(...)`` over two epochs, with a memory cache
and a file cache (a local temporary directory): the first epoch computes the
costly map and fills the cache, the second reads the cache. Reported: an
epoch of the same pipeline without the cache (the baseline), the seconds of
each epoch, what filling costs (first epoch / uncached) and how many times
faster the cached epoch is (first epoch / second epoch), all in one run.

(b) ``Dataset.load`` of ``n`` float32[256] rows saved with ``Dataset.save``,
read in order, against a plain NumPy reader of the same rows (``np.load`` of
one ``.npy`` file, then a copy of each row): elements per second and the
ratio (pipestate / NumPy; 1.0 = as fast). Also ``load`` read through
``global_shuffle``, against the NumPy reader gathering rows in a random order.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import pipestate as ps
from _common import best_of, table, write_results

ROW = 256


def costly(x: Any) -> np.ndarray:
    """About 50 µs of NumPy work per element (a stand-in for decoding or augmenting)."""
    v = np.linspace(0.0, 1.0, 128, dtype=np.float32) + np.float32(x)
    out = v
    for _ in range(8):
        out = np.tanh(np.outer(out, v)[0])
    return out.astype(np.float32)


def _epochs(ds: ps.Dataset) -> tuple[float, float]:
    it = iter(ds)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        for _ in range(len(ds) // 2):
            next(it)
        times.append(time.perf_counter() - start)
    return times[0], times[1]


def bench_cache(n: int, scratch: Path) -> list[dict[str, Any]]:
    uncached, _ = _epochs(ps.Dataset.range(n).map(costly).repeat(2))
    rows = []
    for kind in ("memory", "file"):
        filename = "" if kind == "memory" else str(scratch / "cache")
        ds = ps.Dataset.range(n).map(costly).cache(filename).repeat(2)
        first, second = _epochs(ds)
        rows.append(
            {
                "cache": kind,
                "uncached_s": uncached,
                "first_s": first,
                "second_s": second,
                "fill_overhead": first / uncached,
                "speedup": first / second,
            }
        )
    return rows


def bench_load(n: int, scratch: Path) -> list[dict[str, Any]]:
    data = np.random.default_rng(0).random((n, ROW), dtype=np.float32)
    saved = scratch / "saved"
    ps.Dataset.from_tensor_slices(data).save(str(saved))
    npy = scratch / "rows.npy"
    np.save(npy, data)
    order = np.random.default_rng(1).permutation(n)

    def numpy_in_order() -> int:
        rows = np.load(npy)
        return sum(1 for i in range(n) if rows[i].copy() is not None)

    def numpy_shuffled() -> int:
        rows = np.load(npy)
        return sum(1 for i in order if rows[i].copy() is not None)

    def load_in_order() -> int:
        return sum(1 for _ in ps.Dataset.load(str(saved)))

    def load_shuffled() -> int:
        return sum(1 for _ in ps.Dataset.load(str(saved)).global_shuffle(seed=1))

    results = []
    for name, ours, baseline in (
        ("in order", load_in_order, numpy_in_order),
        ("global_shuffle", load_shuffled, numpy_shuffled),
    ):
        ours_s = best_of(ours, 3)
        base_s = best_of(baseline, 3)
        results.append(
            {
                "read": name,
                "load_el_s": n / ours_s,
                "numpy_el_s": n / base_s,
                "ratio": base_s / ours_s,
            }
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    args = parser.parse_args()
    n_cache, n_load = (400, 2_000) if args.quick else (4_000, 50_000)
    with tempfile.TemporaryDirectory() as directory:
        scratch = Path(directory)
        cache_rows = bench_cache(n_cache, scratch)
        load_rows = bench_load(n_load, scratch)
    print(f"(a) range({n_cache}).map(costly).cache(...): first epoch (fills) vs second (reads)")
    print(
        table(
            ["cache", "uncached s", "first epoch s", "fill / uncached", "second s", "speedup"],
            [
                [
                    r["cache"],
                    r["uncached_s"],
                    r["first_s"],
                    r["fill_overhead"],
                    r["second_s"],
                    r["speedup"],
                ]
                for r in cache_rows
            ],
        )
    )
    print(f"\n(b) Dataset.load of {n_load} float32[{ROW}] rows vs np.load + rows")
    print(
        table(
            ["read", "load el/s", "numpy el/s", "ratio"],
            [[r["read"], r["load_el_s"], r["numpy_el_s"], r["ratio"]] for r in load_rows],
        )
    )
    path = write_results(
        "bench_cache", {"quick": args.quick, "cache": cache_rows, "load": load_rows}
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
