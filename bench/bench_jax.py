"""JAX checkpoints on 8 CPU devices: pipestate against Orbax's ``StandardCheckpointer``.

A pytree of ``--mb`` MB (600 by default) of float32 and bfloat16 leaves,
sharded over 8 CPU devices (a 1-D mesh of 8 and a 4x2 mesh, some leaves
replicated), as a training state would be. Measured in the same run, on the
same disk, best of ``--repeats``:

* save: ``Checkpoint(params=tree).write`` against ``StandardCheckpointer.save``
  followed by ``wait_until_finished`` (its saves are asynchronous);
* async save, blocking time: an async ``write`` until it returns (the host
  snapshot) against ``StandardCheckpointer.save`` until it returns; then each
  waits for its save to finish, outside the timing;
* restore onto the same shardings: ``restore_pytree(path, abstract_tree)``
  against ``StandardCheckpointer.restore(path, abstract_tree)``, both from
  ``jax.ShapeDtypeStruct`` leaves with shardings.

Both sides sync files to disk: pipestate with ``CheckpointOptions(fsync=True)``
(its default), Orbax through TensorStore's ``file_io_sync`` (on by default);
``--no-fsync`` turns pipestate's off for comparison, and the output says which.
Ratios > 1 mean pipestate is faster (for blocking time: blocks less).
Orbax is optional: without it, only pipestate's times are printed.

The device-feeding comparison (a pipestate pipeline feeding devices against
Grain's ``DataLoader`` + ``device_put``) lives in ``bench/bench_jax_feed.py``;
``--feed`` runs it after this one (see :func:`run_feed`).

Run:  python bench/bench_jax.py               (600 MB; needs ~4 GB of memory)
      python bench/bench_jax.py --mb 60       (seconds)
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import argparse
import importlib.util
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from _common import table, write_results
from pipestate.checkpoint import Checkpoint, CheckpointOptions, restore_pytree

WIDTH = 1024


def make_tree(mb: float) -> dict[str, Any]:
    """About ``mb`` MB of float32 and bfloat16 leaves over 8 devices, some replicated."""
    devices = np.array(jax.devices()[:8])
    rows8 = NamedSharding(Mesh(devices, ("x",)), P("x", None))
    grid = NamedSharding(Mesh(devices.reshape(4, 2), ("x", "y")), P("x", "y"))
    replicated = NamedSharding(Mesh(devices, ("x",)), P())
    rng = np.random.default_rng(0)
    # A layer: a float32 kernel sharded by rows, a bfloat16 copy on the 4x2 grid, and a
    # replicated float32 bias; 6 bytes per kernel element plus the bias.
    rows = 2048
    per_layer = rows * WIDTH * 6 + WIDTH * 4
    layers = max(1, round(mb * 1e6 / per_layer))
    tree: dict[str, Any] = {}
    for i in range(layers):
        kernel = rng.standard_normal((rows, WIDTH), dtype=np.float32)
        tree[f"layer{i:03d}"] = {
            "kernel": jax.device_put(kernel, rows8),
            "kernel_bf16": jax.device_put(kernel.astype(jnp.bfloat16), grid),
            "bias": jax.device_put(rng.standard_normal(WIDTH, dtype=np.float32), replicated),
        }
    jax.block_until_ready(tree)
    return tree


def nbytes(tree: Any) -> int:
    return sum(leaf.nbytes for leaf in jax.tree.leaves(tree))


def abstract(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def best(
    fn: Callable[[], object], repeats: int, after: Callable[[], object] | None = None
) -> float:
    """The fastest of ``repeats`` runs of ``fn``; ``after`` runs untimed after each."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if after is not None:
            after()
    return min(times)


def same(a: Any, b: Any) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.sharding == y.sharding, (x.sharding, y.sharding)
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


class Pipestate:
    """pipestate's side: one prefix rewritten each round."""

    def __init__(self, tree: Any, scratch: Path, fsync: bool) -> None:
        self.ckpt = Checkpoint(params=tree)
        self.prefix = str(scratch / "ps" / "ckpt")
        self.sync_options = CheckpointOptions(fsync=fsync)
        self.async_options = CheckpointOptions(fsync=fsync, enable_async=True)

    def save(self) -> None:
        self.ckpt.write(self.prefix, options=self.sync_options)

    def save_async(self) -> None:
        self.ckpt.write(self.prefix, options=self.async_options)

    def wait(self) -> None:
        self.ckpt.sync()

    def restore(self, target: Any) -> Any:
        return restore_pytree(self.prefix, target, key="params")


class Orbax:
    """Orbax's side: ``StandardCheckpointer`` into one directory, replaced each round."""

    def __init__(self, scratch: Path) -> None:
        import orbax.checkpoint as ocp

        self.checkpointer = ocp.StandardCheckpointer()
        self.path = scratch / "orbax" / "ckpt"

    def save_async(self, tree: Any) -> None:
        self.checkpointer.save(self.path, tree, force=True)

    def wait(self) -> None:
        self.checkpointer.wait_until_finished()

    def save(self, tree: Any) -> None:
        self.save_async(tree)
        self.wait()

    def restore(self, target: Any) -> Any:
        return self.checkpointer.restore(self.path, target)

    def close(self) -> None:
        self.checkpointer.close()


def run(mb: float, scratch: Path, repeats: int, fsync: bool) -> dict[str, Any]:
    tree = make_tree(mb)
    target = abstract(tree)
    ours = Pipestate(tree, scratch, fsync)
    have_orbax = importlib.util.find_spec("orbax.checkpoint") is not None
    peer = Orbax(scratch) if have_orbax else None
    result: dict[str, Any] = {
        "state_mb": nbytes(tree) / 1e6,
        "leaves": len(jax.tree.leaves(tree)),
        "pipestate_fsync": fsync,
        "orbax_fsync": "TensorStore file_io_sync (default: on)" if peer else None,
    }
    try:
        result["save_s"] = {"pipestate": best(ours.save, repeats)}
        result["async_block_s"] = {"pipestate": best(ours.save_async, repeats, after=ours.wait)}
        same(ours.restore(target), tree)
        result["restore_s"] = {"pipestate": best(lambda: ours.restore(target), repeats)}
        if peer is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result["save_s"]["orbax"] = best(lambda: peer.save(tree), repeats)
                result["async_block_s"]["orbax"] = best(
                    lambda: peer.save_async(tree), repeats, after=peer.wait
                )
                same(peer.restore(target), tree)
                result["restore_s"]["orbax"] = best(lambda: peer.restore(target), repeats)
    finally:
        if peer is not None:
            peer.close()
    if peer is not None:
        result["save_speedup"] = result["save_s"]["orbax"] / result["save_s"]["pipestate"]
        result["async_block_ratio"] = (
            result["async_block_s"]["orbax"] / result["async_block_s"]["pipestate"]
        )
        result["restore_speedup"] = result["restore_s"]["orbax"] / result["restore_s"]["pipestate"]
    return result


def run_feed(argv: list[str]) -> None:
    """The device-feeding benchmark, ``bench/bench_jax_feed.py``, with the same arguments.

    It is a script of its own (its ``main(argv)``), so that each benchmark
    measures in a fresh process; this only starts it when it is there.
    """
    here = Path(__file__).parent
    if not (here / "bench_jax_feed.py").exists():
        print("device feeding: bench/bench_jax_feed.py is not there; skipped")
        return
    sys.path.insert(0, str(here))
    import bench_jax_feed  # type: ignore[import-not-found]

    bench_jax_feed.main(argv)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=600.0, help="pytree size in MB")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measure (best kept)")
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument("--no-fsync", action="store_true", help="pipestate saves without fsync")
    parser.add_argument("--feed", action="store_true", help="then run bench/bench_jax_feed.py")
    args = parser.parse_args(argv)
    if len(jax.devices()) < 8:
        raise SystemExit("needs 8 devices: set XLA_FLAGS before jax is imported")
    scratch = Path(tempfile.mkdtemp(prefix="bench-jax-", dir=args.dir))
    try:
        r = run(args.mb, scratch, args.repeats, not args.no_fsync)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rows = []
    for what, key, ratio in (
        ("save (sync)", "save_s", "save_speedup"),
        ("async save, blocking", "async_block_s", "async_block_ratio"),
        ("restore (same shardings)", "restore_s", "restore_speedup"),
    ):
        times = r[key]
        rows.append(
            [
                what,
                f"{times['pipestate']:.3f}",
                f"{times['orbax']:.3f}" if "orbax" in times else "not installed",
                f"{r[ratio]:.2f}x" if ratio in r else "-",
            ]
        )
    print(
        f"pytree: {r['state_mb']:.0f} MB in {r['leaves']} leaves (float32, bfloat16) on 8 CPU "
        f"devices; fsync: pipestate {'on' if r['pipestate_fsync'] else 'off'}, Orbax "
        f"{r['orbax_fsync'] or '-'}"
    )
    print(table(["measure", "pipestate s", "orbax s", "orbax / pipestate"], rows))
    print(f"results: {write_results('jax', r)}")
    if args.feed:
        run_feed([])


if __name__ == "__main__":
    main()
