"""``bucket_by_sequence_length`` throughput against a plain-Python bucketing generator.

Run: .venv/bin/python bench/bench_bucketing.py [--quick]

The input is token sequences (int32, lengths 1 to 200, drawn once) held in a
list; both sides read them one by one, compute each length, put the sequence
in its bucket (boundaries 25, 50, 100, 150) and, when a bucket holds its batch
size (64, 32, 16, 8, 8), pad the bucket to its longest sequence with NumPy and
output the batch; at the end the partial buckets are output smallest first.

- baseline: a Python generator doing exactly that (a dict of lists,
  ``np.zeros`` and slice assignment per batch), with no checkpointing at all;
- pipestate: sequences of different lengths can't be one array for
  ``from_tensor_slices``, so they come from a ``map`` over ``range`` that looks
  them up; ``bucket_by_sequence_length(len, ...)`` then buckets and pads, with
  its iterator able to save its state at any element.

Reported: input elements per second of each, and pipestate's fraction of the
baseline's rate (higher is better; 1.0 means no overhead).
"""

from __future__ import annotations

import argparse
import bisect
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import pipestate as ps
from _common import best_of, table, write_results

BOUNDARIES = [25, 50, 100, 150]
BATCH_SIZES = [64, 32, 16, 8, 8]


def _baseline(sequences: list[np.ndarray]) -> Iterator[np.ndarray]:
    buckets: dict[int, list[np.ndarray]] = {}

    def pad(group: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(group), max(len(s) for s in group)), group[0].dtype)
        for i, s in enumerate(group):
            out[i, : len(s)] = s
        return out

    for seq in sequences:
        bucket = bisect.bisect_right(BOUNDARIES, len(seq))
        group = buckets.setdefault(bucket, [])
        group.append(seq)
        if len(group) == BATCH_SIZES[bucket]:
            del buckets[bucket]
            yield pad(group)
    for bucket in sorted(buckets):
        yield pad(buckets[bucket])


def _pipeline(sequences: list[np.ndarray]) -> ps.Dataset:
    return (
        ps.Dataset.range(len(sequences))
        .map(lambda i: sequences[i])
        .bucket_by_sequence_length(len, BOUNDARIES, BATCH_SIZES)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k sequences instead of 100k")
    args = parser.parse_args()
    count = 20_000 if args.quick else 100_000
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 201, count)
    sequences = [rng.integers(0, 30_000, n).astype(np.int32) for n in lengths]

    expected = list(_baseline(sequences))
    got = list(_pipeline(sequences))
    assert len(got) == len(expected), "pipestate made a different number of batches"
    assert all(np.array_equal(a, b) for a, b in zip(got, expected)), "batches differ"

    # Interleaved, best of 9 each: a shared machine's load hits both sides alike.
    baseline_s = pipestate_s = float("inf")
    for _ in range(9):
        baseline_s = min(baseline_s, best_of(lambda: sum(1 for _ in _baseline(sequences)), 1))
        pipestate_s = min(pipestate_s, best_of(lambda: sum(1 for _ in _pipeline(sequences)), 1))
    rows = [
        ["python generator (baseline)", count / baseline_s, 1.0],
        ["pipestate bucket_by_sequence_length", count / pipestate_s, baseline_s / pipestate_s],
    ]
    print(table(["pipeline", "elements/s", "fraction of baseline"], rows))
    results = {
        "sequences": count,
        "batches": len(expected),
        "baseline_elements_per_s": count / baseline_s,
        "pipestate_elements_per_s": count / pipestate_s,
        "ratio": baseline_s / pipestate_s,
    }
    print(f"results: {write_results('bucketing', results)}")


if __name__ == "__main__":
    main()
