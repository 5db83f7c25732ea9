"""RunConfig: save settings and the cluster read from TF_CONFIG or torchrun's environment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipestate.training import RunConfig, TaskType


def test_defaults() -> None:
    config = RunConfig()
    assert config.model_dir is None
    assert (config.save_checkpoints_steps, config.save_checkpoints_secs) == (None, 600)
    assert config.keep_checkpoint_max == 5
    assert config.keep_checkpoint_every_n_hours == 10000
    assert config.log_step_count_steps == 100
    assert (config.task_type, config.task_id) == ("worker", 0)
    assert (config.num_worker_replicas, config.num_ps_replicas) == (1, 0)
    assert config.is_chief
    assert config.cluster_spec == {}
    assert config.global_id_in_cluster == 0


@pytest.mark.parametrize(
    ("kwargs", "steps", "secs"),
    [
        pytest.param({"save_checkpoints_steps": 10}, 10, None, id="steps"),
        pytest.param({"save_checkpoints_secs": 30}, None, 30, id="secs"),
        pytest.param({"save_checkpoints_steps": None}, None, None, id="steps-none"),
        pytest.param(
            {"save_checkpoints_steps": None, "save_checkpoints_secs": None},
            None,
            None,
            id="disabled",
        ),
    ],
)
def test_save_frequencies(kwargs: dict[str, Any], steps: int | None, secs: int | None) -> None:
    config = RunConfig("d", **kwargs)
    assert (config.save_checkpoints_steps, config.save_checkpoints_secs) == (steps, secs)


def test_model_dir_path_like(tmp_path: Path) -> None:
    assert RunConfig(tmp_path).model_dir == str(tmp_path)
    assert RunConfig("s3://bucket/run").model_dir == "s3://bucket/run"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        pytest.param(
            {"save_checkpoints_steps": 1, "save_checkpoints_secs": 1},
            ValueError,
            "cannot be both set",
            id="both",
        ),
        pytest.param({"save_checkpoints_steps": 0}, ValueError, "must be >= 1", id="zero-steps"),
        pytest.param({"save_checkpoints_secs": 0}, ValueError, "must be positive", id="zero-secs"),
        pytest.param({"save_checkpoints_secs": "1"}, TypeError, "a number", id="str-secs"),
        pytest.param({"keep_checkpoint_max": 0}, ValueError, "keep_checkpoint_max", id="keep"),
        pytest.param(
            {"keep_checkpoint_every_n_hours": -1},
            ValueError,
            "keep_checkpoint_every_n_hours must be a positive, finite number of hours, got -1",
            id="hours",
        ),
        pytest.param({"log_step_count_steps": 1.5}, TypeError, "must be an int", id="log"),
        pytest.param({"model_dir": 3}, TypeError, "model_dir must be a path", id="model-dir"),
        pytest.param({"model_dir": ""}, ValueError, "non-empty", id="empty-model-dir"),
    ],
)
def test_errors(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        RunConfig(**kwargs)


def test_replace() -> None:
    config = RunConfig("a", save_checkpoints_steps=5, keep_checkpoint_max=3)
    other = config.replace(model_dir="b")
    assert other.model_dir == "b"
    assert other.save_checkpoints_steps == 5
    assert other.keep_checkpoint_max == 3
    assert config.model_dir == "a"
    secs = config.replace(save_checkpoints_secs=20)
    assert (secs.save_checkpoints_steps, secs.save_checkpoints_secs) == (None, 20)
    with pytest.raises(ValueError, match="unknown settings"):
        config.replace(save_every=3)
    with pytest.raises(ValueError, match="cannot be both set"):
        config.replace(save_checkpoints_steps=1, save_checkpoints_secs=1)
    assert "save_checkpoints_steps=5" in repr(config)


# --------------------------------------------------------------------------- TF_CONFIG
CLUSTER = {"chief": ["c0:2222"], "worker": ["w0:2222", "w1:2222", "w2:2222"], "ps": ["p0:2222"]}


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        pytest.param({"type": "chief", "index": 0}, ("chief", 0, 4, 1, True, 0), id="chief"),
        pytest.param({"type": "worker", "index": 2}, ("worker", 2, 4, 1, False, 3), id="worker-2"),
        pytest.param({"type": "ps", "index": 0}, ("ps", 0, 4, 1, False, 4), id="ps"),
        pytest.param(
            {"type": "evaluator", "index": 0}, ("evaluator", 0, 0, 0, False, None), id="evaluator"
        ),
    ],
)
def test_tf_config(
    monkeypatch: pytest.MonkeyPatch, task: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": CLUSTER, "task": task}))
    monkeypatch.setenv("RANK", "5")  # TF_CONFIG wins over torchrun's variables
    monkeypatch.setenv("WORLD_SIZE", "8")
    config = RunConfig("d")
    got = (
        config.task_type,
        config.task_id,
        config.num_worker_replicas,
        config.num_ps_replicas,
        config.is_chief,
        config.global_id_in_cluster,
    )
    assert got == expected
    assert config.cluster_spec == (CLUSTER if task["type"] != "evaluator" else {})


def test_tf_config_sparse_job_and_master(monkeypatch: pytest.MonkeyPatch) -> None:
    tf_config = {
        "cluster": {"master": ["m:1"], "worker": {"1": "w1:1", "0": "w0:1"}},
        "task": {"type": "master", "index": "0"},
    }
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    config = RunConfig()
    assert (config.task_type, config.is_chief, config.num_worker_replicas) == ("master", True, 3)
    assert config.cluster_spec["worker"] == ["w0:1", "w1:1"]


def test_tf_config_without_cluster_is_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF_CONFIG", json.dumps({"task": {"type": "worker", "index": 0}}))
    config = RunConfig()
    assert (config.task_type, config.num_worker_replicas, config.is_chief) == ("worker", 1, True)
    monkeypatch.setenv("TF_CONFIG", "")
    assert RunConfig().num_worker_replicas == 1
    assert TaskType.CHIEF == "chief"
    assert TaskType.EVALUATOR == "evaluator"


@pytest.mark.parametrize(
    ("tf_config", "match"),
    [
        pytest.param("{not json", "not valid JSON", id="json"),
        pytest.param("[1]", "must be a JSON object", id="not-object"),
        pytest.param({"cluster": CLUSTER}, "task type must be set", id="no-type"),
        pytest.param(
            {"cluster": CLUSTER, "task": {"type": "worker"}},
            "task index must be set",
            id="no-index",
        ),
        pytest.param(
            {"cluster": CLUSTER, "task": {"type": "worker", "index": -1}},
            "non-negative",
            id="negative",
        ),
        pytest.param(
            {"cluster": CLUSTER, "task": {"type": "worker", "index": 3}},
            "3 is not a valid task_id for task_type worker",
            id="index-out-of-range",
        ),
        pytest.param(
            {"cluster": CLUSTER, "task": {"type": "gpu", "index": 0}},
            "gpu is not a valid task_type",
            id="unknown-type",
        ),
        pytest.param(
            {"cluster": {"worker": ["a", "b"]}, "task": {"type": "worker", "index": 0}},
            'must have one "chief" node',
            id="no-chief",
        ),
        pytest.param(
            {"cluster": {"chief": ["a", "b"]}, "task": {"type": "chief", "index": 0}},
            'only one "chief" node',
            id="two-chiefs",
        ),
        pytest.param(
            {"cluster": {"chief": ["a"], "master": ["b"]}, "task": {"type": "chief", "index": 0}},
            "both a",
            id="chief-and-master",
        ),
        pytest.param(
            {"task": {"type": "ps", "index": 0}}, "task type must be WORKER", id="local-ps"
        ),
        pytest.param(
            {"task": {"type": "worker", "index": 1}}, "task index must be 0", id="local-1"
        ),
        pytest.param({"cluster": {"worker": "a"}}, "must be a list of addresses", id="bad-job"),
        pytest.param({"cluster": {"worker": [1]}}, "addresses as str", id="bad-address"),
        pytest.param({"cluster": [1]}, "must be an object of jobs", id="bad-cluster"),
        pytest.param({"task": "worker"}, "'task' must be an object", id="bad-task"),
        pytest.param(
            {"cluster": CLUSTER, "task": {"type": "worker", "index": "x"}},
            "must be an integer",
            id="bad-id",
        ),
    ],
)
def test_tf_config_errors(monkeypatch: pytest.MonkeyPatch, tf_config: Any, match: str) -> None:
    text = tf_config if isinstance(tf_config, str) else json.dumps(tf_config)
    monkeypatch.setenv("TF_CONFIG", text)
    with pytest.raises(ValueError, match=match):
        RunConfig()


# ---------------------------------------------------------------------------- torchrun
@pytest.mark.parametrize(
    ("rank", "expected"),
    [
        pytest.param("0", ("worker", 0, 4, True, 0), id="rank-0"),
        pytest.param("3", ("worker", 3, 4, False, 3), id="rank-3"),
    ],
)
def test_torchrun(monkeypatch: pytest.MonkeyPatch, rank: str, expected: tuple[Any, ...]) -> None:
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", rank)
    config = RunConfig()
    got = (
        config.task_type,
        config.task_id,
        config.num_worker_replicas,
        config.is_chief,
        config.global_id_in_cluster,
    )
    assert got == expected


def test_torchrun_single_process_is_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert RunConfig().num_worker_replicas == 1


@pytest.mark.parametrize(
    ("env", "match"),
    [
        pytest.param({"RANK": "1"}, "sets RANK but not WORLD_SIZE", id="no-world"),
        pytest.param({"WORLD_SIZE": "2"}, "sets WORLD_SIZE but not RANK", id="no-rank"),
        pytest.param({"RANK": "2", "WORLD_SIZE": "2"}, "not a rank in", id="rank-too-big"),
        pytest.param({"RANK": "a", "WORLD_SIZE": "2"}, "must be an integer", id="not-int"),
    ],
)
def test_torchrun_errors(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], match: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=match):
        RunConfig()
