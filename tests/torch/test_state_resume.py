"""A real torch training loop killed with SIGKILL resumes from its latest checkpoint bit for bit.

The loop has dropout (so the RNG matters), AdamW, OneCycleLR, a GradScaler
and an RNGState; its batches draw from torch's, NumPy's and Python's global
generators. It saves every few steps with a CheckpointManager. One run goes
uninterrupted; another is killed with SIGKILL between saves, and a new
process resumes it from the latest checkpoint. Both must end with the same
bytes in every parameter, optimizer slot and scheduler value.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests._resume import digest, run_or_kill

torch = pytest.importorskip("torch")

STEPS = 12
SAVE_EVERY = 3
KILL_AT = 8  # after the save of step 6: steps 7 and 8 are lost and redone

TRAIN = r"""
import hashlib, os, random, sys, time
import numpy as np
import torch
from pipestate.checkpoint import Checkpoint, CheckpointManager
from pipestate.checkpoint._rng import RNGState

torch.set_num_threads(1)
directory = sys.argv[1]
steps, save_every, kill_at = (int(a) for a in sys.argv[2:5])
torch.manual_seed(0)
np.random.seed(0)
random.seed(0)
model = torch.nn.Sequential(
    torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(32, 1)
)
optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=steps)
scaler = torch.amp.GradScaler("cpu", init_scale=256.0, growth_interval=2)
ckpt = Checkpoint(
    model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, rng=RNGState(), step=0
)
manager = CheckpointManager(ckpt, directory, max_to_keep=2)
restored = manager.restore_or_initialize()
print(f"resumed {restored} at step {ckpt.step}", flush=True)
# Fresh process, fresh global state: whatever it is, the restore replaced it.
while ckpt.step < steps:
    x = torch.randn(16, 8)
    noise = torch.from_numpy(np.random.rand(16, 1).astype(np.float32))
    y = x.sum(dim=1, keepdim=True) + noise * random.random()
    loss = torch.nn.functional.mse_loss(model(x), y)
    optimizer.zero_grad()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    ckpt.step += 1
    if ckpt.step % save_every == 0:
        manager.save()
    print(f"step {ckpt.step} loss {loss.item():.6f}", flush=True)
    if ckpt.step == kill_at:
        print("waiting", flush=True)
        time.sleep(120)
digest = hashlib.sha256()
for tensor in model.state_dict().values():
    digest.update(tensor.numpy().tobytes())
for state in optimizer.state_dict()["state"].values():
    for tensor in state.values():
        digest.update(tensor.numpy().tobytes())
digest.update(repr(scheduler.get_last_lr()).encode())
digest.update(repr(scaler.get_scale()).encode())
print("digest", digest.hexdigest(), flush=True)
"""


def run(script: Path, directory: Path, kill_at: int) -> str:
    """Run the loop to the end (or until the test kills it); return its output."""
    args = [sys.executable, str(script), str(directory), str(STEPS), str(SAVE_EVERY), str(kill_at)]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return run_or_kill(args, env, kill=kill_at >= 0, timeout=120)


@pytest.mark.timeout(240)
def test_sigkill_and_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    uninterrupted = run(script, tmp_path / "whole", kill_at=-1)
    killed = run(script, tmp_path / "killed", kill_at=KILL_AT)
    assert f"step {KILL_AT} " in killed
    resumed = run(script, tmp_path / "killed", kill_at=-1)
    assert "at step 6" in resumed.splitlines()[0], resumed
    assert digest(resumed) == digest(uninterrupted)
    # The losses of the redone and later steps are the uninterrupted run's too.
    later = [line for line in resumed.splitlines() if line.startswith("step ")]
    assert later
    assert all(line in uninterrupted.splitlines() for line in later)
