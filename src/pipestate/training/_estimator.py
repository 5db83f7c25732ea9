"""``Estimator``: an estimator-style runner for plain-Python models and step functions."""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from pipestate._validate import check_count
from pipestate.checkpoint import Checkpoint, current_coordinator, latest_checkpoint
from pipestate.data import Dataset, DatasetIterator
from pipestate.training._estimator_state import EstimatorState, is_restorable
from pipestate.training._hooks import (
    CheckpointSaverHook,
    CheckpointSaverListener,
    LoggingHook,
    SessionRunHook,
    StopAtStepHook,
)
from pipestate.training._monitored_session import MonitoredSession, check_hooks
from pipestate.training._run_config import RunConfig
from pipestate.training._session import Session, SessionRunContext, SessionRunValues

__all__ = ["Estimator"]

_logger = logging.getLogger("pipestate.training")

MODEL_BASENAME = "model.ckpt"


def _split(element: Any) -> tuple[Any, Any]:
    """``(features, labels)`` from an element: a pair is split, anything else is features."""
    if isinstance(element, tuple) and len(element) == 2:
        return element[0], element[1]
    return element, None


def _as_number(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"{what} must be a real number (a float, a NumPy scalar, a 0-d array or tensor), got "
            f"{value!r:.100} of type {type(value).__name__}"
        ) from None
    return number


def _run_config(model_dir: Any, config: RunConfig | None) -> RunConfig:
    """``config`` (or a default one) with ``model_dir`` set: the given one, else a temp dir."""
    if config is None:
        config = RunConfig()
    elif not isinstance(config, RunConfig):
        raise TypeError(
            f"config must be a pipestate.training.RunConfig, got {config!r:.100} of type "
            f"{type(config).__name__}"
        )
    if model_dir is not None:
        if not isinstance(model_dir, (str, os.PathLike)):
            raise TypeError(f"model_dir must be a path, a URL or None, got {model_dir!r:.100}")
        model_dir = os.fspath(model_dir)
        if config.model_dir is not None and config.model_dir != model_dir:
            raise ValueError(
                "model_dir are set both in constructor and RunConfig, but with different "
                f"values. In constructor: '{model_dir}', in RunConfig: '{config.model_dir}'."
            )
        return config.replace(model_dir=model_dir)
    if config.model_dir is None:
        config = config.replace(model_dir=tempfile.mkdtemp(prefix="pipestate-model-"))
        _logger.warning("Using temporary folder as model directory: %s", config.model_dir)
    return config


def _format_metrics(metrics: Mapping[str, Any]) -> str:
    """``"loss = 0.25, global_step = 10"``: finite floats in ``%g``, anything else as is."""
    return ", ".join(
        f"{k} = {v:g}" if isinstance(v, float) and math.isfinite(v) else f"{k} = {v}"
        for k, v in metrics.items()
    )


def _eval_values(result: Any) -> dict[str, float]:
    """What ``eval_step`` returned as ``{name: number}`` (a number is ``"loss"``)."""
    if isinstance(result, Mapping):
        return {str(k): _as_number(v, f"eval_step's {k!r}") for k, v in result.items()}
    return {"loss": _as_number(result, "eval_step's result (a loss, or a dict)")}


class InputFnError(TypeError, ValueError):
    """``input_fn`` returned something other than a dataset or one of its iterators."""


class _StopAfterNEvalsHook(SessionRunHook):
    """Stops an evaluation after ``num_evals`` steps."""

    def __init__(self, num_evals: int) -> None:
        self._num_evals = num_evals
        self._done = 0

    def after_create_session(self, session: Session, coord: Any) -> None:
        self._done = 0

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        self._done += 1
        if self._done >= self._num_evals:
            run_context.request_stop()


class Estimator:
    """Trains and evaluates a model with hooks, saving it and a global step in ``model_dir``.

    The plain-Python counterpart of ``tf.estimator.Estimator``: instead of a
    ``model_fn`` building a graph, a ``model`` object and step functions.

    * ``train`` calls ``input_fn()`` for a fresh iterator (kept in the
      session's ``iterators``, where hooks find it), restores the newest model
      checkpoint in ``model_dir`` (model, global step, optimizer and
      ``state``) if there is one,
      then runs ``train_step(model, features, labels)`` once per element,
      adding 1 to the global step each time, until a hook stops it, the step
      limit is reached or the input ends. A :class:`CheckpointSaverHook`
      (``model.ckpt-<step>``, every ``save_checkpoints_steps`` /
      ``save_checkpoints_secs``, at the start and at the end, keeping
      ``keep_checkpoint_max``) is added unless one is among the hooks or
      checkpoints are disabled; only the chief saves.
    * ``evaluate`` restores the newest checkpoint the same way and averages
      ``eval_step(model, features, labels)`` over the input.

    Args:
        model: What is trained and saved: a trackable (e.g. an
            ``AutoTrackable`` of ``Variable``), or an object with
            ``state_dict()`` / ``load_state_dict()`` such as a ``torch.nn.Module``.
        train_step: ``train_step(model, features, labels) -> loss`` (a number,
            or ``None``); it updates the model in place.
        eval_step: ``eval_step(model, features, labels) -> loss or {metric: value}``.
        model_dir: The checkpoint directory; defaults to ``config.model_dir``,
            else a new temporary directory.
        config: A :class:`RunConfig`.
        optimizer: Saved and restored with the model (e.g. a
            ``torch.optim.Optimizer``); ``train_step`` closes over it.
        state: Other objects to save and restore with the model, in the same
            checkpoint, under their names: ``{"scheduler": scheduler,
            "scaler": scaler, "rng": rng}``. Each is restorable in place as
            ``model`` is (a pipestate ``Trackable``, a NumPy or Python random
            generator, or an object with ``state_dict()`` /
            ``load_state_dict()`` such as an LR scheduler or a ``GradScaler``).
            Names are identifier-like and can't be ``model``, ``optimizer``
            or ``global_step``. Restoring a checkpoint saved before an object
            was passed leaves that object as it is (with a warning) and saves
            it from the next checkpoint on; a checkpoint holding an object no
            longer passed restores the rest.

    An element of the input is split into ``features, labels`` when it is a
    2-tuple; any other element is passed as ``features`` with ``labels=None``.

    Raises:
        TypeError: For a model, optimizer or ``state`` object that can't be
            checkpointed, a ``state`` that is not a mapping with str keys,
            step functions that are not callable, or a config that is not a
            :class:`RunConfig`.
        ValueError: When ``model_dir`` and ``config.model_dir`` differ, or for
            a ``state`` name that is not identifier-like or is already taken.

    Example:
        >>> import numpy as np
        >>> import pipestate as ps
        >>> model = ps.checkpoint.AutoTrackable()
        >>> model.w = ps.Variable(np.zeros(()))
        >>> def train_step(model, x, y):
        ...     model.w.assign_add(0.1 * (y - model.w.numpy()))
        ...     return float((y - model.w.numpy()) ** 2)
        >>> est = ps.training.Estimator(model, train_step, model_dir="/tmp/doc-estimator")
        >>> _ = est.train(lambda: ps.Dataset.range(8).map(lambda x: (x, 1.0)), steps=5)
    """

    def __init__(
        self,
        model: Any,
        train_step: Callable[[Any, Any, Any], Any],
        eval_step: Callable[[Any, Any, Any], Any] | None = None,
        model_dir: Any = None,
        config: RunConfig | None = None,
        *,
        optimizer: Any = None,
        state: Mapping[str, Any] | None = None,
    ) -> None:
        if not is_restorable(model):
            raise TypeError(
                f"model must be restorable in place: a pipestate Trackable (e.g. an AutoTrackable "
                f"holding Variables) or an object with state_dict() / load_state_dict() (e.g. a "
                f"torch.nn.Module), got {model!r:.100} of type {type(model).__name__}"
            )
        if optimizer is not None and not is_restorable(optimizer):
            raise TypeError(
                f"optimizer must be a Trackable or have state_dict() / load_state_dict(), got "
                f"{optimizer!r:.100} of type {type(optimizer).__name__}"
            )
        if not callable(train_step):
            raise TypeError(f"train_step must be callable, got {train_step!r:.100}")
        if eval_step is not None and not callable(eval_step):
            raise TypeError(f"eval_step must be callable or None, got {eval_step!r:.100}")
        self._saved = EstimatorState(model, optimizer, state)
        self._config = _run_config(model_dir, config)
        self._model = model
        self._optimizer = optimizer
        self._train_step = train_step
        self._eval_step = eval_step
        self._global_step = self._saved.global_step
        self._checkpoint = self._saved.checkpoint

    # --------------------------------------------------------------- properties
    @property
    def model(self) -> Any:
        """The model."""
        return self._model

    @property
    def model_dir(self) -> str:
        """The checkpoint directory."""
        assert self._config.model_dir is not None
        return self._config.model_dir

    @property
    def config(self) -> RunConfig:
        """The :class:`RunConfig` (with ``model_dir`` filled in)."""
        return self._config

    @property
    def global_step(self) -> int:
        """The global step of the model in memory."""
        return int(self._global_step.numpy())

    @property
    def state(self) -> Mapping[str, Any]:
        """The extra objects saved with the model, by name (read-only)."""
        return MappingProxyType(self._saved.extras)

    @property
    def checkpoint(self) -> Checkpoint:
        """The checkpoint saved: ``model``, ``global_step``, ``optimizer`` and ``state``."""
        return self._checkpoint

    def latest_checkpoint(self) -> str | None:
        """The newest model checkpoint in ``model_dir``, or ``None``."""
        return latest_checkpoint(self.model_dir)

    def __repr__(self) -> str:
        return f"Estimator(model={type(self._model).__name__}, model_dir={self.model_dir!r})"

    # ------------------------------------------------------------------ helpers
    def _restore(self, checkpoint_path: Any = None) -> str | None:
        """Restores ``checkpoint_path`` or the newest checkpoint; returns what was restored."""
        path = checkpoint_path if checkpoint_path is not None else self.latest_checkpoint()
        if path is None:
            return None
        self._saved.restore(path)
        _logger.info("Restored %s (global step %d).", path, self.global_step)
        return str(path)

    def _iterator(self, input_fn: Callable[[], Any]) -> tuple[DatasetIterator, bool]:
        """The iterator of ``input_fn()`` and whether this runner created it."""
        if not callable(input_fn):
            raise TypeError(f"input_fn must be callable, got {input_fn!r:.100}")
        data = input_fn()
        if isinstance(data, Dataset):
            return iter(data), True
        if isinstance(data, DatasetIterator):
            return data, False
        # A ValueError as in TensorFlow's estimator, and a TypeError for what it is.
        raise InputFnError(
            f"input_fn must return a pipestate Dataset (or one of its iterators) of "
            f"(features, labels) elements, got {data!r:.100} of type {type(data).__name__}"
        )

    # -------------------------------------------------------------------- train
    def train(
        self,
        input_fn: Callable[[], Any],
        hooks: Iterable[SessionRunHook] | None = None,
        steps: int | None = None,
        max_steps: int | None = None,
        saving_listeners: Iterable[CheckpointSaverListener] | None = None,
    ) -> Estimator:
        """Trains on ``input_fn()``'s data until a hook stops, a step limit, or the input ends.

        Args:
            input_fn: Returns a :class:`~pipestate.Dataset` (or one of its
                iterators) of ``(features, labels)``.
            hooks: :class:`SessionRunHook` objects, called before the runner's own.
            steps: Steps to run in this call (on top of the global step).
            max_steps: The global step to stop at; nothing runs when the saved
                global step already reached it.
            saving_listeners: :class:`CheckpointSaverListener` objects for the
                runner's checkpoint saver hook.

        Returns:
            ``self``.

        Raises:
            ValueError: When both ``steps`` and ``max_steps`` are given, or one is not positive.
            TypeError: For a hook that is not a :class:`SessionRunHook`, or an
                ``input_fn`` that does not return a dataset.
        """
        if steps is not None and max_steps is not None:
            raise ValueError("Can not provide both steps and max_steps.")
        steps = check_count("steps", steps, minimum=-(2**63))
        max_steps = check_count("max_steps", max_steps, minimum=-(2**63))
        if steps is not None and steps <= 0:
            raise ValueError(f"Must specify steps > 0, given: {steps}")
        if max_steps is not None and max_steps <= 0:
            raise ValueError(f"Must specify max_steps > 0, given: {max_steps}")
        all_hooks = check_hooks(hooks)
        listeners = list(saving_listeners or ())
        self._restore()
        if max_steps is not None and max_steps <= self.global_step:
            _logger.info("Skipping training since max_steps has already saved.")
            return self
        if steps is not None or max_steps is not None:
            all_hooks.append(StopAtStepHook(num_steps=steps, last_step=max_steps))
        all_hooks += self._runner_hooks(all_hooks, listeners)
        last: dict[str, Any] = {}

        def step(element: Any) -> dict[str, Any]:
            features, labels = _split(element)
            loss = self._train_step(self._model, features, labels)
            last["loss"] = None if loss is None else _as_number(loss, "train_step's loss")
            return {"loss": last["loss"]}

        self._run(input_fn, all_hooks, step, increment_global_step=True)
        _logger.info("Loss for final step: %s.", last.get("loss"))
        return self

    def _runner_hooks(
        self, hooks: list[SessionRunHook], listeners: list[CheckpointSaverListener]
    ) -> list[SessionRunHook]:
        """The runner's own training hooks: loss logging and the model saver.

        The model saver runs on the chief, or on every rank of a distributed
        job (``torch.distributed`` initialized), whose ranks save together.
        """
        config = self._config
        added: list[SessionRunHook] = []
        if config.log_step_count_steps is not None:
            added.append(
                LoggingHook(
                    {"loss": "loss", "step": "global_step"},
                    every_n_iter=config.log_step_count_steps,
                )
            )
        saving = (
            config.save_checkpoints_steps is not None or config.save_checkpoints_secs is not None
        )
        # In a distributed job every rank takes part in the model's save (one
        # checkpoint covers them all); otherwise the chief saves, as TensorFlow's.
        if not saving or not (config.is_chief or current_coordinator() is not None):
            return added
        if any(isinstance(h, CheckpointSaverHook) for h in hooks):
            if listeners:
                raise ValueError(
                    "saving_listeners are given but the hooks already have a CheckpointSaverHook; "
                    "pass the listeners to that hook"
                )
            return added
        added.append(
            CheckpointSaverHook(
                self.model_dir,
                save_secs=config.save_checkpoints_secs,
                save_steps=config.save_checkpoints_steps,
                checkpoint_basename=MODEL_BASENAME,
                listeners=listeners,
                max_to_keep=config.keep_checkpoint_max,
                keep_checkpoint_every_n_hours=config.keep_checkpoint_every_n_hours,
            )
        )
        return added

    def _run(
        self,
        input_fn: Callable[[], Any],
        hooks: list[SessionRunHook],
        step: Callable[[Any], Any],
        *,
        increment_global_step: bool,
    ) -> None:
        """Runs ``step(element)`` on ``input_fn()``'s elements with ``hooks`` until a stop."""
        iterator, owned = self._iterator(input_fn)
        session = Session(
            global_step=self._global_step,
            iterators=[iterator],
            checkpoint=self._checkpoint,
            model=self._model,
        )
        try:
            with MonitoredSession(
                session, hooks, increment_global_step=increment_global_step
            ) as mon:
                while not mon.should_stop():
                    mon.run(lambda: step(next(iterator)))
        finally:
            if owned:
                iterator.close()

    # ----------------------------------------------------------------- evaluate
    def evaluate(
        self,
        input_fn: Callable[[], Any],
        steps: int | None = None,
        hooks: Iterable[SessionRunHook] | None = None,
        checkpoint_path: Any = None,
    ) -> dict[str, Any]:
        """Averages ``eval_step`` over ``input_fn()``'s data (or its first ``steps`` elements).

        The model is restored from ``checkpoint_path``, else from the newest
        checkpoint in ``model_dir`` if there is one. The global step does not
        change, and no checkpoint (model or input) is saved or restored
        beyond that, unless a hook given here does so.

        Returns:
            ``{"loss": mean, <metric>: mean, ..., "global_step": int}``: the mean
            of every value ``eval_step`` returned (a number is ``"loss"``).

        Raises:
            ValueError: Without ``eval_step``, for ``steps <= 0``, or when the
                input has no elements.
            TypeError: When ``eval_step`` returns something that is not a
                number or a dict of numbers.
        """
        if self._eval_step is None:
            raise ValueError(
                "evaluate needs an eval_step: Estimator(model, train_step, eval_step=...)"
            )
        steps = check_count("steps", steps, minimum=-(2**63))
        if steps is not None and steps <= 0:
            raise ValueError(f"Must specify steps > 0, given: {steps}")
        all_hooks = check_hooks(hooks)
        if steps is not None:
            all_hooks.append(_StopAfterNEvalsHook(steps))
        self._restore(checkpoint_path)
        eval_step = self._eval_step
        totals: dict[str, float] = {}
        count = 0

        def step(element: Any) -> dict[str, float]:
            nonlocal count
            features, labels = _split(element)
            values = _eval_values(eval_step(self._model, features, labels))
            for name, value in values.items():
                totals[name] = totals.get(name, 0.0) + value
            count += 1
            return values

        self._run(input_fn, all_hooks, step, increment_global_step=False)
        if count == 0:
            raise ValueError(
                "evaluate: input_fn's data has no elements, so there is nothing to evaluate"
            )
        metrics: dict[str, Any] = {name: total / count for name, total in totals.items()}
        metrics["global_step"] = self.global_step
        _logger.info("Evaluation: %s", _format_metrics(metrics))
        return metrics
