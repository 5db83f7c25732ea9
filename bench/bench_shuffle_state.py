"""Buffer-shuffle checkpoint size and cost against the bytes of the buffered data.

Run: .venv/bin/python bench/bench_shuffle_state.py [--quick]

``shuffle(buffer_size)`` over rows of float32[128], read far enough that the
buffer is full, then saved with ``pipestate.Checkpoint`` to a real directory:

- random-access input (``from_tensor_slices(rows).shuffle(n)``): the buffer is
  saved as the input indices of its elements;
- streaming input (``...filter(...).shuffle(n)``): the buffer is saved as the
  elements themselves, stacked into one array per leaf.

Reported: the checkpoint's bytes on disk, the bytes of the buffered elements
(the baseline: what saving the buffer's data costs), their ratio, and the
save and restore times.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import pipestate as ps
from _common import table, write_results

ROW = 128


def _keep(row: np.ndarray) -> bool:
    return bool(row[0] >= -1e30)  # keeps every row, but makes the input streaming


def _measure(kind: str, buffer_size: int, rows: np.ndarray, scratch: Path) -> dict[str, Any]:
    ds = ps.Dataset.from_tensor_slices(rows)
    if kind == "streaming":
        ds = ds.filter(_keep)
    ds = ds.shuffle(buffer_size, seed=1)
    it = iter(ds)
    for _ in range(10):
        next(it)
    directory = scratch / f"{kind}-{buffer_size}"
    start = time.perf_counter()
    path = ps.Checkpoint(iterator=it).write(str(directory / "ckpt"))
    save_s = time.perf_counter() - start
    on_disk = sum(f.stat().st_size for f in directory.iterdir())
    fresh = iter(ds)
    start = time.perf_counter()
    ps.Checkpoint(iterator=fresh).read(path).assert_consumed()
    restore_s = time.perf_counter() - start
    expected = [next(it) for _ in range(20)]
    assert all(np.array_equal(next(fresh), e) for e in expected), "restore diverged"
    data_bytes = buffer_size * ROW * 4
    return {
        "input": kind,
        "buffer_size": buffer_size,
        "checkpoint_bytes": on_disk,
        "buffered_data_bytes": data_bytes,
        "ratio": on_disk / data_bytes,
        "save_ms": save_s * 1e3,
        "restore_ms": restore_s * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="buffers of 1k and 10k only")
    args = parser.parse_args()
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    rows = np.random.default_rng(0).standard_normal((max(sizes) + 100, ROW)).astype(np.float32)
    scratch = Path(tempfile.mkdtemp(prefix="pipestate-bench-"))
    try:
        results = [
            _measure(kind, size, rows, scratch)
            for kind in ("random-access", "streaming")
            for size in sizes
        ]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    headers = list(results[0])
    print(table(headers, [[r[h] for h in headers] for r in results]))
    print(f"results: {write_results('shuffle_state', {'results': results})}")


if __name__ == "__main__":
    main()
