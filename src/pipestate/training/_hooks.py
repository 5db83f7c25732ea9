"""Training hooks: the ``SessionRunHook`` base and the hooks that stop, save and log a run.

A hook is code the loop (:class:`~pipestate.training.MonitoredSession`) runs
around each step and at the ends of a run; it sees the run as a
:class:`~pipestate.training.Session`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pipestate._validate import check_count
from pipestate.checkpoint import (
    Checkpoint,
    CheckpointManager,
    CheckpointOptions,
    current_coordinator,
)
from pipestate.training._session import (
    Coordinator,
    Session,
    SessionRunArgs,
    SessionRunContext,
    SessionRunValues,
)
from pipestate.training._timer import SecondOrStepTimer

__all__ = [
    "CheckpointSaverHook",
    "CheckpointSaverListener",
    "LoggingHook",
    "SessionRunHook",
    "StopAtStepHook",
]

_logger = logging.getLogger("pipestate.training")


class SessionRunHook:
    """Base class of hooks: code the loop runs around each step and at its ends.

    Order of calls in one run: ``begin()``; ``after_create_session(session,
    coord)`` once the session exists (model restored, iterators created);
    then per step ``before_run(run_context)``, the step, ``after_run(run_context,
    run_values)``; finally ``end(session)`` when the run ends normally (stop
    requested, step limit, or end of input) — not when it raised.
    A hook instance may serve several runs: each run calls ``begin`` again.
    """

    def begin(self) -> None:
        """Called once before the session is created."""

    def after_create_session(self, session: Session, coord: Coordinator) -> None:
        """Called once the session exists, before the first step."""

    def before_run(self, run_context: SessionRunContext) -> SessionRunArgs | None:
        """Called before each step; may return fetches to receive in ``after_run``."""
        return None

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        """Called after each step that completed (not after one that raised)."""

    def end(self, session: Session) -> None:
        """Called at the end of a run that ended normally."""


class StopAtStepHook(SessionRunHook):
    """Requests a stop once the global step reaches a limit.

    Args:
        num_steps: Steps to run in each run, counted from the global step at
            its start.
        last_step: The global step to stop at.

    Raises:
        ValueError: When both or neither are given, or for a negative value.

    If the global step is already at ``last_step`` when the session is
    created, no step runs (TensorFlow would run one).
    """

    def __init__(self, num_steps: int | None = None, last_step: int | None = None) -> None:
        if num_steps is None and last_step is None:
            raise ValueError("One of num_steps or last_step must be specified.")
        if num_steps is not None and last_step is not None:
            raise ValueError("Only one of num_steps or last_step can be specified.")
        self._num_steps = check_count("num_steps", num_steps, minimum=0)
        self._last_step = check_count("last_step", last_step, minimum=0)
        self._stop_at: int | None = self._last_step

    @property
    def last_step(self) -> int | None:
        """The global step this run stops at (known once the session exists)."""
        return self._stop_at

    def after_create_session(self, session: Session, coord: Coordinator) -> None:
        if self._num_steps is not None:
            self._stop_at = session.global_step + self._num_steps
        assert self._stop_at is not None
        if session.global_step >= self._stop_at:
            coord.request_stop()

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        assert self._stop_at is not None
        if run_context.session.global_step >= self._stop_at:
            run_context.request_stop()

    def __repr__(self) -> str:
        if self._num_steps is not None:
            return f"StopAtStepHook(num_steps={self._num_steps})"
        return f"StopAtStepHook(last_step={self._last_step})"


class CheckpointSaverListener:
    """Code run around the saves of a :class:`CheckpointSaverHook`.

    ``after_save`` may return ``True`` to end the run.
    """

    def begin(self) -> None:
        """Called when the hook's run begins."""

    def before_save(self, session: Session, global_step_value: int) -> None:
        """Called before each save."""

    def after_save(self, session: Session, global_step_value: int) -> bool | None:
        """Called after each save; return ``True`` to request a stop."""
        return None

    def end(self, session: Session, global_step_value: int) -> None:
        """Called at the end of the run, after the last save."""


class CheckpointSaverHook(SessionRunHook):
    """Saves a checkpoint every N steps or seconds, at session creation and at the end.

    Checkpoints are ``<checkpoint_dir>/<checkpoint_basename>-<global step>``,
    managed by a :class:`~pipestate.CheckpointManager` (old ones deleted
    beyond ``max_to_keep``) and listed in the state file ``latest_filename``.
    When the session is created the current step is saved, unless the
    newest checkpoint already is of that step (then it is the one the model
    was restored from, and is not rewritten). ``end()`` saves the last step
    if it was not saved yet.

    Args:
        checkpoint_dir: The directory (local path or fsspec URL).
        save_secs: Save every this many seconds ...
        save_steps: ... or every this many steps (exactly one of the two).
        saver: The :class:`~pipestate.Checkpoint` to save; ``None`` saves the
            session's checkpoint (the model and the global step).
        checkpoint_basename: The checkpoints' name before ``-<step>``.
        listeners: :class:`CheckpointSaverListener` objects.
        latest_filename: The state file's name (default ``"checkpoint"``).
        max_to_keep: How many checkpoints to keep (``None``: all).
        keep_checkpoint_every_n_hours: Keep one checkpoint for good every
            this many hours.
        options: The :class:`~pipestate.checkpoint.CheckpointOptions` of each
            save. In a distributed job (``torch.distributed`` initialized) a
            save is made by every rank together, so every rank needs the hook
            and the steps must be counted (``save_steps``): clocks of different
            ranks disagree on when ``save_secs`` have passed. With
            ``CheckpointOptions(distributed=False)`` each process saves alone.

    Raises:
        ValueError: When both or neither of ``save_secs`` / ``save_steps`` are
            given, or for bad values; when the session is created, for
            ``save_secs`` in a distributed job.
        TypeError: For arguments of the wrong type.
    """

    def __init__(
        self,
        checkpoint_dir: Any,
        save_secs: float | None = None,
        save_steps: int | None = None,
        saver: Checkpoint | None = None,
        checkpoint_basename: str = "model.ckpt",
        listeners: Sequence[CheckpointSaverListener] | None = None,
        *,
        latest_filename: str | None = None,
        max_to_keep: int | None = 5,
        keep_checkpoint_every_n_hours: float | None = None,
        options: CheckpointOptions | None = None,
    ) -> None:
        if checkpoint_dir is None:
            raise ValueError("checkpoint_dir must be given (a directory path or URL), got None")
        self._timer = SecondOrStepTimer(every_secs=save_secs, every_steps=save_steps)
        if saver is not None and not isinstance(saver, Checkpoint):
            raise TypeError(
                f"saver must be a pipestate Checkpoint or None, got {saver!r:.100} of type "
                f"{type(saver).__name__}"
            )
        if not isinstance(checkpoint_basename, str) or not checkpoint_basename:
            raise ValueError(
                f"checkpoint_basename must be a non-empty str, got {checkpoint_basename!r}"
            )
        if latest_filename is not None and (
            not isinstance(latest_filename, str) or not latest_filename
        ):
            raise ValueError(
                f"latest_filename must be a non-empty str or None, got {latest_filename!r}"
            )
        listeners = list(listeners or ())
        for listener in listeners:
            if not isinstance(listener, CheckpointSaverListener):
                raise TypeError(
                    f"listeners must be CheckpointSaverListener instances, got {listener!r:.100}"
                )
        check_count("max_to_keep", max_to_keep, minimum=1)
        if options is not None and not isinstance(options, CheckpointOptions):
            raise TypeError(
                f"options must be a CheckpointOptions or None, got {type(options).__name__}"
            )
        self._options = options
        self._checkpoint_dir = checkpoint_dir
        self._saver = saver
        self._basename = checkpoint_basename
        self._listeners = listeners
        self._latest_filename = latest_filename
        self._max_to_keep = max_to_keep
        self._keep_hours = keep_checkpoint_every_n_hours
        self._manager: CheckpointManager | None = None

    def _make_manager(self, checkpoint: Checkpoint) -> CheckpointManager:
        return CheckpointManager(
            checkpoint,
            self._checkpoint_dir,
            max_to_keep=self._max_to_keep,
            keep_checkpoint_every_n_hours=self._keep_hours,
            checkpoint_name=self._basename,
            latest_filename=self._latest_filename,
        )

    @property
    def checkpoint_dir(self) -> Any:
        """The directory checkpoints are saved in."""
        return self._checkpoint_dir

    @property
    def manager(self) -> CheckpointManager | None:
        """The manager of the current run (``None`` before a session exists)."""
        return self._manager

    def begin(self) -> None:
        self._timer.reset()
        self._manager = None
        for listener in self._listeners:
            listener.begin()

    def _setup(self, session: Session, checkpoint: Checkpoint | None = None) -> CheckpointManager:
        """Creates the run's manager (reading the state file now) for ``checkpoint``."""
        for candidate in (checkpoint, self._saver, session.checkpoint):
            if candidate is not None:
                checkpoint = candidate
                break
        if checkpoint is None:
            raise ValueError(
                f"{self!r} has nothing to save: give it saver=Checkpoint(...), or give the "
                "Session a checkpoint"
            )
        if self._timer.every_secs is not None and self._distributed():
            raise ValueError(
                f"{self!r} saves every {self._timer.every_secs:g} seconds, but this process is "
                "a rank of a distributed job, whose ranks save together and must agree on the "
                "step: save every N steps instead (save_steps, or the RunConfig's "
                "save_checkpoints_steps), or pass CheckpointOptions(distributed=False) to save "
                "each rank alone"
            )
        self._manager = self._make_manager(checkpoint)
        return self._manager

    def _distributed(self) -> bool:
        """Whether saves are made by every rank of a job together."""
        if self._options is not None and self._options.distributed is False:
            return False
        return current_coordinator() is not None

    def _latest_step(self) -> int | None:
        """The step number of the newest checkpoint in the state file, or ``None``."""
        assert self._manager is not None
        latest = self._manager.latest_checkpoint
        if latest is None:
            return None
        _, _, suffix = latest.rpartition("-")
        return int(suffix) if suffix.isdigit() else None

    def after_create_session(self, session: Session, coord: Coordinator) -> None:
        self._setup(session)
        step = session.global_step
        # Rewriting the checkpoint the model was just restored from would put
        # the only good copy at risk for nothing.
        if self._latest_step() != step:
            self._save(session, step)
        self._timer.update_last_triggered_step(step)

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        step = run_context.session.global_step
        if self._timer.should_trigger_for_step(step):
            self._timer.update_last_triggered_step(step)
            if self._save(run_context.session, step):
                run_context.request_stop()

    def end(self, session: Session) -> None:
        last_step = session.global_step
        if self._manager is not None and last_step != self._timer.last_triggered_step():
            self._save(session, last_step)
            self._timer.update_last_triggered_step(last_step)
        for listener in self._listeners:
            listener.end(session, last_step)

    def _save(self, session: Session, step: int) -> bool:
        """Saves at ``step``; returns whether a listener asked to stop."""
        if self._manager is None:
            self._setup(session)
        assert self._manager is not None
        for listener in self._listeners:
            listener.before_save(session, step)
        path = self._manager.save(checkpoint_number=step, options=self._options)
        _logger.info("Saved checkpoint %s for step %d.", path, step)
        stop = False
        for listener in self._listeners:
            if listener.after_save(session, step):
                _logger.info("A CheckpointSaverListener requested that training be stopped.")
                stop = True
        return stop

    def __repr__(self) -> str:
        return (
            f"CheckpointSaverHook({self._checkpoint_dir!r}, {self._timer!r}, "
            f"checkpoint_basename={self._basename!r})"
        )


class LoggingHook(SessionRunHook):
    """Logs step outputs every N steps or seconds (and/or at the end), at INFO level.

    Args:
        fetches: Output names to log: a str, a list of them, or a dict
            ``{label: name}``.
        every_n_iter: Log every this many steps of this run ...
        every_n_secs: ... or every this many seconds.
        at_end: Also log the last values at the end of the run.
        formatter: ``formatter(values: dict) -> str``; default ``"a = 1, b = 2"``.

    Raises:
        ValueError: When neither frequency nor ``at_end`` is given, or both
            frequencies are.

    Example:
        >>> hook = LoggingHook(["loss", "global_step"], every_n_iter=100)
    """

    def __init__(
        self,
        fetches: str | Sequence[str] | Mapping[str, str],
        every_n_iter: int | None = None,
        every_n_secs: float | None = None,
        at_end: bool = False,
        formatter: Callable[[dict[str, Any]], str] | None = None,
    ) -> None:
        if isinstance(fetches, str):
            names = {fetches: fetches}
        elif isinstance(fetches, Mapping):
            names = dict(fetches)
        elif isinstance(fetches, Sequence):
            names = {name: name for name in fetches}
        else:
            raise TypeError(f"fetches must be a str, a list of str or a dict, got {fetches!r:.100}")
        if not names or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in names.items()
        ):
            raise ValueError(f"fetches must name at least one output, as str, got {fetches!r:.100}")
        if not isinstance(at_end, bool):
            raise TypeError(f"at_end must be a bool, got {at_end!r}")
        if every_n_iter is None and every_n_secs is None:
            if not at_end:
                raise ValueError(
                    "either at_end and/or exactly one of every_n_iter and every_n_secs must be "
                    "provided."
                )
            self._timer: SecondOrStepTimer | None = None
        else:
            self._timer = SecondOrStepTimer(every_secs=every_n_secs, every_steps=every_n_iter)
        if formatter is not None and not callable(formatter):
            raise TypeError(f"formatter must be callable or None, got {formatter!r:.100}")
        self._names = names
        self._at_end = at_end
        self._formatter = formatter
        self._iter = 0
        self._last: dict[str, Any] | None = None

    def begin(self) -> None:
        self._iter = 0
        self._last = None
        if self._timer is not None:
            self._timer.reset()

    def before_run(self, run_context: SessionRunContext) -> SessionRunArgs | None:
        return SessionRunArgs(dict(self._names))

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        self._last = run_values.results
        if self._timer is not None and self._timer.should_trigger_for_step(self._iter):
            self._timer.update_last_triggered_step(self._iter)
            self._log(run_values.results)
        self._iter += 1

    def end(self, session: Session) -> None:
        if self._at_end and self._last is not None:
            self._log(self._last)

    def _log(self, values: dict[str, Any]) -> None:
        if self._formatter is not None:
            _logger.info("%s", self._formatter(values))
        else:
            _logger.info("%s", ", ".join(f"{k} = {v}" for k, v in values.items()))

    def __repr__(self) -> str:
        return f"LoggingHook({sorted(self._names)}, timer={self._timer!r}, at_end={self._at_end})"
