"""Fixed-length records, parallel reads, parallel batch and random values, against same-run
baselines.

Run: .venv/bin/python bench/bench_readers.py [--quick]

(a) ``FixedLengthRecordDataset`` over local files: reading every record, against a plain
    Python loop reading the same files in 1 MiB blocks and slicing records (target:
    ratio >= 0.4: one Python ``np.bytes_`` per record either way; the rest is the iterator's
    per-element protocol); restoring at the last
    record, against reading the files to it (the cost a replaying loader pays);
(b) ``TextLineDataset(num_parallel_reads=4)``, against the same interleave of the files
    read in the consumer's thread (``from_tensor_slices(files).interleave(TextLineDataset,
    4, 1)``), identical elements (target: ratio >= 0.8 on a shared 2-core machine; the
    read-ahead threads pay off where a file's reads wait, on remote storage);
(c) ``batch(32, num_parallel_calls=AUTOTUNE)`` after a NumPy-heavy ``map`` (about 100 µs an
    element, releasing the GIL), against the same ``batch`` without threads;
(d) ``Dataset.random(seed)`` read in batches of 256, against NumPy's Philox drawing the same
    number of values (target: ratio >= 0.3).

Every figure is a ratio within one run: ``baseline time / pipestate time`` (above 1 is
faster than the baseline).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import pipestate as ps
from _common import table, write_results

RECORD = 64
HEADER = 16


def best(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def drain(iterable: Any) -> int:
    count = 0
    for _ in iterable:
        count += 1
    return count


def write_record_files(directory: Path, files: int, records: int) -> list[str]:
    rng = np.random.default_rng(0)
    names = []
    for f in range(files):
        path = directory / f"records-{f}.bin"
        body = rng.integers(0, 256, records * RECORD, dtype=np.uint8).tobytes()
        path.write_bytes(b"H" * HEADER + body)
        names.append(str(path))
    return names


def plain_records(names: list[str]) -> int:
    count = 0
    for name in names:
        with open(name, "rb") as f:
            f.seek(HEADER)
            while True:
                block = f.read((1 << 20) // RECORD * RECORD)
                if not block:
                    break
                for k in range(0, len(block), RECORD):
                    np.bytes_(block[k : k + RECORD])
                    count += 1
    return count


def case_records(directory: Path, quick: bool) -> list[list[Any]]:
    records = 20_000 if quick else 200_000
    names = write_record_files(directory, 3, records)
    ds = ps.data.FixedLengthRecordDataset(names, RECORD, HEADER)
    total = len(ds)
    repeats = 3 if quick else 5
    pipestate_s = best(lambda: drain(ds), repeats)
    plain_s = best(lambda: plain_records(names), repeats)

    state = iter(ds).get_state()
    state["iterator"]["index"] = total - 1

    def restore() -> None:
        it = iter(ds)
        it.set_state(state)
        next(it)

    def replay() -> None:
        it = iter(ds)
        for _ in range(total):
            next(it)

    restore_s = best(restore, repeats)
    replay_s = best(replay, 1)
    return [
        ["(a) read all records", total, plain_s, pipestate_s, plain_s / pipestate_s],
        ["(a) restore at the last record", total, replay_s, restore_s, replay_s / restore_s],
    ]


def case_parallel_reads(directory: Path, quick: bool) -> list[list[Any]]:
    lines = 5_000 if quick else 50_000
    names = []
    for f in range(8):
        path = directory / f"lines-{f}.txt"
        path.write_text("".join(f"file {f} line {i} " + "x" * 40 + "\n" for i in range(lines)))
        names.append(str(path))
    parallel = ps.data.TextLineDataset(names, num_parallel_reads=4)
    sequential = ps.Dataset.from_tensor_slices(names).interleave(
        ps.data.TextLineDataset, cycle_length=4, block_length=1
    )
    assert drain(parallel) == drain(sequential) == 8 * lines
    repeats = 3 if quick else 5
    base_s = best(lambda: drain(sequential), repeats)
    parallel_s = best(lambda: drain(parallel), repeats)
    return [
        ["(b) text lines, num_parallel_reads=4", 8 * lines, base_s, parallel_s, base_s / parallel_s]
    ]


def heavy(x: Any) -> np.ndarray:
    a = np.arange(6000, dtype=np.float64) * (float(x) + 1.0)
    return np.sort(np.sin(a))[:8]


def case_parallel_batch(quick: bool) -> list[list[Any]]:
    n = 2_000 if quick else 20_000
    sequential = ps.Dataset.range(n).map(heavy).batch(32)
    parallel = ps.Dataset.range(n).map(heavy).batch(32, num_parallel_calls=ps.data.AUTOTUNE)
    repeats = 3 if quick else 5
    base_s = best(lambda: drain(sequential), repeats)
    parallel_s = best(lambda: drain(parallel), repeats)
    return [["(c) batch, num_parallel_calls=AUTOTUNE", n, base_s, parallel_s, base_s / parallel_s]]


def case_random(quick: bool) -> list[list[Any]]:
    n = 256 * (200 if quick else 2_000)
    ds = ps.Dataset.random(seed=1).take(n).batch(256)

    def numpy_philox() -> None:
        generator = np.random.Generator(np.random.Philox(key=1))
        for _ in range(n // 256):
            generator.integers(0, 2**32, 256, dtype=np.int64)

    repeats = 3 if quick else 5
    base_s = best(numpy_philox, repeats)
    pipestate_s = best(lambda: drain(ds), repeats)
    return [["(d) Dataset.random, batches of 256", n, base_s, pipestate_s, base_s / pipestate_s]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, fewer repeats")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        rows = case_records(directory, args.quick)
        rows += case_parallel_reads(directory, args.quick)
    rows += case_parallel_batch(args.quick)
    rows += case_random(args.quick)
    print(table(["case", "elements", "baseline s", "pipestate s", "ratio"], rows))
    path = write_results(
        "bench_readers",
        {
            "quick": args.quick,
            "rows": [
                {
                    "case": r[0],
                    "elements": r[1],
                    "baseline_s": r[2],
                    "pipestate_s": r[3],
                    "ratio": r[4],
                }
                for r in rows
            ],
        },
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
