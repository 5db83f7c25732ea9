"""CheckpointInputPipelineHook: the TF scenarios, distributed naming and every error."""

from __future__ import annotations

import doctest
import json
import logging
import os
import sys
import threading
import types
import uuid
from pathlib import Path
from typing import Any

import pytest

import pipestate as ps
from pipestate.training import CheckpointInputPipelineHook, RunConfig
from pipestate.training._input_hook import CheckpointInputPipelineHook as HookClass
from tests.training.conftest import Recorder, record_step, recorder_estimator


def range_input(n: int = 10) -> Any:
    return lambda: ps.Dataset.range(n)


def files(directory: Path) -> list[str]:
    """The directory's files, without the managers' writer locks (``.<state file>.lock``)."""
    return sorted(n for n in os.listdir(directory) if not n.endswith(".lock"))


def test_exported_from_data_and_training() -> None:
    assert ps.data.CheckpointInputPipelineHook is HookClass
    assert ps.training.CheckpointInputPipelineHook is HookClass
    assert "CheckpointInputPipelineHook" in dir(ps.data)
    with pytest.raises(AttributeError, match="no attribute 'NoSuchHook'"):
        _ = ps.data.NoSuchHook  # type: ignore[attr-defined]


def test_seed_scenario_consecutive_data_then_restart_without_hook(tmp_path: Path) -> None:
    est, model = recorder_estimator(tmp_path)
    est.train(range_input(), hooks=[ps.data.CheckpointInputPipelineHook(est)], steps=2)
    assert model.seen == [0, 1]
    est.train(range_input(), hooks=[ps.data.CheckpointInputPipelineHook(est)], steps=2)
    assert model.seen == [0, 1, 2, 3]  # no restart of the input
    est.train(range_input(), steps=2)
    assert model.seen == [0, 1, 2, 3, 0, 1]  # without the hook the input starts again
    assert est.global_step == 6


def test_same_hook_instance_serves_several_train_calls(tmp_path: Path) -> None:
    est, model = recorder_estimator(tmp_path)
    hook = CheckpointInputPipelineHook(est)
    for _ in range(3):
        est.train(range_input(), hooks=[hook], steps=2)
    assert model.seen == [0, 1, 2, 3, 4, 5]


def test_restores_in_a_new_process(tmp_path: Path) -> None:
    """A new Estimator over the same model_dir (a restarted job) resumes model and input."""
    est, _model = recorder_estimator(tmp_path)
    est.train(range_input(), hooks=[CheckpointInputPipelineHook(est)], steps=3)
    est2, model2 = recorder_estimator(tmp_path)
    est2.train(range_input(), hooks=[CheckpointInputPipelineHook(est2)], steps=3)
    assert model2.seen == [3, 4, 5]
    assert int(model2.total.numpy()) == sum(range(6))
    assert est2.global_step == 6


def test_initial_save_when_no_input_checkpoint(tmp_path: Path) -> None:
    est, _ = recorder_estimator(tmp_path)
    seen_at_first_step: list[list[str]] = []

    class Probe(ps.training.SessionRunHook):
        def after_run(self, run_context: Any, run_values: Any) -> None:
            if not seen_at_first_step:
                seen_at_first_step.append(files(tmp_path))

    est.train(range_input(), hooks=[CheckpointInputPipelineHook(est), Probe()], steps=1)
    assert "input.ckpt-0.index" in seen_at_first_step[0]
    assert "checkpoint_input" in seen_at_first_step[0]
    # The initial checkpoint holds the fresh iterator: restoring it starts at element 0.
    it = iter(ps.Dataset.range(10))
    next(it)
    restore = ps.Checkpoint(
        iterators=[ps.data.make_saveable_from_iterator(it)], world_size=0, task=-1
    )
    restore.restore(str(tmp_path / "input.ckpt-0")).assert_consumed()
    assert int(next(it)) == 0
    # The job's shape is saved with the iterators.
    assert (restore.world_size, restore.task) == (1, 0)


def test_restores_latest_instead_of_saving(tmp_path: Path) -> None:
    est, model = recorder_estimator(tmp_path)
    est.train(range_input(), hooks=[CheckpointInputPipelineHook(est)], steps=2)
    before = (tmp_path / "input.ckpt-2.index").stat().st_mtime_ns
    est.train(range_input(), hooks=[CheckpointInputPipelineHook(est)], steps=1)
    assert (tmp_path / "input.ckpt-2.index").stat().st_mtime_ns == before  # not rewritten
    assert model.seen == [0, 1, 2]


def test_saves_every_n_steps_and_at_end(tmp_path: Path) -> None:
    est, _model = recorder_estimator(tmp_path, save_checkpoints_steps=3, keep_checkpoint_max=None)
    est.train(range_input(20), hooks=[CheckpointInputPipelineHook(est)], steps=7)
    inputs = [f for f in files(tmp_path) if f.startswith("input.ckpt") and f.endswith(".index")]
    assert inputs == [f"input.ckpt-{n}.index" for n in (0, 3, 6, 7)]
    # The model's saver uses the same steps, so both halves of a resume agree.
    models = [f for f in files(tmp_path) if f.startswith("model.ckpt") and f.endswith(".index")]
    assert models == [f"model.ckpt-{n}.index" for n in (0, 3, 6, 7)]
    state = (tmp_path / "checkpoint_input").read_text()
    assert 'model_checkpoint_path: "input.ckpt-7"' in state
    assert "input" not in (tmp_path / "checkpoint").read_text()


def test_end_does_not_save_again_when_last_step_was_saved(tmp_path: Path) -> None:
    est, _ = recorder_estimator(tmp_path, save_checkpoints_steps=2)
    hook = CheckpointInputPipelineHook(est)
    est.train(range_input(), hooks=[hook], steps=4)
    mtime = (tmp_path / "input.ckpt-4.index").stat().st_mtime_ns
    saver = hook._checkpoint_saver_hook
    assert saver._timer.last_triggered_step() == 4
    hook.end(ps.training.Session(global_step=4, iterators=[iter(ps.Dataset.range(3))]))
    assert (tmp_path / "input.ckpt-4.index").stat().st_mtime_ns == mtime


def test_keeps_keep_checkpoint_max(tmp_path: Path) -> None:
    est, _ = recorder_estimator(tmp_path, save_checkpoints_steps=1, keep_checkpoint_max=2)
    est.train(range_input(), hooks=[CheckpointInputPipelineHook(est)], steps=5)
    inputs = [f for f in files(tmp_path) if f.startswith("input.ckpt") and f.endswith(".index")]
    assert inputs == ["input.ckpt-4.index", "input.ckpt-5.index"]


def test_save_secs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("pipestate.training._timer.time.time", lambda: clock[0])
    est, _ = recorder_estimator(tmp_path, save_checkpoints_steps=None, save_checkpoints_secs=10)

    class Tick(ps.training.SessionRunHook):
        def after_run(self, run_context: Any, run_values: Any) -> None:
            clock[0] += 4.0  # 4 s per step: due at steps 3 (12 s) and 6 (24 s)

    est.train(range_input(), hooks=[Tick(), CheckpointInputPipelineHook(est)], steps=7)
    inputs = [f for f in files(tmp_path) if f.startswith("input.ckpt") and f.endswith(".index")]
    assert inputs == [f"input.ckpt-{n}.index" for n in (0, 3, 6, 7)]


def test_never_changes_the_global_step(tmp_path: Path) -> None:
    _est, _ = recorder_estimator(tmp_path, save_checkpoints_steps=1)
    config = RunConfig(str(tmp_path / "loop"), save_checkpoints_steps=1)
    it = iter(ps.Dataset.range(5))
    session = ps.training.Session(global_step=7, iterators=[it])
    hook = CheckpointInputPipelineHook(config)
    with ps.training.MonitoredSession(session, [hook], increment_global_step=False) as mon:
        for _ in range(3):
            mon.run(lambda: next(it))
    assert session.global_step == 7
    assert files(tmp_path / "loop") == [
        "checkpoint_input",
        "input.ckpt-7.data-00000-of-00001",
        "input.ckpt-7.index",
    ]


def test_input_end_is_saved_and_resumes_at_the_end(tmp_path: Path) -> None:
    est, model = recorder_estimator(tmp_path)
    est.train(range_input(3), hooks=[CheckpointInputPipelineHook(est)], steps=10)
    assert model.seen == [0, 1, 2]
    assert est.global_step == 3
    est.train(range_input(3), hooks=[CheckpointInputPipelineHook(est)], steps=10)
    assert model.seen == [0, 1, 2]
    assert est.global_step == 3


def test_exactly_once_across_a_crash(tmp_path: Path) -> None:
    """A run that dies mid-way resumes from the last saved step, model and input together."""

    class CrashError(RuntimeError):
        pass

    def crashing_step(model: Recorder, features: Any, labels: Any) -> float:
        if int(features) == 8:
            raise CrashError("machine lost")
        return record_step(model, features, labels)

    config = RunConfig(str(tmp_path), save_checkpoints_steps=3)
    model = Recorder()
    est = ps.training.Estimator(model, crashing_step, config=config)
    with pytest.raises(CrashError):
        est.train(range_input(12), hooks=[CheckpointInputPipelineHook(est)])
    assert ps.latest_checkpoint(str(tmp_path)).endswith("model.ckpt-6")  # type: ignore[union-attr]
    model2 = Recorder()
    est2 = ps.training.Estimator(model2, record_step, config=config)
    est2.train(range_input(12), hooks=[CheckpointInputPipelineHook(est2)])
    assert model2.seen == [6, 7, 8, 9, 10, 11]
    assert int(model2.total.numpy()) == sum(range(12))  # nothing lost, nothing repeated
    assert int(model2.count.numpy()) == 12 == est2.global_step


def test_crash_between_input_and_model_saves_restores_the_matching_input(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The input was saved at step 6 but the model's save of step 6 was lost: input 3 is used."""
    config = RunConfig(str(tmp_path), save_checkpoints_steps=3)
    est, _ = recorder_estimator(tmp_path, save_checkpoints_steps=3)
    est.train(range_input(12), hooks=[CheckpointInputPipelineHook(est)], max_steps=6)
    for name in os.listdir(tmp_path):
        if name.startswith("model.ckpt-6"):
            os.remove(tmp_path / name)
    ps.checkpoint.update_checkpoint_state(
        str(tmp_path), str(tmp_path / "model.ckpt-3"), [str(tmp_path / "model.ckpt-3")]
    )
    assert ps.latest_checkpoint(str(tmp_path), "checkpoint_input").endswith("input.ckpt-6")  # type: ignore[union-attr]
    model = Recorder()
    resumed = ps.training.Estimator(model, record_step, config=config)
    with caplog.at_level(logging.INFO, logger="pipestate.training"):
        resumed.train(range_input(12), hooks=[CheckpointInputPipelineHook(resumed)])
    assert "saved at the global step 3, not the newer" in caplog.text
    assert model.seen == list(range(3, 12))
    assert int(model.total.numpy()) == sum(range(12))


def test_missing_input_checkpoint_of_the_step_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    est, _ = recorder_estimator(tmp_path, save_checkpoints_steps=3)
    est.train(range_input(12), hooks=[CheckpointInputPipelineHook(est)], max_steps=6)
    for name in os.listdir(tmp_path):
        if name.startswith("input.ckpt-6"):
            os.remove(tmp_path / name)
    ps.checkpoint.update_checkpoint_state(
        str(tmp_path),
        str(tmp_path / "input.ckpt-3"),
        [str(tmp_path / "input.ckpt-3")],
        latest_filename="checkpoint_input",
    )
    for name in os.listdir(tmp_path):
        if name.startswith("input.ckpt-0"):
            os.remove(tmp_path / name)
    model = Recorder()
    config = RunConfig(str(tmp_path), save_checkpoints_steps=3)
    resumed = ps.training.Estimator(model, record_step, config=config)
    with caplog.at_level(logging.WARNING, logger="pipestate.training"):
        resumed.train(range_input(12), hooks=[CheckpointInputPipelineHook(resumed)], max_steps=7)
    assert "No input checkpoint was saved at the global step 6" in caplog.text
    assert model.seen == [3]  # the input continues from its own checkpoint, as warned


def test_shuffled_streaming_pipeline_resumes_exactly(tmp_path: Path) -> None:
    def input_fn() -> ps.Dataset:
        return ps.Dataset.range(40).filter(lambda x: x % 3 != 0).shuffle(5, seed=3).batch(2)

    seen: list[list[int]] = []

    def step(model: Recorder, features: Any, labels: Any) -> None:
        seen.append([int(v) for v in features])
        model.count.assign_add(1)

    full = [[int(v) for v in b] for b in input_fn()]
    config = RunConfig(str(tmp_path), save_checkpoints_steps=2)
    for _ in range(3):
        est = ps.training.Estimator(Recorder(), step, config=config)
        est.train(input_fn, hooks=[CheckpointInputPipelineHook(est)], steps=3)
    assert seen == full[:9]


@pytest.mark.parametrize(
    ("tf_config", "basename", "state_file"),
    [
        pytest.param(
            {
                "cluster": {"chief": ["c:1"], "worker": ["w:1", "w:2"]},
                "task": {"type": "worker", "index": 1},
            },
            "input_worker_1.ckpt",
            "checkpoint_input_worker_1",
            id="worker-1",
        ),
        pytest.param(
            {
                "cluster": {"chief": ["c:1"], "worker": ["w:1"]},
                "task": {"type": "chief", "index": 0},
            },
            "input_chief_0.ckpt",
            "checkpoint_input_chief_0",
            id="chief",
        ),
        pytest.param(
            {"cluster": {"chief": ["c:1"], "ps": ["p:1"]}, "task": {"type": "chief", "index": 0}},
            "input.ckpt",
            "checkpoint_input",
            id="one-worker-replica-with-ps",
        ),
    ],
)
def test_distributed_names_from_tf_config(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tf_config: dict[str, Any],
    basename: str,
    state_file: str,
) -> None:
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    est, model = recorder_estimator(tmp_path)
    hook = CheckpointInputPipelineHook(est)
    assert (hook.checkpoint_basename, hook.latest_filename) == (basename, state_file)
    est.train(range_input(), hooks=[hook], steps=2)
    est.train(range_input(), hooks=[CheckpointInputPipelineHook(est)], steps=2)
    assert model.seen == [0, 1, 2, 3]
    names = files(tmp_path)
    assert f"{basename}-4.index" in names
    assert state_file in names
    other = "input.ckpt-4.index" if basename != "input.ckpt" else "input_chief_0.ckpt-4.index"
    assert other not in names


def test_distributed_names_from_torchrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "0")
    est, _ = recorder_estimator(tmp_path)
    est.train(range_input(), hooks=[CheckpointInputPipelineHook(est)], steps=2)
    names = files(tmp_path)
    assert "checkpoint_input_worker_2" in names
    assert "input_worker_2.ckpt-2.index" in names
    assert not any(n.startswith("model.ckpt") for n in names)  # only rank 0 saves the model


def test_workers_of_one_job_do_not_clash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ranks sharing model_dir each resume their own shard of the input."""
    seen: dict[int, list[int]] = {0: [], 1: []}
    for _ in range(2):
        for rank in (0, 1):
            monkeypatch.setenv("RANK", str(rank))
            monkeypatch.setenv("WORLD_SIZE", "2")
            model = Recorder()
            est = ps.training.Estimator(
                model, record_step, config=RunConfig(str(tmp_path), save_checkpoints_steps=1)
            )
            est.train(
                lambda r=rank: ps.Dataset.range(20).shard(2, r),  # type: ignore[misc]
                hooks=[CheckpointInputPipelineHook(est)],
                steps=2,
            )
            seen[rank] += model.seen
    assert seen == {0: [0, 2, 4, 6], 1: [1, 3, 5, 7]}


# ---------------------------------------------------------------------------------- errors
def test_bad_policy_raises_with_tf_message(tmp_path: Path) -> None:
    est, _ = recorder_estimator(tmp_path)
    with pytest.raises(
        ValueError,
        match=r"Invalid `ExternalStatePolicy.` Supported values include 'warn', 'ignore', and "
        r"'fail.' Received 'sometimes'",
    ):
        CheckpointInputPipelineHook(est, external_state_policy="sometimes")


@pytest.mark.parametrize(
    "policy",
    ["warn", "ignore", "fail", ps.data.ExternalStatePolicy.WARN, None],
    ids=["warn", "ignore", "fail", "enum", "none"],
)
def test_valid_policies(tmp_path: Path, policy: Any) -> None:
    est, _ = recorder_estimator(tmp_path)
    hook = CheckpointInputPipelineHook(est, policy)
    expected = "fail" if policy is None else ps.data.ExternalStatePolicy.coerce(policy).value
    assert hook.external_state_policy.value == expected


def test_neither_steps_nor_secs(tmp_path: Path) -> None:
    est, _ = recorder_estimator(tmp_path, save_checkpoints_steps=None, save_checkpoints_secs=None)
    with pytest.raises(ValueError, match="exactly one of save_checkpoints_steps and"):
        CheckpointInputPipelineHook(est)


def test_both_steps_and_secs(tmp_path: Path) -> None:
    config = types.SimpleNamespace(
        save_checkpoints_steps=10,
        save_checkpoints_secs=60,
        num_worker_replicas=1,
        task_type="worker",
        task_id=0,
        keep_checkpoint_max=5,
    )
    estimator = types.SimpleNamespace(model_dir=str(tmp_path), config=config)
    with pytest.raises(ValueError, match="exactly one of save_checkpoints_steps and"):
        CheckpointInputPipelineHook(estimator)


def test_no_iterators_to_save(tmp_path: Path) -> None:
    hook = CheckpointInputPipelineHook(RunConfig(str(tmp_path), save_checkpoints_steps=1))
    with pytest.raises(ValueError, match="found no iterators to save"):
        ps.training.MonitoredSession(ps.training.Session(), [hook])


def test_iterator_with_external_state_and_fail_policy(tmp_path: Path) -> None:
    est, _ = recorder_estimator(tmp_path)

    def input_fn() -> ps.Dataset:
        return ps.Dataset.range(5).map(lambda x: x, stateful=True)

    with pytest.raises(ValueError, match="external state"):
        est.train(input_fn, hooks=[CheckpointInputPipelineHook(est)], steps=1)
    assert not any(f.startswith("input") for f in files(tmp_path))


def test_external_state_with_warn_policy_saves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    est, model = recorder_estimator(tmp_path)

    def input_fn() -> ps.Dataset:
        return ps.Dataset.range(5).map(lambda x: x, stateful=True)

    with caplog.at_level(logging.WARNING, logger="pipestate.data"):
        est.train(input_fn, hooks=[CheckpointInputPipelineHook(est, "warn")], steps=2)
    assert "without the external state" in caplog.text
    est.train(input_fn, hooks=[CheckpointInputPipelineHook(est, "ignore")], steps=2)
    assert model.seen == [0, 1, 2, 3]


def test_no_model_dir() -> None:
    with pytest.raises(ValueError, match="needs a model_dir"):
        CheckpointInputPipelineHook(RunConfig(save_checkpoints_steps=1))


def test_not_an_estimator() -> None:
    with pytest.raises(TypeError, match="needs an Estimator"):
        CheckpointInputPipelineHook("runs/exp1")
    estimator = types.SimpleNamespace(model_dir="d", config=types.SimpleNamespace())
    with pytest.raises(TypeError, match=r"lacks \['save_checkpoints_steps'"):
        CheckpointInputPipelineHook(estimator)


def test_checkpoint_of_other_iterators_is_refused(tmp_path: Path) -> None:
    config = RunConfig(str(tmp_path), save_checkpoints_steps=1)
    a, b = iter(ps.Dataset.range(5)), iter(ps.Dataset.range(5))
    with ps.training.MonitoredSession(
        ps.training.Session(iterators=[a, b]), [CheckpointInputPipelineHook(config)]
    ) as mon:
        mon.run(lambda: next(a))
    session = ps.training.Session(iterators=[iter(ps.Dataset.range(5))])
    mon = ps.training.MonitoredSession(session, [CheckpointInputPipelineHook(config)])
    with pytest.raises(ps.errors.CheckpointMismatchError, match="does not hold the iterators"):
        mon.run(lambda: None)


def test_other_pipeline_definition_is_refused(tmp_path: Path) -> None:
    est, _ = recorder_estimator(tmp_path)
    est.train(range_input(10), hooks=[CheckpointInputPipelineHook(est)], steps=2)
    with pytest.raises(ValueError, match="saved from a different pipeline"):
        est.train(range_input(11), hooks=[CheckpointInputPipelineHook(est)], steps=2)


# ------------------------------------------------------------------------- the docstring example
def test_docstring_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    finder = doctest.DocTestFinder(recurse=False)
    (test,) = finder.find(HookClass, "CheckpointInputPipelineHook", globs={})
    assert "while True:" in test.docstring  # type: ignore[operator]
    assert "est.train(" in test.docstring  # type: ignore[operator]
    assert "metrics = est.evaluate(eval_input_fn)" in test.docstring  # type: ignore[operator]
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.summarize(verbose=False) == (0, len(test.examples))
    assert (tmp_path / "input_hook_example" / "checkpoint_input").exists()


def test_model_dir_on_an_fsspec_url() -> None:
    url = f"memory://input-hook-{uuid.uuid4().hex}"
    est, model = recorder_estimator(url, save_checkpoints_steps=2)
    for _ in range(2):
        est.train(range_input(), hooks=[CheckpointInputPipelineHook(est)], steps=3)
    assert model.seen == [0, 1, 2, 3, 4, 5]
    assert ps.latest_checkpoint(url, latest_filename="checkpoint_input") == f"{url}/input.ckpt-6"


# ------------------------------------------------------------------- jobs of changing sizes
def _global_input(config: RunConfig) -> Any:
    """Each task's shard of one global stream (the elastic shape: shard at the top)."""
    world, task = config.num_worker_replicas, config.global_id_in_cluster or 0
    return lambda: ps.Dataset.range(200).global_shuffle(seed=3).shard(world, task)


def _run_job(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    world: int,
    steps: int,
    launcher: str = "torchrun",
) -> dict[int, list[int]]:
    """``world`` tasks of one job training ``steps`` steps in lockstep (threads, a barrier).

    The tasks' configs come from torchrun's ``RANK`` / ``WORLD_SIZE``, or from
    ``TF_CONFIG`` (a chief and ``world - 1`` workers).
    """
    configs = []
    for rank in range(world):
        if launcher == "torchrun":
            monkeypatch.setenv("RANK", str(rank))
            monkeypatch.setenv("WORLD_SIZE", str(world))
        else:
            cluster: dict[str, list[str]] = {"chief": ["host:0"]}
            if world > 1:
                cluster["worker"] = [f"host:{i}" for i in range(1, world)]
            task = (
                {"type": "chief", "index": 0}
                if rank == 0
                else {"type": "worker", "index": rank - 1}
            )
            monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
        configs.append(RunConfig(str(tmp_path), save_checkpoints_steps=2))
    barrier = threading.Barrier(world, timeout=30)
    seen: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def lockstep(model: Recorder, features: Any, labels: Any) -> float:
        barrier.wait()  # the all-reduce of a data-parallel step
        return record_step(model, features, labels)

    def task(rank: int) -> None:
        model = Recorder()
        est = ps.training.Estimator(model, lockstep, config=configs[rank])
        try:
            est.train(
                _global_input(configs[rank]),
                hooks=[CheckpointInputPipelineHook(est)],
                steps=steps,
            )
        except BaseException as err:
            errors.append(err)
            barrier.abort()
        seen[rank] = model.seen

    threads = [threading.Thread(target=task, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return seen


@pytest.mark.parametrize("launcher", ["torchrun", "tf_config"])
def test_jobs_of_other_sizes_read_each_element_of_the_global_stream_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, launcher: str
) -> None:
    """2 tasks, then 3, then 1, then 2: per-task input files re-shard by the elastic rule."""
    consumed: list[int] = []
    for world, steps in [(2, 4), (3, 2), (1, 3), (2, 2)]:
        seen = _run_job(tmp_path, monkeypatch, world, steps, launcher)
        assert sorted(seen) == list(range(world))
        for elements in seen.values():
            assert len(elements) == steps
            consumed += elements
    stream = [int(x) for x in ps.Dataset.range(200).global_shuffle(seed=3).take(len(consumed))]
    assert len(consumed) == 2 * 4 + 3 * 2 + 1 * 3 + 2 * 2
    assert sorted(consumed) == sorted(stream)
    names = files(tmp_path)
    if launcher == "torchrun":
        assert "checkpoint_input_worker_2" in names  # per-task names stay
    else:
        assert {"checkpoint_input_chief_0", "checkpoint_input_worker_1"} <= set(names)
    assert "checkpoint_input" in names


def test_a_job_of_another_size_refuses_a_pipeline_that_cannot_reshard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def local_input(config: RunConfig) -> Any:
        world, task = config.num_worker_replicas, config.global_id_in_cluster or 0
        return lambda: ps.Dataset.range(200).shard(world, task).shuffle(8, seed=1)

    monkeypatch.setattr(sys.modules[__name__], "_global_input", local_input)
    _run_job(tmp_path, monkeypatch, 2, 2)
    with pytest.raises(ps.errors.CheckpointMismatchError, match="shuffle\\(buffer_size=8") as info:
        _run_job(tmp_path, monkeypatch, 3, 2)
    assert "re-partitions only by the elastic rule" in str(info.value)
