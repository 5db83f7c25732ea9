"""``CheckpointInputPipelineHook``: saves and restores the input pipelines of a training run."""

from __future__ import annotations

import logging
import re
from typing import Any

from pipestate.checkpoint import Checkpoint, CheckpointOptions, get_checkpoint_state
from pipestate.checkpoint._storage import Storage
from pipestate.data import ExternalStatePolicy, make_saveable_from_iterator
from pipestate.errors import CheckpointMismatchError
from pipestate.training._hooks import CheckpointSaverHook, SessionRunHook
from pipestate.training._run_config import RunConfig
from pipestate.training._session import (
    Coordinator,
    Session,
    SessionRunArgs,
    SessionRunContext,
    SessionRunValues,
)

_logger = logging.getLogger("pipestate.training")

__all__ = ["CheckpointInputPipelineHook"]

_STATE_FILE = re.compile(r"^checkpoint_input(_[A-Za-z0-9]+_[0-9]+)?$")


def _input_state_files(model_dir: Any) -> list[str]:
    """The state files of every task's input checkpoints in ``model_dir``."""
    storage, directory = Storage.for_path(str(model_dir), None)
    try:
        names = storage.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(name for name in names if _STATE_FILE.match(name))


def _job_of(path: str) -> tuple[int, int] | None:
    """``(world size, task id)`` of the job that saved input checkpoint ``path``.

    ``None`` for a checkpoint that doesn't record them (saved by an older release).
    """
    probe = Checkpoint(world_size=-1, task=-1)
    probe.restore(path).expect_partial()
    world, task = probe.world_size, probe.task
    if not isinstance(world, int) or world < 1 or not isinstance(task, int) or task < 0:
        return None
    return world, task


_CONFIG_FIELDS = (
    "save_checkpoints_steps",
    "save_checkpoints_secs",
    "keep_checkpoint_max",
    "num_worker_replicas",
    "task_type",
    "task_id",
)


def _model_dir_and_config(estimator: Any) -> tuple[Any, Any]:
    """``(model_dir, config)`` of an Estimator, a RunConfig, or an object with both attributes."""
    if isinstance(estimator, RunConfig):
        return estimator.model_dir, estimator
    if hasattr(estimator, "model_dir") and hasattr(estimator, "config"):
        return estimator.model_dir, estimator.config
    raise TypeError(
        f"CheckpointInputPipelineHook needs an Estimator (or a RunConfig, or an object with "
        f"model_dir and config attributes), got {estimator!r:.100} of type "
        f"{type(estimator).__name__}"
    )


class CheckpointInputPipelineHook(SessionRunHook):
    """Checkpoints the input pipelines of a training run with the run config's frequency.

    Only the iterators are saved — the model's checkpoints are the
    :class:`CheckpointSaverHook`'s — under the basename ``input.ckpt``, or
    ``input_<task_type>_<task_id>.ckpt`` when the config has more than one
    worker replica, with the state file ``checkpoint_input`` (or
    ``checkpoint_input_<task_type>_<task_id>``), so they never clash with the
    model's ``checkpoint`` file. Files are ``<model_dir>/input.ckpt-<global step>``;
    ``keep_checkpoint_max`` of them are kept.

    On the first ``before_run`` after each session creation it restores the
    latest input checkpoint if there is one (the iterators' current state is
    discarded), and otherwise saves one at the current global step. When the
    latest was saved at another step than the restored global step (a crash
    between the input's save and the model's), the input checkpoint of the
    global step is restored if it is kept, so that model and input match;
    otherwise the latest, with a warning. It saves
    in ``after_run`` every ``save_checkpoints_steps`` steps or
    ``save_checkpoints_secs`` seconds, and in ``end()`` if the last step was
    not saved. It reads the global step and never changes it.

    The iterators are those of the session (``session.iterators``; the
    :class:`Estimator` registers the iterator it creates from ``input_fn``).
    The hook wraps a :class:`CheckpointSaverHook` rather than being one, so
    the runner still adds its own model saver.

    Pass the hook to ``train`` only: an evaluation must not restore or
    advance the training input.

    Args:
        estimator: The :class:`Estimator` (its ``model_dir`` and ``config``
            are used); a :class:`RunConfig` with a ``model_dir`` also works,
            for hand-written loops.
        external_state_policy: ``'warn'``, ``'ignore'``, ``'fail'`` or an
            :class:`~pipestate.data.ExternalStatePolicy`, applied when saving
            iterators whose pipelines have external state; ``None`` means ``'fail'``.

    Raises:
        ValueError: For an invalid policy; when the config gives both or
            neither of ``save_checkpoints_steps`` and ``save_checkpoints_secs``;
            when there is no ``model_dir``; and, when the session is created,
            when it has no iterators to save or one can't be checkpointed.
        TypeError: When ``estimator`` is not an estimator or a run config.

    Example:
        >>> import numpy as np
        >>> import pipestate as ps
        >>> model = ps.checkpoint.AutoTrackable()
        >>> model.total = ps.Variable(np.zeros(()))
        >>> def train_step(model, features, labels):
        ...     model.total.assign_add(features)
        ...     return float(features)
        >>> def eval_step(model, features, labels):
        ...     return {"total": float(model.total.numpy())}
        >>> def train_input_fn():
        ...     return ps.Dataset.range(100)
        >>> def eval_input_fn():
        ...     return ps.Dataset.range(3)
        >>> def should_stop_the_training(metrics):
        ...     return metrics["global_step"] >= 6
        >>> train_steps_per_eval = 2
        >>> config = ps.training.RunConfig("input_hook_example", save_checkpoints_steps=100)
        >>> est = ps.training.Estimator(model, train_step, eval_step, config=config)
        >>> while True:
        ...     est.train(
        ...         train_input_fn,
        ...         hooks=[ps.data.CheckpointInputPipelineHook(est)],
        ...         steps=train_steps_per_eval)
        ...     # Note: We do not pass the hook here.
        ...     metrics = est.evaluate(eval_input_fn)
        ...     if should_stop_the_training(metrics):
        ...         break  # doctest: +ELLIPSIS
        Estimator(...)
        Estimator(...)
        Estimator(...)
        >>> float(model.total.numpy())  # 0 + 1 + ... + 5: the input never restarted
        15.0
    """

    def __init__(
        self, estimator: Any, external_state_policy: ExternalStatePolicy | str | None = None
    ) -> None:
        self._policy = (
            ExternalStatePolicy.FAIL
            if external_state_policy is None
            else ExternalStatePolicy.coerce(external_state_policy)
        )
        model_dir, config = _model_dir_and_config(estimator)
        if model_dir is None:
            raise ValueError(
                f"CheckpointInputPipelineHook needs a model_dir to save in; {estimator!r:.100} "
                "has none"
            )
        missing = [name for name in _CONFIG_FIELDS if not hasattr(config, name)]
        if missing:
            raise TypeError(
                f"CheckpointInputPipelineHook needs a run config with {list(_CONFIG_FIELDS)}; "
                f"{config!r:.100} lacks {missing}"
            )
        steps = config.save_checkpoints_steps
        secs = config.save_checkpoints_secs
        if (steps is None) == (secs is None):
            raise ValueError(
                "CheckpointInputPipelineHook saves with the run config's frequency, so exactly "
                "one of save_checkpoints_steps and save_checkpoints_secs must be set, got "
                f"save_checkpoints_steps={steps!r}, save_checkpoints_secs={secs!r}; e.g. "
                "RunConfig(model_dir, save_checkpoints_steps=100)"
            )
        prefix = "input"
        if config.num_worker_replicas > 1:
            prefix += f"_{config.task_type}_{config.task_id}"
        self._latest_filename = "checkpoint_" + prefix
        self._model_dir = model_dir
        self._world_size = max(int(config.num_worker_replicas), 1)
        global_id = getattr(config, "global_id_in_cluster", None)
        self._global_id = int(global_id) if global_id is not None else 0
        # Each task saves its own input files (tiny), alone even in a distributed job:
        # tasks may differ in what their iterators hold, and names stay per task.
        self._checkpoint_saver_hook = CheckpointSaverHook(
            model_dir,
            save_secs=secs,
            save_steps=steps,
            checkpoint_basename=prefix + ".ckpt",
            latest_filename=self._latest_filename,
            max_to_keep=config.keep_checkpoint_max,
            options=CheckpointOptions(distributed=False),
        )
        self._first_run = False

    @property
    def external_state_policy(self) -> ExternalStatePolicy:
        """The policy applied when saving."""
        return self._policy

    @property
    def checkpoint_basename(self) -> str:
        """``input.ckpt`` or ``input_<task_type>_<task_id>.ckpt``."""
        return self._checkpoint_saver_hook._basename

    @property
    def latest_filename(self) -> str:
        """The state file: ``checkpoint_input`` or ``checkpoint_input_<task_type>_<task_id>``."""
        return self._latest_filename

    def begin(self) -> None:
        self._checkpoint_saver_hook.begin()

    def after_create_session(self, session: Session, coord: Coordinator) -> None:
        iterators = session.iterators
        if not iterators:
            raise ValueError(
                f"CheckpointInputPipelineHook found no iterators to save in {session!r}; the "
                "Estimator registers the iterator of input_fn, a hand-written loop must give the "
                "Session its iterators (Session(iterators=[it]))"
            )
        saveables = [make_saveable_from_iterator(it, self._policy) for it in iterators]
        self._saveables = saveables
        # The job's shape is saved with the iterators: a resumed job of another
        # size finds the input checkpoints of the job that saved them.
        checkpoint = Checkpoint(
            iterators=saveables, world_size=self._world_size, task=self._global_id
        )
        self._checkpoint_saver_hook._setup(session, checkpoint)
        # Restoring waits for the first before_run, after every hook's after_create_session.
        self._first_run = True

    def _restore_or_save_initial_ckpt(self, session: Session) -> None:
        hook = self._checkpoint_saver_hook
        manager = hook.manager
        assert manager is not None
        step = session.global_step
        latest = manager.latest_checkpoint
        if latest is not None and not latest.endswith(f"-{step}"):
            # A crash between the input's save and the model's leaves them at
            # different steps: the input saved at the model's step continues
            # exactly, where the newest one would skip or repeat data.
            matching = [path for path in manager.checkpoints if path.endswith(f"-{step}")]
            if matching:
                _logger.info(
                    "Restoring input checkpoint %s, saved at the global step %d, not the newer %s",
                    matching[-1],
                    step,
                    latest,
                )
                latest = matching[-1]
            else:
                _logger.warning(
                    "No input checkpoint was saved at the global step %d; restoring %s instead. "
                    "The input continues from there, so data may be skipped or repeated.",
                    step,
                    latest,
                )
        saved = _job_of(latest) if latest is not None else None
        if latest is not None and saved is not None and saved[0] != self._world_size:
            _logger.info(
                "Input checkpoint %s was saved by a job of %d tasks; this job has %d",
                latest,
                saved[0],
                self._world_size,
            )
            latest = None
        if latest is None:
            # No input of this task's own for this job's size: a job of another size
            # saved the input (re-shard it), or this is the job's first start.
            latest = self._checkpoint_of_another_job(step)
        if latest is not None:
            self._restore_iterators(latest, session)
        else:
            hook._save(session, step)
        # Saves follow from the current step either way, in step with the model's saver.
        hook._timer.update_last_triggered_step(step)

    def _restore_iterators(self, path: str, session: Session) -> None:
        """Restore the iterators from ``path`` (this task's, or another task's to re-shard)."""
        # A separate checkpoint object: the saved job's shape must not replace this job's.
        if _job_of(path) is None:  # saved by a release that did not record it
            checkpoint = Checkpoint(iterators=self._saveables)
        else:
            checkpoint = Checkpoint(iterators=self._saveables, world_size=0, task=0)
        status = checkpoint.restore(path)
        try:
            status.assert_consumed()
        except AssertionError as err:
            status.expect_partial()  # the error says what was left; no warning on top
            raise CheckpointMismatchError(
                f"input checkpoint {path!r} does not hold the iterators of this run "
                f"({len(session.iterators)} iterator(s)): {err}"
            ) from err

    def _checkpoint_of_another_job(self, step: int) -> str | None:
        """The input checkpoint a job of another size saved at ``step``, or ``None``.

        Its lowest task's checkpoint at the model's global step is read: in
        lockstep every task's state holds the job's global count, and the
        elastic rule re-partitions it for this task, or refuses with an error
        naming the op that prevents it, before anything is read from the
        input. ``None`` when there is no input checkpoint at all, or only this
        job's size (the job's first start: tasks start their input afresh).

        Raises:
            CheckpointMismatchError: When input checkpoints of other tasks
                exist but none at ``step``.
        """
        found: list[tuple[int, int, str]] = []
        others: list[str] = []
        for name in _input_state_files(self._model_dir):
            state = get_checkpoint_state(self._model_dir, latest_filename=name)
            if state is None:
                continue
            paths = state.all_model_checkpoint_paths or [state.model_checkpoint_path]
            newest = _job_of(paths[-1])
            if newest is not None and newest[0] != self._world_size:
                others.extend(paths)
            for path in paths:
                if path.endswith(f"-{step}"):
                    job = _job_of(path)
                    if job is not None:
                        found.append((job[0], job[1], path))
        if not found:
            if others:
                raise CheckpointMismatchError(
                    f"this task (id {self._global_id} of {self._world_size}) has no input "
                    f"checkpoint of its own in {self._model_dir!r}, and no other task's was "
                    f"saved at the model's global step {step} (found: {sorted(others)[:6]}); the "
                    "input can't continue exactly. Restore the model checkpoint of a step the "
                    "input was saved at, or start the input afresh in a new model_dir"
                )
            return None
        # The job that saved at this step: the largest group of tasks that agree on its size.
        sizes = [size for size, _, _ in found]
        world = max(set(sizes), key=sizes.count)
        if world == self._world_size:
            return None
        _, task, path = min(f for f in found if f[0] == world)
        _logger.warning(
            "Input checkpoints at global step %d were saved by a job of %d tasks; this job has "
            "%d. Task %d continues from task %d's (%s): the input pipeline re-shards by the "
            "elastic rule, or the restore fails naming the op that prevents it.",
            step,
            world,
            self._world_size,
            self._global_id,
            task,
            path,
        )
        return path

    def before_run(self, run_context: SessionRunContext) -> SessionRunArgs | None:
        if self._first_run:
            self._restore_or_save_initial_ckpt(run_context.session)
            self._first_run = False
        return self._checkpoint_saver_hook.before_run(run_context)

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        self._checkpoint_saver_hook.after_run(run_context, run_values)

    def end(self, session: Session) -> None:
        self._checkpoint_saver_hook.end(session)

    def __repr__(self) -> str:
        return (
            f"CheckpointInputPipelineHook(basename={self.checkpoint_basename!r}, "
            f"latest_filename={self._latest_filename!r}, "
            f"external_state_policy='{self._policy.value}')"
        )
