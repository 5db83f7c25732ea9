"""Parallel input benchmarks: prefetch, parallel map and Loader against same-run baselines.

Run: .venv/bin/python bench/bench_parallel.py [--quick]
     /tmp/tfenv/bin/python bench/bench_parallel.py   # adds the tf.data column

(a) throughput of P1 ``range → map(x*2) → batch(32)``, P2 ``float32[100k,128] rows →
    global_shuffle / shuffle(1000) → batch(64)``, P3 ``range → map(py fn) → filter(even) →
    shuffle(1000) → batch(32) → prefetch(2)`` and a CPU-heavy NumPy map (~100 µs an element),
    each as a ratio to a plain-Python baseline doing the same work, and to tf.data and
    torchdata when they are installed;
(b) ``prefetch`` / ``num_parallel_calls`` on cheap pipelines against the same pipeline without
    them (target: ratio >= 0.90);
(c) state tracking: the P3 pipeline as is, against the same pipeline with the prefetch thread
    not recording states (a pipeline that can never save), and against one that saves every
    100 batches (target: overhead <= 10 %);
(d) save (get_state + JSON) and restore (set_state + first element) of running parallel
    pipelines.

Variants of one case run interleaved, best of several runs, so drift in the machine's speed
hits them alike; every figure that matters is a ratio within one run.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import pipestate as ps
from _common import table, write_results
from pipestate.data._engine import available_cores

AUTOTUNE = ps.data.AUTOTUNE

# Optional peers, imported in main(): Loader workers import this module, and must not
# pay for importing TensorFlow or torch.
tf: Any = None
tn: Any = None


def _import_peers() -> None:
    global tf, tn
    try:
        import tensorflow

        tensorflow.get_logger().setLevel("ERROR")
        tf = tensorflow
    except ImportError:
        tf = None
    try:
        import torchdata.nodes

        tn = torchdata.nodes
    except ImportError:
        tn = None


# ------------------------------------------------------------------- work
def py_fn(x: Any) -> Any:
    return x + 1


def is_even(x: Any) -> bool:
    return x % 2 == 0


def heavy(x: Any) -> np.ndarray:
    """About 100 µs of NumPy work (on an idle core of this machine)."""
    a = np.arange(6000, dtype=np.float64) * (float(x) + 1.0)
    return np.sort(np.sin(a))[:8]


def _drain(iterator: Any) -> int:
    count = 0
    for _ in iterator:
        count += 1
    return count


CPU: dict[str, float] = {}
"""Best CPU time (all threads of this process) of each variant in the last ``race``."""


def race(variants: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Best wall time of each variant over ``repeats`` rounds, the variants interleaved.

    The best CPU time of each is left in ``CPU``: on a shared machine it shows
    the work done without the time spent waiting for a core.
    """
    best = dict.fromkeys(variants, float("inf"))
    CPU.clear()
    CPU.update(best)
    for _ in range(repeats):
        for name, fn in variants.items():
            start, cpu = time.perf_counter(), time.process_time()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
            CPU[name] = min(CPU[name], time.process_time() - cpu)
    return best


# ---------------------------------------------------------------- baselines
def base_p1(n: int) -> Iterator[np.ndarray]:
    batch: list[int] = []
    for x in range(n):
        batch.append(x * 2)
        if len(batch) == 32:
            yield np.array(batch, dtype=np.int64)
            batch = []
    if batch:
        yield np.array(batch, dtype=np.int64)


def base_p2_global(data: np.ndarray) -> Iterator[np.ndarray]:
    order = np.random.default_rng(0).permutation(len(data))
    for start in range(0, len(data), 64):
        yield data[order[start : start + 64]]


def _buffer_shuffle(items: Iterator[Any], size: int, seed: int) -> Iterator[Any]:
    rng = random.Random(seed)
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        slot = rng.randrange(size)
        yield buffer[slot]
        buffer[slot] = item
    rng.shuffle(buffer)
    yield from buffer


def base_p2_buffer(data: np.ndarray) -> Iterator[np.ndarray]:
    rows: list[np.ndarray] = []
    for row in _buffer_shuffle(iter(data), 1000, 0):
        rows.append(row)
        if len(rows) == 64:
            yield np.stack(rows)
            rows = []
    if rows:
        yield np.stack(rows)


def base_p3(n: int) -> Iterator[np.ndarray]:
    kept = (y for y in (py_fn(x) for x in range(n)) if is_even(y))
    batch: list[int] = []
    for x in _buffer_shuffle(kept, 1000, 0):
        batch.append(x)
        if len(batch) == 32:
            yield np.array(batch, dtype=np.int64)
            batch = []
    if batch:
        yield np.array(batch, dtype=np.int64)


# ------------------------------------------------------------------- peers
def tf_cases(n: int, data: np.ndarray, m: int) -> dict[str, Callable[[], Any]]:
    if tf is None:
        return {}
    d = tf.data

    def run(ds: Any) -> Callable[[], Any]:
        return lambda: _drain(ds.as_numpy_iterator())

    def heavy_tf(x: Any) -> Any:
        return tf.numpy_function(heavy, [x], tf.float64)

    return {
        "P1": run(d.Dataset.range(n).map(lambda x: x * 2).batch(32)),
        "P2 global": run(d.Dataset.from_tensor_slices(data).shuffle(len(data), seed=0).batch(64)),
        "P2 buffer": run(d.Dataset.from_tensor_slices(data).shuffle(1000, seed=0).batch(64)),
        "P3": run(
            d.Dataset.range(n)
            .map(lambda x: x + 1)
            .filter(lambda x: x % 2 == 0)
            .shuffle(1000, seed=0)
            .batch(32)
            .prefetch(2)
        ),
        "heavy parallel": run(d.Dataset.range(m).map(heavy_tf, num_parallel_calls=d.AUTOTUNE)),
    }


def torchdata_cases(n: int, data: np.ndarray, m: int) -> dict[str, Callable[[], Any]]:
    if tn is None:
        return {}

    def run(make: Callable[[], Any]) -> Callable[[], Any]:
        return lambda: _drain(tn.Loader(make()))

    def p1() -> Any:
        node = tn.Mapper(tn.IterableWrapper(range(n)), lambda x: x * 2)
        return tn.Mapper(tn.Batcher(node, 32, drop_last=False), np.array)

    def p2() -> Any:
        order = np.random.default_rng(0).permutation(len(data)).tolist()
        node = tn.Batcher(tn.IterableWrapper(order), 64, drop_last=False)
        return tn.Mapper(node, lambda idx: data[idx])

    def p3() -> Any:  # torchdata.nodes has no buffer shuffle: this does less work
        node = tn.Filter(tn.Mapper(tn.IterableWrapper(range(n)), py_fn), is_even)
        return tn.Prefetcher(tn.Mapper(tn.Batcher(node, 32, drop_last=False), np.array), 2)

    def heavy_threads() -> Any:
        return tn.ParallelMapper(tn.IterableWrapper(range(m)), heavy, num_workers=2)

    cases = {"P1": run(p1), "P2 global": run(p2), "heavy parallel": run(heavy_threads)}
    if hasattr(tn, "Filter"):
        cases["P3"] = run(p3)
    return cases


# ------------------------------------------------------------------- cases
def throughput(quick: bool, repeats: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    n = 100_000 if quick else 1_000_000
    rows = 10_000 if quick else 100_000
    m = 300 if quick else 2000
    data = np.random.default_rng(0).standard_normal((rows, 128), dtype=np.float32)

    def run(ds: ps.Dataset) -> Callable[[], Any]:
        return lambda: _drain(iter(ds))

    p1 = ps.Dataset.range(n).map(lambda x: x * 2).batch(32)
    p1_parallel = ps.Dataset.range(n).map(lambda x: x * 2, num_parallel_calls=AUTOTUNE).batch(32)
    p2g = ps.Dataset.from_tensor_slices(data).global_shuffle(seed=0).batch(64)
    p2b = ps.Dataset.from_tensor_slices(data).shuffle(1000, seed=0).batch(64)
    p3 = ps.Dataset.range(n).map(py_fn).filter(is_even).shuffle(1000, seed=0).batch(32)
    heavy_ds = ps.Dataset.range(m).map(heavy)
    # (name, elements per timed run, passes over the data per timed run, variants)
    groups: list[tuple[str, int, int, dict[str, Callable[[], Any]]]] = [
        (
            "P1",
            n,
            1,
            {
                "baseline": lambda: _drain(base_p1(n)),
                "pipestate": run(p1),
                "+ prefetch(AUTOTUNE)": run(p1.prefetch(AUTOTUNE)),
                "map(num_parallel_calls=AUTOTUNE)": run(p1_parallel),
            },
        ),
        (
            "P2 global",
            rows,
            5,  # one pass takes ~40 ms: time five, so thread start-up is not all we see
            {
                "baseline": lambda: _drain(base_p2_global(data)),
                "pipestate": run(p2g),
                "+ prefetch(AUTOTUNE)": run(p2g.prefetch(AUTOTUNE)),
            },
        ),
        (
            "P2 buffer",
            rows,
            1,
            {
                "baseline": lambda: _drain(base_p2_buffer(data)),
                "pipestate": run(p2b),
                "+ prefetch(2)": run(p2b.prefetch(2)),
            },
        ),
        (
            "P3",
            n,
            1,
            {
                "baseline": lambda: _drain(base_p3(n)),
                "pipestate": run(p3.prefetch(2)),
                "without prefetch": run(p3),
            },
        ),
        (
            "heavy",
            m,
            1,
            {
                "baseline": lambda: [heavy(x) for x in range(m)],
                "pipestate": run(heavy_ds),
                "map(num_parallel_calls=AUTOTUNE)": run(
                    ps.Dataset.range(m).map(heavy, num_parallel_calls=AUTOTUNE)
                ),
                "Loader(num_workers=2)": lambda: _drain(ps.data.Loader(heavy_ds, num_workers=2)),
            },
        ),
    ]
    peers = {"tf.data": tf_cases(n, data, m), "torchdata": torchdata_cases(n, data, m)}
    results = []
    for name, elements, passes, variants in groups:
        for peer, cases in peers.items():
            key = "heavy parallel" if name == "heavy" else name
            if key in cases:
                variants[peer] = cases[key]
        if name == "heavy":  # start the Loader's fork server outside the timing
            _drain(ps.data.Loader(ps.Dataset.range(4).map(heavy), num_workers=2))
        times = race(
            {
                key: (lambda fn=fn, passes=passes: [fn() for _ in range(passes)])  # type: ignore[misc]
                for key, fn in variants.items()
            },
            repeats,
        )
        elements *= passes
        for variant, seconds in times.items():
            if variant == "baseline":
                continue
            results.append(
                {
                    "pipeline": name,
                    "variant": variant,
                    "elements_per_s": elements / seconds,
                    "baseline_elements_per_s": elements / times["baseline"],
                    "ratio_to_baseline": times["baseline"] / seconds,
                    "ratio_to_pipestate": times["pipestate"] / seconds,
                    "cpu_ratio_to_pipestate": CPU["pipestate"] / CPU[variant],
                }
            )
    return results, []


def tracking(quick: bool, repeats: int) -> list[dict[str, Any]]:
    n = 100_000 if quick else 1_000_000
    p3 = ps.Dataset.range(n).map(py_fn).filter(is_even).shuffle(1000, seed=0).batch(32)

    def untracked() -> ps.Dataset:
        ds = p3.prefetch(2)
        ds._track = False  # type: ignore[attr-defined]  # never records a state: can't save
        return ds

    def saving(every: int) -> int:
        it = iter(p3.prefetch(2))
        count = 0
        for _ in it:
            count += 1
            if count % every == 0:
                json.dumps(it.get_state(), default=lambda a: a.tolist())
        return count

    times = race(
        {
            "never saves": lambda: _drain(iter(untracked())),
            "tracking": lambda: _drain(iter(p3.prefetch(2))),
            "saves every 1000 batches": lambda: saving(1000),
            "saves every 100 batches": lambda: saving(100),
        },
        repeats,
    )
    base, cpu = times["never saves"], dict(CPU)
    return [
        {
            "variant": name,
            "seconds": t,
            "overhead": t / base - 1.0,
            "cpu_overhead": cpu[name] / cpu["never saves"] - 1.0,
        }
        for name, t in times.items()
        if name != "never saves"
    ]


def save_restore(quick: bool) -> list[dict[str, Any]]:
    n = 100_000 if quick else 1_000_000
    cases = {
        "P3 + prefetch(2) (streaming)": (
            ps.Dataset.range(n)
            .map(py_fn)
            .filter(is_even)
            .shuffle(1000, seed=0)
            .batch(32)
            .prefetch(2),
            None,
        ),
        "P1 map(num_parallel_calls) + prefetch": (
            ps.Dataset.range(n)
            .map(py_fn, num_parallel_calls=AUTOTUNE)
            .batch(32)
            .prefetch(AUTOTUNE),
            None,
        ),
        "heavy map(num_parallel_calls, deterministic=False)": (
            ps.Dataset.range(10**6).map(heavy, num_parallel_calls=AUTOTUNE, deterministic=False),
            None,
        ),
        "heavy Loader(num_workers=2)": (ps.Dataset.range(10**6).map(heavy).batch(8), 2),
    }
    out = []
    for name, (ds, workers) in cases.items():
        source: Any = ds if workers is None else ps.data.Loader(ds, num_workers=workers)
        it = iter(source)
        for _ in range(300):  # running, with work in flight
            next(it)
        saves, restores, firsts = [], [], []
        size = 0
        for _ in range(5):
            start = time.perf_counter()
            text = json.dumps(it.get_state(), default=lambda a: a.tolist())
            saves.append(time.perf_counter() - start)
            size = len(text)
            state = json.loads(text)
            fresh = iter(source)
            start = time.perf_counter()
            fresh.set_state(state)
            middle = time.perf_counter()
            next(fresh)
            restores.append(middle - start)
            firsts.append(time.perf_counter() - middle)
            fresh.close()
        it.close()
        out.append(
            {
                "pipeline": name,
                "save_us": min(saves) * 1e6,
                "restore_us": min(restores) * 1e6,
                "first_element_ms": min(firsts) * 1e3,
                "state_bytes": size,
            }
        )
    return out


def _load() -> str:
    """The 1-minute load average: the share of this machine others are using."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    repeats = 2 if args.quick else 7
    began = time.perf_counter()
    _import_peers()
    print(
        f"cores available: {available_cores()}; load average {_load()}; tf.data: "
        f"{tf.__version__ if tf else 'not installed'}; torchdata.nodes: "
        f"{'installed' if tn else 'not installed'}\n"
    )
    tp, _ = throughput(args.quick, repeats)
    print("(a) throughput; ratios to the plain-Python baseline and to plain pipestate")
    print(
        table(
            [
                "pipeline",
                "variant",
                "el/s",
                "baseline el/s",
                "x baseline",
                "x pipestate",
                "x pipestate (CPU)",
            ],
            [
                [
                    r["pipeline"],
                    r["variant"],
                    r["elements_per_s"],
                    r["baseline_elements_per_s"],
                    r["ratio_to_baseline"],
                    r["ratio_to_pipestate"],
                    r["cpu_ratio_to_pipestate"],
                ]
                for r in tp
            ],
        )
    )
    cheap = [
        r
        for r in tp
        if r["pipeline"] != "heavy"
        and ("prefetch" in r["variant"] or "parallel" in r["variant"])
        and r["variant"] not in ("tf.data", "torchdata")
    ]
    worst = min(r["ratio_to_pipestate"] for r in cheap)
    worst_cpu = min(r["cpu_ratio_to_pipestate"] for r in cheap)
    print(
        f"\n(b) prefetch / num_parallel_calls on cheap pipelines: worst ratio to the same "
        f"pipeline without them {worst:.2f} in wall time, {worst_cpu:.2f} in CPU time "
        "(target >= 0.90)"
    )
    p3 = next(r for r in tp if r["pipeline"] == "P3" and r["variant"] == "without prefetch")
    print(f"    P3 without its prefetch(2), relative to with it: {p3['ratio_to_pipestate']:.2f}")
    tr = tracking(args.quick, repeats)
    print("\n(c) state tracking, P3 with prefetch(2), against the same pipeline never saving")
    print(
        table(
            ["variant", "seconds", "overhead", "CPU overhead"],
            [
                [
                    r["variant"],
                    r["seconds"],
                    f"{r['overhead'] * 100:+.1f} %",
                    f"{r['cpu_overhead'] * 100:+.1f} %",
                ]
                for r in tr
            ],
        )
    )
    sr = save_restore(args.quick)
    print("\n(d) save and restore of running parallel pipelines")
    print(
        table(
            ["pipeline", "save (us)", "restore (us)", "first element (ms)", "state bytes"],
            [
                [
                    r["pipeline"],
                    r["save_us"],
                    r["restore_us"],
                    r["first_element_ms"],
                    r["state_bytes"],
                ]
                for r in sr
            ],
        )
    )
    name = "parallel" if tf is None else "parallel_tf"
    path = write_results(
        name,
        {
            "cores": available_cores(),
            "throughput": tp,
            "worst_cheap_ratio": worst,
            "worst_cheap_cpu_ratio": worst_cpu,
            "tracking": tr,
            "save_restore": sr,
        },
    )
    print(f"\nwrote {path} in {time.perf_counter() - began:.1f}s; load average {_load()}")


if __name__ == "__main__":
    main()
