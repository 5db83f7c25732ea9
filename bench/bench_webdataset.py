"""WebDataset tar shards and indexed record files, against baselines measured in the same run.

Run: .venv/bin/python bench/bench_webdataset.py [--quick]

(a) Throughput of ``Dataset.from_webdataset`` against the ``webdataset``
    package (``webdataset.WebDataset(urls, shardshuffle=False)``) reading the
    same local shards, samples of a 10 KB ``jpg`` and a small ``cls`` field
    (goal: ratio >= 0.8).
(b) Restore cost: ``set_state`` + the first sample, restored in the middle of
    the 10th shard against restored at the very start (goal: ratio <= 1.5).
(c) ``RecordDataset`` over indexed files: a ``global_shuffle``d pass against
    a sequential pass over the same index, and against the streaming reader
    (``use_index=False``).
(d) ``from_webdataset`` over the shards of (a) with shard indexes: a
    ``global_shuffle``d pass and an in-order pass by index, against the
    streaming reader.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import pipestate as ps
from _common import best_of, table, write_results


def _shards(directory: Path, shards: int, per_shard: int) -> list[str]:
    """Tar shards of samples ``<key>.jpg`` (10 KB) and ``<key>.cls``, as webdataset writes them."""
    rng = np.random.default_rng(0)
    urls = []
    for s in range(shards):
        path = str(directory / f"shard-{s:04d}.tar")
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
            for i in range(per_shard):
                for field, data in (("jpg", rng.bytes(10_000)), ("cls", b"%d" % (i % 10))):
                    info = tarfile.TarInfo(f"{s:04d}/{i:05d}.{field}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        urls.append(path)
    return urls


def _throughput(urls: list[str], repeats: int) -> dict[str, Any]:
    import webdataset

    count = sum(1 for _ in ps.Dataset.from_webdataset(urls))
    ours = best_of(lambda: sum(1 for _ in ps.Dataset.from_webdataset(urls)), repeats)
    theirs = best_of(
        lambda: sum(1 for _ in webdataset.WebDataset(urls, shardshuffle=False)), repeats
    )
    return {
        "samples": count,
        "pipestate_samples_per_s": count / ours,
        "webdataset_samples_per_s": count / theirs,
        "ratio": theirs / ours,
    }


def _restore(urls: list[str], per_shard: int, repeats: int) -> dict[str, Any]:
    ds = ps.Dataset.from_webdataset(urls)
    start_state = iter(ds).get_state()
    it = iter(ds)
    for _ in range(9 * per_shard + per_shard // 2):  # the middle of the 10th shard
        next(it)
    middle_state = it.get_state()
    expected = next(it)

    def restore(state: dict[str, Any]) -> Any:
        fresh = iter(ds)
        fresh.set_state(state)
        element = next(fresh)
        fresh.close()
        return element

    assert bytes(restore(middle_state)["__key__"]) == bytes(expected["__key__"])
    at_start = best_of(lambda: restore(start_state), repeats)
    in_middle = best_of(lambda: restore(middle_state), repeats)
    return {
        "restore_at_start_ms": at_start * 1e3,
        "restore_mid_10th_shard_ms": in_middle * 1e3,
        "ratio": in_middle / at_start,
    }


def _records(directory: Path, count: int, repeats: int) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    files = []
    for f in range(4):
        path = str(directory / f"r-{f}.tfrecord")
        with ps.data.RecordWriter(path) as writer:
            for _ in range(count // 4):
                writer.write(rng.bytes(100))
        files.append(path)
    indexed = ps.data.RecordDataset(files)
    streaming = ps.data.RecordDataset(files, use_index=False)
    assert len(indexed) == count

    def drain(ds: ps.Dataset) -> int:
        return sum(1 for _ in ds)

    sequential = best_of(lambda: drain(indexed), repeats)
    shuffled = best_of(lambda: drain(indexed.global_shuffle(seed=0)), repeats)
    streamed = best_of(lambda: drain(streaming), repeats)
    return {
        "records": count,
        "sequential_records_per_s": count / sequential,
        "shuffled_records_per_s": count / shuffled,
        "streaming_records_per_s": count / streamed,
        "ratio_shuffled_to_sequential": sequential / shuffled,
        "ratio_indexed_to_streaming": streamed / sequential,
    }


def _indexed_shards(urls: list[str], repeats: int) -> dict[str, Any]:
    for url in urls:
        ps.data.write_webdataset_index(url)
    indexed = ps.Dataset.from_webdataset(urls)
    streaming = ps.Dataset.from_webdataset(urls, use_index=False)
    count = len(indexed)

    def drain(ds: ps.Dataset) -> int:
        return sum(1 for _ in ds)

    streamed = best_of(lambda: drain(streaming), repeats)
    in_order = best_of(lambda: drain(indexed), repeats)
    shuffled = best_of(lambda: drain(indexed.global_shuffle(seed=0)), repeats)
    return {
        "samples": count,
        "streaming_samples_per_s": count / streamed,
        "indexed_samples_per_s": count / in_order,
        "shuffled_samples_per_s": count / shuffled,
        "ratio_indexed_to_streaming": streamed / in_order,
        "ratio_shuffled_to_streaming": streamed / shuffled,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    args = parser.parse_args()
    shards, per_shard, records = (12, 40, 20_000) if args.quick else (24, 200, 200_000)
    repeats = 1 if args.quick else 3
    scratch = Path(tempfile.mkdtemp(prefix="pipestate-bench-"))
    try:
        started = time.perf_counter()
        urls = _shards(scratch, shards, per_shard)
        results = {
            "throughput": _throughput(urls, repeats),
            "restore": _restore(urls, per_shard, 20 if args.quick else 200),
            "records": _records(scratch, records, repeats),
            "indexed_shards": _indexed_shards(urls, repeats),
        }
        elapsed = time.perf_counter() - started
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    t, r, c = results["throughput"], results["restore"], results["records"]
    print(f"(a) {t['samples']} samples in {shards} shards of {per_shard}, 10 KB each")
    print(
        table(
            ["reader", "samples/s", "ratio to webdataset"],
            [
                ["pipestate from_webdataset", t["pipestate_samples_per_s"], t["ratio"]],
                ["webdataset.WebDataset", t["webdataset_samples_per_s"], 1.0],
            ],
        )
    )
    print("\n(b) restore: set_state + first sample")
    print(
        table(
            ["restored at", "ms", "ratio to start"],
            [
                ["start of the first shard", r["restore_at_start_ms"], 1.0],
                ["middle of the 10th shard", r["restore_mid_10th_shard_ms"], r["ratio"]],
            ],
        )
    )
    print(f"\n(c) {c['records']} records of 100 bytes in 4 indexed files")
    print(
        table(
            ["read", "records/s", "ratio to sequential"],
            [
                ["indexed, sequential", c["sequential_records_per_s"], 1.0],
                [
                    "indexed, global_shuffle",
                    c["shuffled_records_per_s"],
                    c["ratio_shuffled_to_sequential"],
                ],
                [
                    "streaming (use_index=False)",
                    c["streaming_records_per_s"],
                    1 / c["ratio_indexed_to_streaming"],
                ],
            ],
        )
    )
    d = results["indexed_shards"]
    print(f"\n(d) the shards of (a) with shard indexes: {d['samples']} samples")
    print(
        table(
            ["read", "samples/s", "ratio to streaming"],
            [
                ["streaming (use_index=False)", d["streaming_samples_per_s"], 1.0],
                ["indexed, in order", d["indexed_samples_per_s"], d["ratio_indexed_to_streaming"]],
                [
                    "indexed, global_shuffle",
                    d["shuffled_samples_per_s"],
                    d["ratio_shuffled_to_streaming"],
                ],
            ],
        )
    )
    print(f"\ntotal {elapsed:.1f} s; results: {write_results('webdataset', results)}")


if __name__ == "__main__":
    main()
