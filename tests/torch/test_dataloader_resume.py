"""A torch training run killed with SIGKILL and resumed ends with the uninterrupted weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.timeout(180)

TRAIN = textwrap.dedent(
    """
    import os, sys, time
    import torch
    from torch.utils.data import TensorDataset
    import pipestate.torch as pt

    def main():
        out, pause = sys.argv[1], float(sys.argv[2])
        generator = torch.Generator().manual_seed(1)
        xs = torch.randn(80, 8, generator=generator)
        noise = 0.1 * torch.randn(80, 1, generator=generator)
        ys = xs @ torch.randn(8, 1, generator=generator) + noise
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
        loader = pt.DataLoader(
            TensorDataset(xs, ys),
            batch_size=8,
            shuffle=True,
            num_workers=2,
            persistent_workers=True,
            generator=torch.Generator().manual_seed(2),
        )
        path = os.path.join(out, "checkpoint.pt")
        start = 0
        if os.path.exists(path):
            saved = torch.load(path, weights_only=False)
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            loader.load_state_dict(saved["loader"])
            start = saved["epoch"]
            print("resumed", start, saved["step"], flush=True)
        step = 0 if start == 0 and not os.path.exists(path) else saved["step"]
        for epoch in range(start, 2):
            loader.set_epoch(epoch)
            for x, y in loader:
                loss = torch.nn.functional.mse_loss(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                step += 1
                state = {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "loader": loader.state_dict(),
                    "epoch": epoch,
                    "step": step,
                }
                torch.save(state, path + ".tmp")
                os.replace(path + ".tmp", path)  # the checkpoint is whole or absent
                print("saved", step, flush=True)
                time.sleep(pause)
        torch.save(model.state_dict(), os.path.join(out, "final.pt"))
        print("done", step, flush=True)

    main()
    """
)


def _run(script: Path, out: Path, pause: float = 0.0) -> str:
    done = subprocess.run(
        [sys.executable, str(script), str(out), str(pause)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_sigkill_and_resume_gives_the_uninterrupted_weights_bit_for_bit(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    reference.mkdir()
    killed.mkdir()
    assert _run(script, reference).split()[-2:] == ["done", "20"]

    proc = subprocess.Popen(
        [sys.executable, str(script), str(killed), "0.02"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.split() == ["saved", "14"]:  # mid epoch 1 (10 batches an epoch)
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(30)
    assert not (killed / "final.pt").exists()
    resumed = _run(script, killed)
    assert resumed.startswith("resumed 1 ")
    assert resumed.split()[-2:] == ["done", "20"]

    expected = torch.load(reference / "final.pt")
    actual = torch.load(killed / "final.pt")
    assert list(actual) == list(expected)
    for name, value in expected.items():
        assert torch.equal(actual[name], value), name
