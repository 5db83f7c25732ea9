"""``RunConfig``: where a run saves, how often, and which task of a cluster this process is.

The task comes from the environment when the config is created:

* ``TF_CONFIG`` (TensorFlow's JSON: ``{"cluster": {"chief": [...], "worker":
  [...], "ps": [...]}, "task": {"type": "worker", "index": 1}}``), with
  TensorFlow's rules: ``num_worker_replicas`` counts the chief and the workers,
  an ``evaluator`` is outside the training cluster;
* otherwise torchrun's ``RANK`` and ``WORLD_SIZE``: every process is a
  ``"worker"`` whose ``task_id`` is its rank, rank 0 is the chief, and
  ``num_worker_replicas`` is the world size;
* otherwise one local worker.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from pipestate._validate import check_count, check_seconds

__all__ = ["RunConfig", "TaskType"]


class TaskType:
    """Task type names of a cluster (``TF_CONFIG``'s ``task.type``)."""

    MASTER = "master"
    PS = "ps"
    WORKER = "worker"
    CHIEF = "chief"
    EVALUATOR = "evaluator"


class _UseDefault:
    """The default of the save frequencies: 600 seconds unless the other one is given."""

    def __repr__(self) -> str:
        return "<default>"


_USE_DEFAULT: Any = _UseDefault()
_DEFAULT_SAVE_SECS = 600
_TF_CONFIG = "TF_CONFIG"


class _Cluster:
    """The task of this process, parsed from the environment."""

    def __init__(
        self,
        cluster_spec: dict[str, list[str]],
        task_type: str,
        task_id: int,
        num_worker_replicas: int,
        num_ps_replicas: int,
        is_chief: bool,
        global_id_in_cluster: int | None,
    ) -> None:
        self.cluster_spec = cluster_spec
        self.task_type = task_type
        self.task_id = task_id
        self.num_worker_replicas = num_worker_replicas
        self.num_ps_replicas = num_ps_replicas
        self.is_chief = is_chief
        self.global_id_in_cluster = global_id_in_cluster


_LOCAL = _Cluster({}, TaskType.WORKER, 0, 1, 0, True, 0)


def _int_field(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an integer, got {value!r}") from None


def _parse_cluster(raw: Any) -> dict[str, list[str]]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"TF_CONFIG's 'cluster' must be an object of jobs, got {raw!r:.200}")
    cluster: dict[str, list[str]] = {}
    for job, tasks in raw.items():
        if isinstance(tasks, Mapping):
            # TensorFlow allows sparse jobs: {"index": "address"}.
            ordered = sorted(
                tasks.items(), key=lambda kv: _int_field(kv[0], f"task index {kv[0]!r}")
            )
            addresses = [address for _, address in ordered]
        elif isinstance(tasks, list):
            addresses = tasks
        else:
            raise ValueError(
                f"TF_CONFIG's job {job!r} must be a list of addresses, got {tasks!r:.200}"
            )
        if not all(isinstance(a, str) for a in addresses):
            raise ValueError(f"TF_CONFIG's job {job!r} must list addresses as str: {tasks!r:.200}")
        if addresses:
            cluster[str(job)] = list(addresses)
    return cluster


def _from_tf_config(text: str) -> _Cluster:
    try:
        config = json.loads(text) if text.strip() else {}
    except ValueError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON ({err}): {text!r:.200}") from None
    if not isinstance(config, Mapping):
        raise ValueError(f"TF_CONFIG must be a JSON object, got {text!r:.200}")
    cluster = _parse_cluster(config.get("cluster", {}))
    task = config.get("task", {})
    if not isinstance(task, Mapping):
        raise ValueError(f"TF_CONFIG's 'task' must be an object, got {task!r:.200}")
    return _task_in_cluster(cluster, task) if cluster else _task_without_cluster(task)


def _task_without_cluster(task: Mapping[str, Any]) -> _Cluster:
    """The task of a ``TF_CONFIG`` without a cluster: the local worker or an evaluator."""
    task_type = task.get("type", TaskType.WORKER)
    task_id = _int_field(task.get("index", 0), "TF_CONFIG's task index")
    if task_type == TaskType.EVALUATOR:
        return _Cluster({}, task_type, task_id, 0, 0, False, None)
    if task_type != TaskType.WORKER:
        raise ValueError(
            f'If "cluster" is not set in TF_CONFIG, task type must be WORKER, got {task_type!r}.'
        )
    if task_id != 0:
        raise ValueError(
            f'If "cluster" is not set in TF_CONFIG, task index must be 0, got {task_id}.'
        )
    return _LOCAL


def _task_in_cluster(cluster: dict[str, list[str]], task: Mapping[str, Any]) -> _Cluster:
    """The task of a ``TF_CONFIG`` with a cluster, checked against it."""
    task_type = task.get("type")
    if not task_type or not isinstance(task_type, str):
        raise ValueError('If "cluster" is set in TF_CONFIG, task type must be set.')
    if task.get("index") is None:
        raise ValueError('If "cluster" is set in TF_CONFIG, task index must be set.')
    task_id = _int_field(task["index"], "TF_CONFIG's task index")
    if task_id < 0:
        raise ValueError(f"Task index must be non-negative number, got {task_id}.")
    if task_type == TaskType.EVALUATOR:
        # The evaluator is not part of the training cluster.
        return _Cluster({}, task_type, task_id, 0, 0, False, None)
    chief = TaskType.MASTER if TaskType.MASTER in cluster else TaskType.CHIEF
    if TaskType.MASTER in cluster and TaskType.CHIEF in cluster:
        raise ValueError('TF_CONFIG\'s "cluster" cannot have both a "master" and a "chief" job.')
    if chief not in cluster:
        raise ValueError(
            f'If "cluster" is set in TF_CONFIG, it must have one "chief" node: {cluster}'
        )
    if len(cluster[chief]) > 1:
        raise ValueError(f'The "cluster" in TF_CONFIG must have only one "{chief}" node: {cluster}')
    if task_type not in cluster:
        raise ValueError(
            f"{task_type} is not a valid task_type in the cluster_spec: {cluster}. Note that these "
            "values may be coming from the TF_CONFIG environment variable."
        )
    if task_id >= len(cluster[task_type]):
        raise ValueError(
            f"{task_id} is not a valid task_id for task_type {task_type} in the cluster_spec: "
            f"{cluster}. Note that these values may be coming from the TF_CONFIG environment "
            "variable."
        )
    return _Cluster(
        cluster,
        task_type,
        task_id,
        len(cluster[chief]) + len(cluster.get(TaskType.WORKER, [])),
        len(cluster.get(TaskType.PS, [])),
        task_type == chief,
        _global_id(cluster, chief, task_type, task_id),
    )


def _global_id(cluster: dict[str, list[str]], chief: str, task_type: str, task_id: int) -> int:
    """TensorFlow's global id: the chief, then workers, then ps, then other jobs by name."""
    order = [chief, TaskType.WORKER, TaskType.PS]
    order += sorted(job for job in cluster if job not in order)
    global_id = 0
    for job in order:
        if job == task_type:
            return global_id + task_id
        global_id += len(cluster.get(job, []))
    return global_id


def _from_torchrun(rank_text: str | None, world_text: str | None) -> _Cluster:
    if rank_text is None or world_text is None:
        present, missing = ("RANK", "WORLD_SIZE") if world_text is None else ("WORLD_SIZE", "RANK")
        raise ValueError(
            f"the environment sets {present} but not {missing}; torchrun sets both. Unset "
            f"{present} or set {missing}"
        )
    rank = _int_field(rank_text, "the RANK environment variable")
    world = _int_field(world_text, "the WORLD_SIZE environment variable")
    if world < 1 or not 0 <= rank < world:
        raise ValueError(
            f"RANK={rank_text!r} and WORLD_SIZE={world_text!r} in the environment are not a rank "
            "in [0, WORLD_SIZE)"
        )
    if world == 1:
        return _LOCAL
    return _Cluster({}, TaskType.WORKER, rank, world, 0, rank == 0, rank)


def _cluster_from_environment() -> _Cluster:
    tf_config = os.environ.get(_TF_CONFIG)
    if tf_config is not None and tf_config.strip():
        return _from_tf_config(tf_config)
    rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    if rank is not None or world is not None:
        return _from_torchrun(rank, world)
    return _LOCAL


class RunConfig:
    """Settings of a training run: its directory, when to save, and its place in a cluster.

    Args:
        model_dir: Where checkpoints go (local path or fsspec URL), or ``None``
            to let the runner choose.
        save_checkpoints_steps: Save every this many steps ...
        save_checkpoints_secs: ... or every this many seconds. Leaving both out
            saves every 600 seconds; giving one sets the other to ``None``;
            passing ``None`` for both disables checkpoints (as TensorFlow).
        keep_checkpoint_max: How many recent checkpoints to keep (``None``: all).
        keep_checkpoint_every_n_hours: Also keep one for good every this many hours.
        log_step_count_steps: Log the loss and global step every this many
            steps (``None``: never).

    ``task_type``, ``task_id``, ``num_worker_replicas``, ``num_ps_replicas``,
    ``is_chief``, ``cluster_spec`` and ``global_id_in_cluster`` are read from
    ``TF_CONFIG``, else from torchrun's ``RANK`` / ``WORLD_SIZE`` (each rank a
    ``"worker"``, rank 0 the chief), when the config is created.

    Raises:
        ValueError: When both save frequencies are given, for non-positive
            values, or for a malformed ``TF_CONFIG`` / torchrun environment.
        TypeError: For values of the wrong type.

    Example:
        >>> config = RunConfig("runs/exp1", save_checkpoints_steps=100)
        >>> config.save_checkpoints_steps, config.save_checkpoints_secs, config.num_worker_replicas
        (100, None, 1)
    """

    def __init__(
        self,
        model_dir: Any = None,
        save_checkpoints_steps: int | None = _USE_DEFAULT,
        save_checkpoints_secs: float | None = _USE_DEFAULT,
        keep_checkpoint_max: int | None = 5,
        keep_checkpoint_every_n_hours: float | None = 10000,
        log_step_count_steps: int | None = 100,
    ) -> None:
        steps, secs = save_checkpoints_steps, save_checkpoints_secs
        if steps is _USE_DEFAULT and secs is _USE_DEFAULT:
            steps, secs = None, _DEFAULT_SAVE_SECS
        elif secs is _USE_DEFAULT:
            secs = None
        elif steps is _USE_DEFAULT:
            steps = None
        elif steps is not None and secs is not None:
            raise ValueError(
                "save_checkpoints_steps and save_checkpoints_secs cannot be both set, got "
                f"save_checkpoints_steps={steps!r}, save_checkpoints_secs={secs!r}"
            )
        if model_dir is not None:
            if not isinstance(model_dir, (str, os.PathLike)):
                raise TypeError(
                    f"model_dir must be a path, a URL or None, got {model_dir!r:.100} of type "
                    f"{type(model_dir).__name__}"
                )
            model_dir = os.fspath(model_dir)
            if not isinstance(model_dir, str) or not model_dir:
                raise ValueError(f"model_dir must be a non-empty str path, got {model_dir!r}")
        self._model_dir: str | None = model_dir
        self._save_checkpoints_steps = check_count("save_checkpoints_steps", steps, minimum=1)
        if secs is not None:
            if isinstance(secs, (bool, np.bool_)) or not isinstance(secs, (int, float, np.number)):
                raise TypeError(f"save_checkpoints_secs must be a number or None, got {secs!r}")
            if not math.isfinite(float(secs)) or secs <= 0:
                raise ValueError(f"save_checkpoints_secs must be positive, got {secs!r}")
        self._save_checkpoints_secs: float | None = secs
        self._keep_checkpoint_max = check_count(
            "keep_checkpoint_max", keep_checkpoint_max, minimum=1
        )
        self._keep_checkpoint_every_n_hours = check_seconds(
            "keep_checkpoint_every_n_hours", keep_checkpoint_every_n_hours, unit="hours"
        )
        self._log_step_count_steps = check_count(
            "log_step_count_steps", log_step_count_steps, minimum=1
        )
        self._cluster = _cluster_from_environment()

    # ----------------------------------------------------------------- settings
    @property
    def model_dir(self) -> str | None:
        """The directory of the run's checkpoints."""
        return self._model_dir

    @property
    def save_checkpoints_steps(self) -> int | None:
        """Save every this many steps (or ``None``)."""
        return self._save_checkpoints_steps

    @property
    def save_checkpoints_secs(self) -> float | None:
        """Save every this many seconds (or ``None``)."""
        return self._save_checkpoints_secs

    @property
    def keep_checkpoint_max(self) -> int | None:
        """How many recent checkpoints are kept."""
        return self._keep_checkpoint_max

    @property
    def keep_checkpoint_every_n_hours(self) -> float | None:
        """One checkpoint is kept for good every this many hours."""
        return self._keep_checkpoint_every_n_hours

    @property
    def log_step_count_steps(self) -> int | None:
        """The loss is logged every this many steps."""
        return self._log_step_count_steps

    # ------------------------------------------------------------------ cluster
    @property
    def cluster_spec(self) -> dict[str, list[str]]:
        """``TF_CONFIG``'s cluster (job name to addresses); empty otherwise."""
        return {job: list(tasks) for job, tasks in self._cluster.cluster_spec.items()}

    @property
    def task_type(self) -> str:
        """This task's type: ``"chief"``, ``"worker"``, ``"ps"``, ``"evaluator"``..."""
        return self._cluster.task_type

    @property
    def task_id(self) -> int:
        """This task's index within its type."""
        return self._cluster.task_id

    @property
    def num_worker_replicas(self) -> int:
        """How many tasks train: the chief and the workers (0 for an evaluator)."""
        return self._cluster.num_worker_replicas

    @property
    def num_ps_replicas(self) -> int:
        """How many parameter servers the cluster has."""
        return self._cluster.num_ps_replicas

    @property
    def is_chief(self) -> bool:
        """Whether this task saves the model's checkpoints."""
        return self._cluster.is_chief

    @property
    def global_id_in_cluster(self) -> int | None:
        """A unique id of this task in the training cluster (``None`` for an evaluator)."""
        return self._cluster.global_id_in_cluster

    def replace(self, **kwargs: Any) -> RunConfig:
        """A copy with some settings changed (the cluster is read from the environment again).

        Raises:
            ValueError: For an unknown setting or an invalid combination.
        """
        settings: dict[str, Any] = {
            "model_dir": self._model_dir,
            "save_checkpoints_steps": self._save_checkpoints_steps,
            "save_checkpoints_secs": self._save_checkpoints_secs,
            "keep_checkpoint_max": self._keep_checkpoint_max,
            "keep_checkpoint_every_n_hours": self._keep_checkpoint_every_n_hours,
            "log_step_count_steps": self._log_step_count_steps,
        }
        unknown = sorted(set(kwargs) - set(settings))
        if unknown:
            raise ValueError(
                f"RunConfig.replace got unknown settings {unknown}; known: {sorted(settings)}"
            )
        # Setting one frequency clears the other, as in the constructor.
        if "save_checkpoints_steps" in kwargs and "save_checkpoints_secs" not in kwargs:
            settings["save_checkpoints_secs"] = None
        if "save_checkpoints_secs" in kwargs and "save_checkpoints_steps" not in kwargs:
            settings["save_checkpoints_steps"] = None
        settings.update(kwargs)
        return RunConfig(**settings)

    def __repr__(self) -> str:
        return (
            f"RunConfig(model_dir={self._model_dir!r}, "
            f"save_checkpoints_steps={self._save_checkpoints_steps}, "
            f"save_checkpoints_secs={self._save_checkpoints_secs}, "
            f"keep_checkpoint_max={self._keep_checkpoint_max}, task_type={self.task_type!r}, "
            f"task_id={self.task_id}, num_worker_replicas={self.num_worker_replicas})"
        )
