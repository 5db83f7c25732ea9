"""pipestate demo: a training run killed with SIGKILL resumes at the exact batch.

A small logistic-regression model (NumPy) is trained by
``pipestate.training.Estimator`` on a synthetic dataset read through a
pipeline with global_shuffle, map, filter, batch and prefetch. Every
``SAVE_EVERY`` steps the model (with the global step) and the input pipeline
(``CheckpointInputPipelineHook``) are checkpointed.

The demo runs training three times, each in a child process:

1. an uninterrupted reference run of ``STEPS`` steps;
2. the same run, killed with SIGKILL part-way, at a moment chosen at random;
3. a resumed run on the killed run's directory, which restores the newest
   checkpoints and trains on to ``STEPS``.

Each step logs the step number, a digest of its batch and the loss. The demo
checks that the killed run's steps up to its last checkpoint followed by the
resumed run's steps are exactly the reference run's steps: the same batches in
the same order, the same losses, the same final model.

Run: python examples/demo.py
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import pipestate as ps

STEPS = 300
SAVE_EVERY = 25
EXAMPLES = 20_000
FEATURES = 16
BATCH = 64


# ----------------------------------------------------------------- the model
def make_data() -> tuple[np.ndarray, np.ndarray]:
    """A fixed synthetic binary classification problem."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((EXAMPLES, FEATURES)).astype(np.float32)
    w = rng.standard_normal(FEATURES).astype(np.float32)
    noise = 0.5 * rng.standard_normal(EXAMPLES).astype(np.float32)
    y = (x @ w + noise > 0).astype(np.float32)
    return x, y


def scale(x: np.ndarray, y: np.float32) -> tuple[np.ndarray, np.float32]:
    return x * np.float32(0.5), y


def informative(x: np.ndarray, y: np.float32) -> bool:
    # Drops about 8% of the examples, those with a near-zero first feature.
    return bool(abs(x[0]) > 0.05)


def input_fn() -> ps.Dataset:
    x, y = make_data()
    return (
        ps.Dataset.from_tensor_slices((x, y))
        .global_shuffle(seed=2026)
        .repeat()
        .map(scale)
        .filter(informative)
        .batch(BATCH, drop_remainder=True)
        .prefetch(2)
    )


def make_model() -> ps.checkpoint.AutoTrackable:
    model = ps.checkpoint.AutoTrackable()
    model.w = ps.Variable(np.zeros(FEATURES, np.float32))
    model.b = ps.Variable(np.float32(0.0))
    return model


class StepLog(ps.training.SessionRunHook):
    """Appends ``step digest loss`` for every step to a file, and prints the step."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last: tuple[str, float] | None = None
        self.first_step: int | None = None

    def after_run(self, run_context: Any, run_values: Any) -> None:
        assert self.last is not None
        digest, loss = self.last
        step = run_context.session.global_step
        if self.first_step is None:
            self.first_step = step
        line = f"{step} {digest} {loss!r}\n"
        with self.path.open("a") as f:
            f.write(line)
        print(step, flush=True)


def train(run_dir: Path) -> None:
    """One training process: resume from run_dir if it has checkpoints, train to STEPS."""
    started = time.perf_counter()
    log = StepLog(run_dir / "steps.log")
    first_step: list[float] = []

    def train_step(model: Any, x: np.ndarray, y: np.ndarray) -> float:
        if not first_step:
            first_step.append(time.perf_counter())
        logits = x @ model.w.numpy() + model.b.numpy()
        p = 1.0 / (1.0 + np.exp(-logits))
        loss = float(np.mean(-(y * np.log(p + 1e-7) + (1 - y) * np.log(1 - p + 1e-7))))
        grad = p - y
        model.w.assign(model.w.numpy() - 0.5 * (x.T @ grad) / len(y))
        model.b.assign(model.b.numpy() - 0.5 * np.float32(grad.mean()))
        log.last = (hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()[:16], loss)
        return loss

    config = ps.training.RunConfig(
        model_dir=str(run_dir), save_checkpoints_steps=SAVE_EVERY, log_step_count_steps=None
    )
    estimator = ps.training.Estimator(make_model(), train_step, config=config)
    hooks = [ps.data.CheckpointInputPipelineHook(estimator), log]
    estimator.train(input_fn, hooks=hooks, max_steps=STEPS)
    model = estimator.model
    summary = {
        "startup_to_first_step_ms": (first_step[0] - started) * 1e3 if first_step else None,
        "first_step": log.first_step,
        "w": model.w.numpy().tolist(),
        "b": float(model.b.numpy()),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))


# ----------------------------------------------------------------- the demo
def child(run_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "train", str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def finish(process: subprocess.Popen[str]) -> None:
    _, err = process.communicate(timeout=120)
    if process.returncode != 0:
        raise SystemExit(f"training process failed:\n{err}")


def read_log(run_dir: Path) -> dict[int, str]:
    steps = {}
    for line in (run_dir / "steps.log").read_text().splitlines():
        step, rest = line.split(" ", 1)
        steps[int(step)] = rest
    return steps


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="pipestate-demo-") as tmp:
        reference_dir, run_dir = Path(tmp, "reference"), Path(tmp, "run")
        reference_dir.mkdir()
        run_dir.mkdir()

        print(f"pipeline: {input_fn()!r}")
        print(f"training {STEPS} steps, checkpointing model and input every {SAVE_EVERY} steps")
        start = time.perf_counter()
        finish(child(reference_dir))
        print(f"1. uninterrupted run: {STEPS} steps in {time.perf_counter() - start:.1f} s")

        kill_at = random.randint(SAVE_EVERY + 1, STEPS - SAVE_EVERY)
        process = child(run_dir)
        assert process.stdout is not None
        for line in process.stdout:
            if int(line) >= kill_at:
                process.send_signal(signal.SIGKILL)
                break
        process.wait()
        killed = read_log(run_dir)
        print(f"2. second run killed with SIGKILL after step {max(killed)}")

        process = child(run_dir)
        finish(process)
        resumed = read_log(run_dir)
        summary = json.loads((run_dir / "summary.json").read_text())
        reference_summary = json.loads((reference_dir / "summary.json").read_text())
        reference = read_log(reference_dir)

    # The resumed process appended its steps after the killed one's: the last
    # occurrence of each step is the one that counts.
    print(
        f"3. resumed run restored the checkpoint of step {summary['first_step'] - 1} and "
        f"trained to step {max(resumed)}; restoring model and input and reading the first "
        f"batch took {summary['startup_to_first_step_ms']:.0f} ms (starting fresh: "
        f"{reference_summary['startup_to_first_step_ms']:.0f} ms)"
    )
    same_batches = resumed == reference
    same_model = summary["w"] == reference_summary["w"] and summary["b"] == reference_summary["b"]
    print(
        "the killed + resumed run trained on exactly the same batches, in the same order, "
        f"as the uninterrupted run: {'YES' if same_batches else 'NO'}"
    )
    final_loss = reference[STEPS].split()[1]
    print(
        f"it reached the same loss ({final_loss}) and the same model, bit for bit: "
        f"{'YES' if same_model and same_batches else 'NO'}"
    )
    return 0 if same_batches and same_model else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "train":
        train(Path(sys.argv[2]))
    else:
        sys.exit(main())
