"""A small JAX training loop killed with SIGKILL resumes from its latest checkpoint bit for bit.

The loop trains an MLP with optax's AdamW on batches that a pipestate pipeline
(global shuffle, a random map, batch) feeds to eight CPU devices through
``device_prefetch``, sharded along the batch; the parameters are replicated,
one of them sharded. Dropout draws from a JAX PRNG key kept in the checkpoint.
A CheckpointManager saves the parameters, the optimizer state, the key, the
step and the data iterator every few steps. One run goes uninterrupted;
another is killed with SIGKILL between saves (with batches prefetched on the
devices), and a new process resumes it from the latest checkpoint. Both must
see the same batches and end with the same bytes in every leaf.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests._resume import digest, run_or_kill

jax = pytest.importorskip("jax")
pytest.importorskip("optax")

STEPS = 12
SAVE_EVERY = 3
KILL_AT = 8  # after the save of step 6: steps 7 and 8 are lost and redone

TRAIN = r"""
import functools, hashlib, sys, time
import numpy as np
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import pipestate as ps
from pipestate.jax import device_prefetch

directory = sys.argv[1]
steps, save_every, kill_at = (int(a) for a in sys.argv[2:5])
mesh = Mesh(np.array(jax.devices()), ("batch",))
replicated = NamedSharding(mesh, P())
by_batch = NamedSharding(mesh, P("batch"))

features = np.random.default_rng(0).normal(size=(1000, 8)).astype(np.float32)
ds = (
    ps.Dataset.from_tensor_slices(features)
    .global_shuffle(seed=7)
    .repeat()
    .random_map(lambda x, rng: (x, np.float32(x.sum() + rng.normal(scale=0.1))), seed=3)
    .batch(16, drop_remainder=True)
)
data = device_prefetch(ds, by_batch, size=2)

init = jax.random.PRNGKey(0)
k1, k2 = jax.random.split(init)
params = {
    "hidden": {
        "w": jax.device_put(
            jax.random.normal(k1, (8, 32)) * 0.3, NamedSharding(mesh, P(None, "batch"))
        ),
        "b": jax.device_put(jnp.zeros(32), replicated),
    },
    "out": {"w": jax.device_put(jax.random.normal(k2, (32,)) * 0.3, replicated)},
}
optimizer = optax.adamw(1e-2)
opt_state = optimizer.init(params)
key = jax.random.PRNGKey(1)
# The step keeps every array where it is (out_shardings), so a restored state, placed
# like the initial one, runs the very program an uninterrupted run runs.
shardings = jax.tree_util.tree_map(
    lambda a: a.sharding if a.committed else replicated, (params, opt_state, key)
)
params, opt_state, key = jax.device_put((params, opt_state, key), shardings)

ckpt = ps.Checkpoint(params=params, opt_state=opt_state, key=key, step=0, data=data)
manager = ps.CheckpointManager(ckpt, directory, max_to_keep=2)
restored = manager.restore_or_initialize()
params, opt_state, key = ckpt.params, ckpt.opt_state, ckpt.key
print(f"resumed {restored} at step {ckpt.step}", flush=True)
assert jax.tree_util.tree_map(lambda a: a.sharding, (params, opt_state, key)) == shardings


def loss_fn(params, x, y, key):
    h = jax.nn.relu(x @ params["hidden"]["w"] + params["hidden"]["b"])
    keep = jax.random.bernoulli(key, 0.8, h.shape)
    h = jnp.where(keep, h / 0.8, 0.0)
    return jnp.mean((h @ params["out"]["w"] - y) ** 2)


@functools.partial(jax.jit, out_shardings=(*shardings, replicated))
def train_step(params, opt_state, x, y, key):
    key, dropout = jax.random.split(key)
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y, dropout)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, key, loss


while ckpt.step < steps:
    x, y = next(data)
    params, opt_state, key, loss = train_step(params, opt_state, x, y, key)
    ckpt.params, ckpt.opt_state, ckpt.key = params, opt_state, key
    ckpt.step += 1
    if ckpt.step % save_every == 0:
        manager.save()
    batch = hashlib.sha256(np.asarray(x).tobytes()).hexdigest()[:16]
    print(f"step {ckpt.step} batch {batch} loss {float(loss)!r}", flush=True)
    if ckpt.step == kill_at:
        print("waiting", flush=True)
        time.sleep(120)
digest = hashlib.sha256()
for leaf in jax.tree_util.tree_leaves((params, opt_state, key)):
    digest.update(np.asarray(leaf).tobytes())
print("digest", digest.hexdigest(), flush=True)
"""


def run(script: Path, directory: Path, kill_at: int) -> str:
    """Run the loop to the end (or until the test kills it); return its output."""
    args = [sys.executable, str(script), str(directory), str(STEPS), str(SAVE_EVERY), str(kill_at)]
    env = {
        **os.environ,
        "PYTHONHASHSEED": "0",
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
    }
    return run_or_kill(args, env, kill=kill_at >= 0, timeout=180)


@pytest.mark.timeout(300)
def test_sigkill_and_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    uninterrupted = run(script, tmp_path / "whole", kill_at=-1)
    killed = run(script, tmp_path / "killed", kill_at=KILL_AT)
    assert f"step {KILL_AT} " in killed
    resumed = run(script, tmp_path / "killed", kill_at=-1)
    assert "at step 6" in resumed.splitlines()[0], resumed
    assert digest(resumed) == digest(uninterrupted)
    # The redone and later steps saw the uninterrupted run's batches and losses.
    later = [line for line in resumed.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in later] == [str(s) for s in range(7, STEPS + 1)]
    assert all(line in uninterrupted.splitlines() for line in later)
