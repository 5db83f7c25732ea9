"""pipestate.jax.device_prefetch against Grain + jax.device_put, feeding 8 CPU devices.

Run: .venv/bin/python bench/bench_jax_feed.py [--quick] [--workers N]

The same work on both sides: a random-access source of float32 records of
4 KB (in memory), a global shuffle, a per-record NumPy function
(standardising the record, in ``_jax_feed_work.py``), batches of 128 put on
8 CPU devices with ``NamedSharding(mesh, P("batch"))``, every batch blocked on
(``jax.block_until_ready``) so the transfer is counted.

(a) throughput, records/s over one epoch from making the iterator to its last
    batch, best of several rounds, interleaved: pipestate ``device_prefetch``
    with its thread and without, against Grain's ``DataLoader``
    (``IndexSampler``; default ``ReadOptions`` and one thread reading 16
    records ahead) followed by ``jax.device_put`` of each batch, and Grain's
    dataset API with its own ``grain.experimental.device_put``. Three loops:
    no step; a jitted matmul on each batch (computed on the same CPU cores);
    a 2 ms wait per batch that the loop blocks on (an accelerator's step,
    leaving the CPU free). Ratio = pipestate / the best Grain feed
    (goal: >= 1.0). ``--workers N`` adds rows with N worker processes (a
    ``Loader``; Grain's ``worker_count``).
(b) restore cost: a fresh iterator restored to the state after batch ``k``
    (far into the epoch) and its first batch on the devices, against the
    same after batch 1; seconds, best of several.

XLA_FLAGS is set before JAX is imported; a caller that imported JAX first
must have set it (eight host devices). The Grain rows are skipped when
grain is not installed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

sys.path.insert(0, str(Path(__file__).parent))
import _jax_feed_work
import pipestate as ps
from _common import table, write_results
from _jax_feed_work import standardise
from pipestate.jax import device_prefetch

try:
    import grain.python as grain
except ImportError:  # the Grain rows are skipped
    grain = None

BATCH = 128
RECORD = 1024  # float32 values: 4 KB per record
SEED = 7


def _absl_flags_parsed() -> None:
    """Grain's worker processes read absl flags, which only an absl main would parse."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def records(count: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((count, RECORD), dtype=np.float32)


def sharding() -> NamedSharding:
    devices = jax.devices()
    if len(devices) != 8:
        raise SystemExit(
            f"needs 8 devices, JAX sees {len(devices)}: set "
            "XLA_FLAGS=--xla_force_host_platform_device_count=8 before importing jax"
        )
    return NamedSharding(Mesh(np.array(devices), ("batch",)), P("batch"))


# ------------------------------------------------------------------ the feeds
def pipestate_feed(
    data: np.ndarray, target: NamedSharding, *, workers: int, thread: bool, size: int = 2
) -> Any:
    """A DeviceIterator over the pipeline (a Loader's iterator when ``workers``)."""
    ds = (
        ps.Dataset.from_tensor_slices(data)
        .global_shuffle(seed=SEED)
        .map(standardise)
        .batch(BATCH, drop_remainder=True)
    )
    source = iter(ps.data.Loader(ds, num_workers=workers)) if workers else iter(ds)
    return device_prefetch(source, target, size=size, thread=thread)


class GrainFeed:
    """Grain's DataLoader followed by ``jax.device_put`` of each batch."""

    def __init__(
        self, data: np.ndarray, target: NamedSharding, *, workers: int, tuned: bool = False
    ) -> None:
        sampler = grain.IndexSampler(
            num_records=len(data),
            shard_options=grain.NoSharding(),
            shuffle=True,
            num_epochs=1,
            seed=SEED,
        )
        # Grain's default reads with 16 threads and 500 records ahead, costly on few
        # cores; the tuned loader reads with one thread, 16 records ahead.
        options = grain.ReadOptions(num_threads=1, prefetch_buffer_size=16) if tuned else None
        loader = grain.DataLoader(
            data_source=data,
            sampler=sampler,
            operations=[_jax_feed_work.Standardise(), grain.Batch(BATCH, drop_remainder=True)],
            worker_count=workers,
            read_options=options,
        )
        self.iterator: Any = iter(loader)
        self.target = target

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        return jax.device_put(next(self.iterator), self.target)

    def get_state(self) -> Any:
        return self.iterator.get_state()

    def set_state(self, state: Any) -> None:
        self.iterator.set_state(state)

    def close(self) -> None:
        """Grain's iterators stop their threads and workers when they are collected."""
        self.iterator = None


class GrainDatasetFeed(GrainFeed):
    """Grain's dataset API with its own ``grain.experimental.device_put`` (threads, no workers)."""

    def __init__(self, data: np.ndarray, target: NamedSharding) -> None:
        import grain as grain_root

        ds = (
            grain.MapDataset.source(data)
            .shuffle(seed=SEED)
            .map(standardise)
            .batch(BATCH, drop_remainder=True)
        )
        self.iterator = iter(
            grain_root.experimental.device_put(ds.to_iter_dataset(), target, device_buffer_size=2)
        )
        self.target = target

    def __next__(self) -> Any:
        return next(self.iterator)


def close(feed: Any) -> None:
    feed.close()


def makers(data: np.ndarray, target: NamedSharding, workers: int) -> dict[str, Callable[[], Any]]:
    """The feeds compared with ``workers`` worker processes, by name."""
    found: dict[str, Callable[[], Any]] = {
        "pipestate thread": lambda: pipestate_feed(data, target, workers=workers, thread=True),
        "pipestate inline": lambda: pipestate_feed(data, target, workers=workers, thread=False),
    }
    if grain is not None:
        found["grain DataLoader"] = lambda: GrainFeed(data, target, workers=workers)
        found["grain DataLoader tuned"] = lambda: GrainFeed(
            data, target, workers=workers, tuned=True
        )
        if workers == 0:
            found["grain dataset + device_put"] = lambda: GrainDatasetFeed(data, target)
    return found


# ------------------------------------------------------------------ (a) rate
def make_step(target: NamedSharding) -> Callable[[Any], Any]:
    """A jitted training-step stand-in: a matmul on the sharded batch (a few ms)."""
    weights = jax.device_put(
        np.random.default_rng(1).standard_normal((RECORD, 512), dtype=np.float32),
        NamedSharding(target.mesh, P()),
    )

    @jax.jit
    def step(batch: Any) -> Any:
        return jax.numpy.tanh(batch @ weights).sum()

    return step


def wait_step(batch: Any) -> None:
    """An accelerator's step stand-in: 2 ms the loop waits for, leaving the CPU free."""
    time.sleep(0.002)


def epoch_rate(make: Callable[[], Any], step: Callable[[Any], Any] | None) -> float:
    """Records per second over one epoch, from making the feed to its last batch.

    The start is counted: a feed that reads far ahead before its first batch
    is returned would otherwise be timed on its buffer.
    """
    count = 0
    began = time.perf_counter()
    feed = make()
    for batch in feed:
        jax.block_until_ready(batch)
        if step is not None:
            jax.block_until_ready(step(batch))
        count += BATCH
    elapsed = time.perf_counter() - began
    close(feed)
    return count / elapsed


def throughput(
    data: np.ndarray, target: NamedSharding, rounds: int, worker_counts: list[int]
) -> list[dict[str, Any]]:
    matmul = make_step(target)
    jax.block_until_ready(matmul(jax.device_put(data[:BATCH], target)))  # compiled once
    steps: dict[str, Callable[[Any], Any] | None] = {
        "none": None,
        "jit matmul": matmul,
        "wait 2 ms": wait_step,
    }
    rows = []
    for step_name, step in steps.items():
        for workers in worker_counts:
            feeds = makers(data, target, workers)
            best: dict[str, float] = {}
            for _ in range(rounds):
                for name, make in feeds.items():  # interleaved, so all see the same machine
                    best[name] = max(best.get(name, 0.0), epoch_rate(make, step))
            peers = {name: rate for name, rate in best.items() if name.startswith("grain")}
            peer = max(peers, key=peers.__getitem__) if peers else None
            for name in ("pipestate thread", "pipestate inline"):
                row: dict[str, Any] = {
                    "step": step_name,
                    "workers": workers,
                    "feed": name,
                    "records_per_s": best[name],
                    "grain_rates": peers,
                }
                if peer is not None:
                    row["best_grain"] = peer
                    row["best_grain_records_per_s"] = peers[peer]
                    row["ratio"] = best[name] / peers[peer]
                rows.append(row)
    return rows


# --------------------------------------------------------------- (b) restore
def state_after(make: Callable[[], Any], batches: int) -> Any:
    feed = make()
    for _ in range(batches):
        next(feed)
    state = feed.get_state()
    close(feed)
    return state


def restore_time(make: Callable[[], Any], state: Any, rounds: int) -> float:
    """Seconds to restore a fresh feed to ``state`` and get its next batch on the devices."""
    best = float("inf")
    for _ in range(rounds):
        feed = make()
        began = time.perf_counter()
        feed.set_state(state)
        jax.block_until_ready(next(feed))
        best = min(best, time.perf_counter() - began)
        close(feed)
    return best


def restore(data: np.ndarray, target: NamedSharding, rounds: int) -> list[dict[str, Any]]:
    far = (len(data) // BATCH) * 3 // 4
    feeds = makers(data, target, 0)
    del feeds["pipestate inline"]
    rows = []
    for at in (1, far):
        times = {
            name: restore_time(make, state_after(make, at), rounds) for name, make in feeds.items()
        }
        row: dict[str, Any] = {"after_batch": at, "seconds": times}
        peers = {name: s for name, s in times.items() if name.startswith("grain")}
        if peers:
            peer = min(peers, key=peers.__getitem__)
            row["best_grain"] = peer
            row["ratio"] = times["pipestate thread"] / peers[peer]
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The benchmark's rows (throughput, then restore), for ``bench/bench_jax.py`` too.

    ``args.quick`` (bool) chooses small sizes; ``args.workers`` (int, 0 for
    none) adds rows with that many worker processes.
    """
    quick = bool(getattr(args, "quick", False))
    if grain is not None:
        _absl_flags_parsed()
    data = records(2048 if quick else 8192)
    target = sharding()
    worker_counts = [0, *([args.workers] if getattr(args, "workers", 0) else [])]
    rounds = 2 if quick else 3
    rows = [
        {"part": "throughput", **row} for row in throughput(data, target, rounds, worker_counts)
    ]
    rows += [{"part": "restore", **row} for row in restore(data, target, 3 if quick else 5)]
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="also compare with this many worker processes (a Loader; Grain's worker_count)",
    )
    args = parser.parse_args(argv)
    if grain is None:
        print("grain is not installed: the Grain rows are skipped")
    rows = run(args)
    rates = [r for r in rows if r["part"] == "throughput"]
    print("(a) records/s over an epoch, batch 128 on 8 devices; ratio = pipestate / best Grain")
    print(
        table(
            ["step", "workers", "pipestate feed", "pipestate", "best Grain", "Grain", "ratio"],
            [
                [
                    r["step"],
                    r["workers"],
                    r["feed"],
                    r["records_per_s"],
                    r.get("best_grain", "-"),
                    r.get("best_grain_records_per_s", "-"),
                    r.get("ratio", "-"),
                ]
                for r in rates
            ],
        )
    )
    grain_rows = [
        [r["step"], r["workers"], name, rate]
        for r in rates
        if r["feed"] == "pipestate thread"
        for name, rate in r["grain_rates"].items()
    ]
    if grain_rows:
        print("\nGrain's configurations, records/s")
        print(table(["step", "workers", "Grain feed", "records/s"], grain_rows))
    restores = [r for r in rows if r["part"] == "restore"]
    print("\n(b) restore + first batch on the devices, seconds (best of several)")
    names = list(restores[0]["seconds"])
    print(
        table(
            ["after batch", *names, "ratio pipestate / best Grain"],
            [
                [r["after_batch"], *(r["seconds"][n] for n in names), r.get("ratio", "-")]
                for r in restores
            ],
        )
    )
    path = write_results("bench_jax_feed", {"rows": rows})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
