"""The hooks driving a hand-written loop, as docs/training.md shows it."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

import pipestate as ps


def run_job(model_dir: Path, steps: int, seen: list[int], *, crash_at: int | None = None) -> int:
    """One job of the documented hand-written loop; returns the global step it ended at."""
    # -- as in docs/training.md -------------------------------------------------------------
    config = ps.training.RunConfig(str(model_dir), save_checkpoints_steps=4)
    total = ps.Variable(np.zeros((), np.int64))
    global_step = ps.Variable(np.zeros((), np.int64))
    ckpt = ps.Checkpoint(total=total, global_step=global_step)
    latest = ps.latest_checkpoint(str(model_dir))
    if latest is not None:
        ckpt.restore(latest).assert_existing_objects_matched()

    iterator = iter(ps.Dataset.range(100).shuffle(10, seed=7))
    session = ps.training.Session(global_step=global_step, iterators=[iterator], checkpoint=ckpt)
    hooks = [
        ps.data.CheckpointInputPipelineHook(config),
        ps.training.StopAtStepHook(num_steps=steps),
        ps.training.CheckpointSaverHook(str(model_dir), save_steps=config.save_checkpoints_steps),
    ]

    def step() -> float:
        x = int(next(iterator))  # fetch inside the step: hooks restore the input in before_run
        if x == crash_at:
            raise RuntimeError("the machine went away")
        total.assign_add(x)
        seen.append(x)
        return float(x)

    with ps.training.MonitoredSession(session, hooks) as mon:
        while not mon.should_stop():
            mon.run(step)
    # ----------------------------------------------------------------------------------------
    return session.global_step


def test_hand_written_loop_resumes_model_and_input(tmp_path: Path) -> None:
    full = [int(x) for x in ps.Dataset.range(100).shuffle(10, seed=7)]
    seen: list[int] = []
    assert run_job(tmp_path, 6, seen) == 6
    assert run_job(tmp_path, 6, seen) == 12
    assert seen == full[:12]


def test_hand_written_loop_after_a_crash(tmp_path: Path) -> None:
    full = [int(x) for x in ps.Dataset.range(100).shuffle(10, seed=7)]
    seen: list[int] = []
    with contextlib.suppress(RuntimeError):
        run_job(tmp_path, 10, seen, crash_at=full[6])
    assert seen == full[:6]
    # The last save was at step 4: the model and the input both resume there.
    resumed: list[int] = []
    assert run_job(tmp_path, 8, resumed) == 12
    assert resumed == full[4:12]
    total = ps.checkpoint.load_variable(ps.latest_checkpoint(str(tmp_path)), "total")
    assert int(total) == sum(full[:12])  # every element counted exactly once in the model
