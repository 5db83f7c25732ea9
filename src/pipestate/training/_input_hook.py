"""``CheckpointInputPipelineHook``: saves and restores the input pipelines of a training run."""

from __future__ import annotations

import logging
from typing import Any

from pipestate.checkpoint import Checkpoint
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
        self._checkpoint_saver_hook = CheckpointSaverHook(
            model_dir,
            save_secs=secs,
            save_steps=steps,
            checkpoint_basename=prefix + ".ckpt",
            latest_filename=self._latest_filename,
            max_to_keep=config.keep_checkpoint_max,
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
        self._checkpoint_saver_hook._setup(session, Checkpoint(iterators=saveables))
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
        if latest is not None:
            status = manager.checkpoint.restore(latest)
            try:
                status.assert_consumed()
            except AssertionError as err:
                status.expect_partial()  # the error says what was left; no warning on top
                raise CheckpointMismatchError(
                    f"input checkpoint {latest!r} does not hold the iterators of this run "
                    f"({len(session.iterators)} iterator(s)): {err}"
                ) from err
        else:
            hook._save(session, step)
        # Saves follow from the current step either way, in step with the model's saver.
        hook._timer.update_last_triggered_step(step)

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
