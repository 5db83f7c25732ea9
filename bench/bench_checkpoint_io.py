"""Checkpoint write / read bandwidth against ``dd`` and ``numpy.save`` measured in the same run.

Writes ``--size-gib`` GiB as 16 equal arrays, with fsync, three ways:

* ``dd if=/dev/zero ... conv=fdatasync``: the disk's raw sequential write bandwidth;
* ``numpy.save`` of each array into its own file, then ``fsync``;
* ``CheckpointableSaver.save`` (safetensors shards + index, fsync).

Then reads them back (``numpy.load`` vs ``CheckpointableSaver.restore`` into
existing variables, checksums verified), after dropping the page cache when
that is allowed. Peak extra memory of the save and the restore is measured
with ``tracemalloc`` and compared with the largest array.

Run:  python bench/bench_checkpoint_io.py            (1 GiB)
      python bench/bench_checkpoint_io.py --quick    (16 MiB, seconds)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from _common import table, write_results
from pipestate.checkpoint import AutoTrackable, CheckpointableSaver, Variable

N_ARRAYS = 16


def drop_caches() -> bool:
    """Drop the page cache so reads hit the disk (needs root); False when not allowed."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def make_model(array_bytes: int, fill: bool) -> AutoTrackable:
    model = AutoTrackable()
    n = array_bytes // 4
    for i in range(N_ARRAYS):
        if fill:
            value = np.arange(n, dtype=np.float32)
            value += i
        else:
            value = np.zeros(n, dtype=np.float32)
        setattr(model, f"w{i:02d}", Variable(value))
    return model


def dd_write(path: Path, total_bytes: int) -> float:
    block = min(64 << 20, total_bytes)
    count = max(1, total_bytes // block)
    cmd = ["dd", "if=/dev/zero", f"of={path}", f"bs={block}", f"count={count}", "conv=fdatasync"]
    seconds = timed(lambda: subprocess.run(cmd, check=True, capture_output=True))
    path.unlink()
    return seconds


def numpy_save(directory: Path, arrays: list[np.ndarray]) -> float:
    def run() -> None:
        for i, array in enumerate(arrays):
            with open(directory / f"a{i:02d}.npy", "wb") as f:
                np.save(f, array)
                f.flush()
                os.fsync(f.fileno())
        fd = os.open(directory, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)

    return timed(run)


def numpy_load(directory: Path) -> float:
    return timed(lambda: [np.load(directory / f"a{i:02d}.npy") for i in range(N_ARRAYS)])


def peak_extra(fn: Callable[[], object]) -> int:
    """Peak bytes allocated (Python and NumPy) while ``fn`` runs, beyond what existed before."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak - base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gib", type=float, default=1.0, help="total bytes to write (GiB)")
    parser.add_argument(
        "--quick", action="store_true", help="a tiny run (16 MiB) to check it works"
    )
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measure (best kept)")
    args = parser.parse_args()
    size_gib = 1 / 64 if args.quick else args.size_gib
    if size_gib <= 0 or args.repeats < 1:
        parser.error(f"--size-gib and --repeats must be positive, got {size_gib}, {args.repeats}")
    total = int(size_gib * (1 << 30)) // (N_ARRAYS * 4096) * (N_ARRAYS * 4096)
    array_bytes = total // N_ARRAYS
    scratch = Path(args.dir or tempfile.mkdtemp(prefix="pipestate-bench-", dir=os.getcwd()))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        results = run(scratch, total, array_bytes, args.repeats)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report(results)


def _clear(directory: Path) -> None:
    """Remove earlier output so every timed write creates fresh files, as ``dd`` does."""
    for path in directory.iterdir():
        if path.is_file():
            path.unlink()
    os.sync()


def run(scratch: Path, total: int, array_bytes: int, repeats: int) -> dict[str, Any]:
    model = make_model(array_bytes, fill=True)
    arrays = [np.asarray(getattr(model, f"w{i:02d}")) for i in range(N_ARRAYS)]
    saver = CheckpointableSaver(model)
    ckpt_dir, npy_dir = scratch / "ckpt", scratch / "npy"
    ckpt_dir.mkdir()
    npy_dir.mkdir()
    prefix = str(ckpt_dir / "ckpt")

    # Interleaved rounds, best of each: the disk is shared and its speed drifts.
    times: dict[str, list[float]] = {"dd_write": [], "numpy_save_write": [], "pipestate_write": []}
    for _ in range(repeats):
        os.sync()
        times["dd_write"].append(dd_write(scratch / "dd.bin", total))
        _clear(npy_dir)
        times["numpy_save_write"].append(numpy_save(npy_dir, arrays))
        _clear(ckpt_dir)
        times["pipestate_write"].append(timed(lambda: saver.save(prefix)))

    target = make_model(array_bytes, fill=False)
    restorer = CheckpointableSaver(target)
    dropped = True
    reads: dict[str, list[float]] = {"numpy_load_read": [], "pipestate_read": []}
    for _ in range(repeats):
        dropped &= drop_caches()
        reads["numpy_load_read"].append(numpy_load(npy_dir))
        dropped &= drop_caches()
        reads["pipestate_read"].append(timed(lambda: restorer.restore(prefix).assert_consumed()))
    for i in (0, N_ARRAYS - 1):
        assert np.array_equal(np.asarray(getattr(target, f"w{i:02d}")), arrays[i])
    dd_s, np_write_s, ps_write_s = (min(times[k]) for k in times)
    np_read_s, ps_read_s = (min(reads[k]) for k in reads)

    write_peak = peak_extra(lambda: saver.save(prefix))
    read_peak = peak_extra(lambda: restorer.restore(prefix).assert_consumed())

    gb = total / 1e9
    return {
        "cpus": os.cpu_count(),
        "size_bytes": total,
        "arrays": N_ARRAYS,
        "array_bytes": array_bytes,
        "page_cache_dropped": dropped,
        "seconds": {
            "dd_write": dd_s,
            "numpy_save_write": np_write_s,
            "pipestate_write": ps_write_s,
            "numpy_load_read": np_read_s,
            "pipestate_read": ps_read_s,
        },
        "gb_per_s": {
            "dd_write": gb / dd_s,
            "numpy_save_write": gb / np_write_s,
            "pipestate_write": gb / ps_write_s,
            "numpy_load_read": gb / np_read_s,
            "pipestate_read": gb / ps_read_s,
        },
        "ratios": {
            "pipestate_write_vs_dd": dd_s / ps_write_s,
            "pipestate_write_vs_numpy_save": np_write_s / ps_write_s,
            "pipestate_read_vs_numpy_load": np_read_s / ps_read_s,
        },
        "peak_extra_memory": {
            "write_bytes": write_peak,
            "read_bytes": read_peak,
            "write_vs_largest_array": write_peak / array_bytes,
            "read_vs_largest_array": read_peak / array_bytes,
        },
        "targets": {"write_vs_dd": 0.8, "peak_extra_vs_largest_array": 1.2},
    }


def report(r: dict[str, Any]) -> None:
    gbps, secs, ratios, mem = r["gb_per_s"], r["seconds"], r["ratios"], r["peak_extra_memory"]
    print(
        f"checkpoint I/O: {r['size_bytes'] / (1 << 30):.3f} GiB as {r['arrays']} arrays of "
        f"{r['array_bytes'] / (1 << 20):.1f} MiB; page cache dropped before reads: "
        f"{r['page_cache_dropped']}\n"
    )
    print(table(["measure", "seconds", "GB/s"], [[k, secs[k], gbps[k]] for k in secs]))
    print()
    rows = [[k, v] for k, v in ratios.items()]
    rows += [
        ["peak extra memory (write) / largest array", mem["write_vs_largest_array"]],
        ["peak extra memory (read) / largest array", mem["read_vs_largest_array"]],
    ]
    print(table(["ratio", "value"], rows))
    print(f"\nwrote {write_results('checkpoint_io', r)}")


if __name__ == "__main__":
    main()
