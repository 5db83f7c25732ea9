"""Mixtures and packing: state size and restore time deep into a run, and throughput.

Run: .venv/bin/python bench/bench_mixture.py [--quick]

(a) A 10-input weighted ``sample_from_datasets`` after 10k and after 1M
    elements really consumed: the state's JSON bytes and the time of
    ``get_state()`` + ``set_state()`` into a fresh iterator of a fresh dataset
    + its first ``next()``; the ratio 1M / 10k is the point (flat is ≤ 1.5).
    Random-access inputs (the state is one index), streaming inputs (each
    input's state and the phase), and a weights schedule (whose per-block
    counts a fresh dataset computes up to the restored block).
(b) Throughput of the mixture against a plain-Python generator doing the same
    weighted sampling: NumPy draws the input of a chunk of outputs at once and
    the generator yields ``next(inputs[choice])``. ``one_input_ratio`` is the
    same ratio for one input read alone (``range(1M).repeat()``): the share
    of the cost that is the iterator's, not the mixing's.
(c) Throughput of ``pack_sequences`` (first fit with 8 open rows, and concat)
    against plain-Python generators packing the same sequences the same way.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import pipestate as ps
from _common import best_of, table, write_results

INPUTS = 10
WEIGHTS = list(np.random.default_rng(3).random(INPUTS) + 0.1)
ROW = 2048


def _keep(x: Any) -> bool:
    return True  # keeps every element, but makes the input streaming


def _schedule(count: int) -> list[float]:
    """A curriculum: the last input's weight grows with the count."""
    return [*WEIGHTS[:-1], WEIGHTS[-1] * (1 + count / 100_000)]


def _mixture(kind: str) -> ps.Dataset:
    inputs = [ps.Dataset.range(k * 10**9, k * 10**9 + 10**6).repeat() for k in range(INPUTS)]
    if kind == "streaming":
        inputs = [ds.filter(_keep) for ds in inputs]
    weights: Any = _schedule if kind == "schedule" else WEIGHTS
    return ps.Dataset.sample_from_datasets(inputs, weights, seed=7)


def _restore(kind: str, consumed: int) -> dict[str, Any]:
    it = iter(_mixture(kind))
    for _ in range(consumed):
        next(it)
    state = json.loads(json.dumps(it.get_state()))
    expected = next(it)

    def restore() -> Any:
        fresh = iter(_mixture(kind))  # a fresh dataset: nothing cached from the run
        fresh.set_state(state)
        return next(fresh)

    assert restore() == expected, "restore diverged"
    seconds = best_of(restore, 5)
    return {"inputs": kind, "consumed": consumed, "state_bytes": len(json.dumps(state)),
            "restore_ms": seconds * 1e3}  # fmt: skip


def _baseline_mixture(count: int) -> Iterator[int]:
    """The same weighted draw in plain Python: NumPy choices per chunk, Python iterators."""
    probabilities = np.asarray(WEIGHTS) / sum(WEIGHTS)
    rng = np.random.default_rng(7)
    inputs = [iter(range(k * 10**9, k * 10**9 + count + 1)) for k in range(INPUTS)]
    produced = 0
    while produced < count:
        for choice in rng.choice(INPUTS, size=1024, p=probabilities).tolist():
            yield next(inputs[choice])
        produced += 1024


def _throughput(count: int) -> list[dict[str, Any]]:
    rows = []
    for batch in (None, 256):
        ds = _mixture("random-access").take(count)
        if batch:
            ds = ds.batch(batch)

        def ours(ds: ps.Dataset = ds) -> None:
            for _ in ds:
                pass

        def baseline(batch: int | None = batch) -> None:
            stream = _baseline_mixture(count)
            if batch is None:
                for _ in stream:
                    pass
                return
            while True:
                chunk = [x for _, x in zip(range(batch), stream)]
                if not chunk:
                    return
                np.array(chunk, np.int64)

        t_ours, t_base = best_of(ours, 3), best_of(baseline, 3)
        t_floor = best_of(functools.partial(_drain, _one_input(count, batch)), 3)
        rows.append({"pipeline": f"mixture{'' if batch is None else f'.batch({batch})'}",
                     "pipestate_el_per_s": count / t_ours, "baseline_el_per_s": count / t_base,
                     "ratio": t_base / t_ours,
                     "one_input_ratio": t_base / t_floor})  # fmt: skip
    return rows


def _one_input(count: int, batch: int | None) -> ps.Dataset:
    """One input alone, no mixture: what pipestate's iterator costs without mixing."""
    ds = ps.Dataset.range(10**6).repeat().take(count)
    return ds if batch is None else ds.batch(batch)


def _drain(ds: ps.Dataset) -> None:
    for _ in ds:
        pass


def _sequences(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(1, 32000, rng.integers(1, 512), dtype=np.int32) for _ in range(count)]


def _emit(pieces: list[np.ndarray]) -> dict[str, np.ndarray]:
    tokens = np.zeros(ROW, np.int32)
    segments = np.zeros(ROW, np.int32)
    positions = np.zeros(ROW, np.int32)
    at = 0
    for number, piece in enumerate(pieces, start=1):
        n = len(piece)
        tokens[at : at + n] = piece
        segments[at : at + n] = number
        positions[at : at + n] = np.arange(n, dtype=np.int32)
        at += n
    return {"tokens": tokens, "segment_ids": segments, "positions": positions}


def _baseline_first_fit(sequences: list[np.ndarray], open_rows: int) -> Iterator[dict[str, Any]]:
    rows: list[list[np.ndarray]] = []
    fill: list[int] = []
    for seq in sequences:
        for k, used in enumerate(fill):
            if used + len(seq) <= ROW:
                rows[k].append(seq)
                fill[k] += len(seq)
                break
        else:
            rows.append([seq])
            fill.append(len(seq))
        full = next((k for k, used in enumerate(fill) if used == ROW), None)
        if full is None and len(rows) > open_rows:
            full = 0
        if full is not None:
            fill.pop(full)
            yield _emit(rows.pop(full))
    for row in rows:
        yield _emit(row)


def _baseline_concat(sequences: list[np.ndarray]) -> Iterator[dict[str, Any]]:
    pending: list[np.ndarray] = []
    filled = 0
    for seq in sequences:
        pending.append(seq)
        filled += len(seq)
        while filled >= ROW:
            row, rest, used = [], [], 0
            for piece in pending:
                take = max(0, min(len(piece), ROW - used))
                if take:
                    row.append(piece[:take])
                if take < len(piece):
                    rest.append(piece[take:])
                used += take
            pending, filled = rest, filled - ROW
            yield _emit(row)
    if pending:
        yield _emit(pending)


def _packing(count: int) -> list[dict[str, Any]]:
    sequences = _sequences(count)
    tokens = sum(len(s) for s in sequences)
    source = ps.Dataset.range(count).map(lambda i: sequences[int(i)])
    rows = []
    for method in ("first_fit", "concat"):
        ds = source.pack_sequences(ROW, method=method, num_open_rows=8)
        ours_rows = [r["tokens"] for r in ds]
        base = (
            _baseline_first_fit(sequences, 8)
            if method == "first_fit"
            else _baseline_concat(sequences)
        )
        base_rows = [r["tokens"] for r in base]
        assert len(ours_rows) == len(base_rows), "packing differs from the baseline"
        assert all(np.array_equal(a, b) for a, b in zip(ours_rows, base_rows)), "rows differ"

        def ours(ds: ps.Dataset = ds) -> None:
            for _ in ds:
                pass

        def baseline(method: str = method) -> None:
            packed = (
                _baseline_first_fit(sequences, 8)
                if method == "first_fit"
                else _baseline_concat(sequences)
            )
            for _ in packed:
                pass

        t_ours, t_base = best_of(ours, 3), best_of(baseline, 3)
        rows.append({"pipeline": f"pack_sequences({ROW}, {method!r})",
                     "pipestate_tokens_per_s": tokens / t_ours,
                     "baseline_tokens_per_s": tokens / t_base, "ratio": t_base / t_ours,
                     "rows": len(ours_rows),
                     "fill": tokens / (len(ours_rows) * ROW)})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k instead of 1M, fewer sizes")
    args = parser.parse_args()
    deep = 100_000 if args.quick else 1_000_000
    started = time.perf_counter()
    restores = [_restore(kind, n) for kind in ("random-access", "streaming", "schedule")
                for n in (10_000, deep)]  # fmt: skip
    for kind in ("random-access", "streaming", "schedule"):
        shallow, far = (r for r in restores if r["inputs"] == kind)
        far["ratio_to_10k"] = far["restore_ms"] / shallow["restore_ms"]
        shallow["ratio_to_10k"] = 1.0
    print(table(list(restores[0]), [list(r.values()) for r in restores]))
    throughput = _throughput(100_000 if args.quick else 500_000)
    print()
    print(table(list(throughput[0]), [list(r.values()) for r in throughput]))
    packing = _packing(2_000 if args.quick else 20_000)
    print()
    print(table(list(packing[0]), [list(r.values()) for r in packing]))
    print(f"\n{time.perf_counter() - started:.0f} s")
    results = {"restore": restores, "throughput": throughput, "packing": packing}
    print(f"results: {write_results('mixture', results)}")


if __name__ == "__main__":
    main()
