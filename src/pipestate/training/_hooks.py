"""Training hooks, the session they see, and the loop driver that calls them.

pipestate has no graph and no ``tf.Session``. What hooks see as ``session``
is a :class:`Session`: the state of one training (or evaluation) run — the
global step, the iterators created for it (TensorFlow's iterators
collection), the model and the :class:`~pipestate.Checkpoint` that saves it.
Hooks read it directly instead of calling ``session.run``. ``coord`` is a
:class:`Coordinator`, a stop flag shared by the hooks and the loop.
:class:`MonitoredSession` calls the hooks around each step, for the
estimator-style runner and for hand-written loops alike.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from pipestate._validate import check_count, check_seconds
from pipestate.checkpoint import Checkpoint, CheckpointManager, Variable
from pipestate.data import DatasetIterator

__all__ = [
    "CheckpointSaverHook",
    "CheckpointSaverListener",
    "Coordinator",
    "LoggingHook",
    "MonitoredSession",
    "SecondOrStepTimer",
    "Session",
    "SessionRunArgs",
    "SessionRunContext",
    "SessionRunHook",
    "SessionRunValues",
    "StopAtStepHook",
]

_logger = logging.getLogger("pipestate.training")

GLOBAL_STEP = "global_step"
"""The fetch name of the global step (its value after the step)."""


# --------------------------------------------------------------------------- session
class Coordinator:
    """A stop flag shared by the loop and the hooks (``coord`` in ``after_create_session``).

    A hook that sees the run must end calls :meth:`request_stop`; the loop
    checks :meth:`should_stop` before each step.
    """

    def __init__(self) -> None:
        self._stop = False

    def request_stop(self) -> None:
        """Asks the loop to stop before its next step."""
        self._stop = True

    def should_stop(self) -> bool:
        """Whether a stop was requested."""
        return self._stop

    def __repr__(self) -> str:
        return f"Coordinator(stop_requested={self._stop})"


class Session:
    """What hooks see as ``session``: the state of one training or evaluation run.

    Args:
        global_step: The step counter: an integer 0-d :class:`Variable`, shared
            with whatever checkpoint saves it, or an int to start a new one
            (default 0).
        iterators: The input iterators of the run; hooks that save input
            pipelines find them here (TensorFlow's iterators collection).
        checkpoint: The :class:`Checkpoint` that :class:`CheckpointSaverHook`
            saves when it was given none, or ``None``.
        model: The model being trained, for hooks that want to look at it.

    Raises:
        TypeError: For a global step that is not an integer Variable or int,
            an iterator that is not a ``DatasetIterator``, or a checkpoint
            that is not a ``Checkpoint``.

    Example:
        >>> import pipestate as ps
        >>> it = iter(ps.Dataset.range(3))
        >>> session = ps.training.Session(iterators=[it])
        >>> session.global_step, len(session.iterators)
        (0, 1)
    """

    def __init__(
        self,
        *,
        global_step: Variable | int = 0,
        iterators: Iterable[DatasetIterator] = (),
        checkpoint: Checkpoint | None = None,
        model: Any = None,
    ) -> None:
        if isinstance(global_step, Variable):
            if global_step.shape != () or not np.issubdtype(global_step.dtype, np.integer):
                raise TypeError(
                    f"global_step must be a 0-d integer Variable, got {global_step!r:.100}"
                )
            self._global_step = global_step
        else:
            start = check_count("global_step", global_step, minimum=0, allow_none=False)
            self._global_step = Variable(np.int64(start or 0), dtype=np.int64)
        if checkpoint is not None and not isinstance(checkpoint, Checkpoint):
            raise TypeError(
                f"checkpoint must be a pipestate Checkpoint or None, got {checkpoint!r:.100} of "
                f"type {type(checkpoint).__name__}"
            )
        self._checkpoint = checkpoint
        self._model = model
        self._iterators: list[DatasetIterator] = []
        if not isinstance(iterators, Iterable):
            raise TypeError(f"iterators must be an iterable of DatasetIterator, got {iterators!r}")
        for iterator in iterators:
            self.add_iterator(iterator)

    @property
    def global_step(self) -> int:
        """The global step now."""
        return int(self._global_step.numpy())

    @property
    def global_step_variable(self) -> Variable:
        """The :class:`Variable` holding the global step (save it with the model)."""
        return self._global_step

    @property
    def iterators(self) -> list[DatasetIterator]:
        """The run's input iterators, in the order they were added (a copy)."""
        return list(self._iterators)

    def add_iterator(self, iterator: DatasetIterator) -> DatasetIterator:
        """Registers an input iterator of the run so that hooks find it; returns it.

        Raises:
            TypeError: When ``iterator`` is not a ``DatasetIterator``.
        """
        if not isinstance(iterator, DatasetIterator):
            raise TypeError(
                f"a session's iterators must be pipestate DatasetIterators (iter(dataset)), got "
                f"{iterator!r:.100} of type {type(iterator).__name__}"
            )
        if all(it is not iterator for it in self._iterators):
            self._iterators.append(iterator)
        return iterator

    @property
    def checkpoint(self) -> Checkpoint | None:
        """The checkpoint of the model and global step, if the run has one."""
        return self._checkpoint

    @property
    def model(self) -> Any:
        """The model, if the run has one."""
        return self._model

    def __repr__(self) -> str:
        return (
            f"Session(global_step={self.global_step}, iterators={len(self._iterators)}, "
            f"checkpoint={self._checkpoint!r})"
        )


class SessionRunArgs(NamedTuple):
    """What a hook's ``before_run`` asks of the coming step.

    Attributes:
        fetches: Names of step outputs to receive in ``after_run``'s
            ``run_values.results``: a str, or a list / tuple / dict of them
            (nested). ``"global_step"`` is the global step after the step; the
            others are the keys of the dict the step returns (a step returning
            a number returns ``{"loss": number}``).
        feed_dict: Kept for compatibility; a pipestate step has no feeds, so it
            must be ``None``.
        options: Passed through to ``run_values.options``.
    """

    fetches: Any
    feed_dict: Any = None
    options: Any = None


class SessionRunValues(NamedTuple):
    """What a hook receives in ``after_run``.

    Attributes:
        results: The hook's fetches, resolved (``None`` when it asked for none).
        options: The ``options`` of the hook's ``SessionRunArgs``.
        run_metadata: Always ``None`` (kept for compatibility).
    """

    results: Any
    options: Any = None
    run_metadata: Any = None


class SessionRunContext:
    """The step being run, as ``before_run`` / ``after_run`` see it.

    Args:
        original_args: What the loop runs (``SessionRunArgs(step_fn)``).
        session: The run's :class:`Session`.
    """

    def __init__(self, original_args: SessionRunArgs, session: Session) -> None:
        self._original_args = original_args
        self._session = session
        self._stop_requested = False

    @property
    def original_args(self) -> SessionRunArgs:
        """What the loop runs: ``SessionRunArgs(fetches=step_fn)``."""
        return self._original_args

    @property
    def session(self) -> Session:
        """The run's :class:`Session`."""
        return self._session

    @property
    def stop_requested(self) -> bool:
        """Whether a hook asked to stop after this step."""
        return self._stop_requested

    def request_stop(self) -> None:
        """Ends the run after this step (the remaining hooks still see it)."""
        self._stop_requested = True

    def __repr__(self) -> str:
        return (
            f"SessionRunContext(session={self._session!r}, stop_requested={self._stop_requested})"
        )


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


# --------------------------------------------------------------------------- loop driver
def _check_fetches(fetches: Any, hook: object) -> None:
    if fetches is None or isinstance(fetches, str):
        return
    if isinstance(fetches, Mapping):
        for value in fetches.values():
            _check_fetches(value, hook)
        return
    if isinstance(fetches, (list, tuple)):
        for value in fetches:
            _check_fetches(value, hook)
        return
    raise TypeError(
        f"{hook!r} asked for fetches {fetches!r:.100}; fetches are output names (str), or "
        "lists / tuples / dicts of them"
    )


def _resolve(fetches: Any, outputs: Mapping[str, Any], hook: object) -> Any:
    if fetches is None:
        return None
    if isinstance(fetches, str):
        if fetches not in outputs:
            raise ValueError(
                f"{hook!r} asked for {fetches!r}, but the step produced only {sorted(outputs)}; "
                "return it from the step function in a dict"
            )
        return outputs[fetches]
    if isinstance(fetches, Mapping):
        return {k: _resolve(v, outputs, hook) for k, v in fetches.items()}
    resolved = [_resolve(v, outputs, hook) for v in fetches]
    return tuple(resolved) if isinstance(fetches, tuple) else resolved


def check_hooks(
    hooks: Iterable[SessionRunHook] | None, what: str = "hooks"
) -> list[SessionRunHook]:
    """``hooks`` as a list, each checked to be a :class:`SessionRunHook`."""
    if hooks is None:
        return []
    if isinstance(hooks, SessionRunHook):
        raise TypeError(f"{what} must be a list of SessionRunHook, got a single hook {hooks!r}")
    if not isinstance(hooks, Iterable):
        raise TypeError(f"{what} must be a list of SessionRunHook, got {hooks!r:.100}")
    checked = list(hooks)
    for hook in checked:
        if not isinstance(hook, SessionRunHook):
            raise TypeError(
                f"All hooks must be SessionRunHook instances, given: {hook!r:.100} of type "
                f"{type(hook).__name__}"
            )
    return checked


class MonitoredSession:
    """Runs steps with hooks around them: the loop driver of the runner and of your own loop.

    Creating it calls every hook's ``begin()`` and then
    ``after_create_session(session, coord)``. Each :meth:`run` calls the
    hooks' ``before_run``, the step function, increments the global step, and
    calls ``after_run`` with the fetches each hook asked for. Leaving the
    ``with`` block normally, or through ``StopIteration`` (the input ended;
    it is swallowed), calls every hook's ``end(session)``; leaving it through
    another exception does not, so a failed run saves nothing.

    Args:
        session: The run's :class:`Session`.
        hooks: The hooks, called in this order.
        increment_global_step: Add 1 to the global step after each step
            (``False`` for evaluation).

    Raises:
        TypeError: For a session that is not a :class:`Session` or a hook that
            is not a :class:`SessionRunHook`.

    Example:
        >>> import pipestate as ps
        >>> it = iter(ps.Dataset.range(10))
        >>> session = ps.training.Session(iterators=[it])
        >>> hooks = [ps.training.StopAtStepHook(last_step=3)]
        >>> seen = []
        >>> with ps.training.MonitoredSession(session, hooks) as mon:
        ...     while not mon.should_stop():
        ...         _ = mon.run(lambda: seen.append(int(next(it))))
        >>> seen, session.global_step
        ([0, 1, 2], 3)
    """

    def __init__(
        self,
        session: Session,
        hooks: Iterable[SessionRunHook] | None = None,
        *,
        increment_global_step: bool = True,
    ) -> None:
        if not isinstance(session, Session):
            raise TypeError(
                f"session must be a pipestate.training.Session, got {session!r:.100} of type "
                f"{type(session).__name__}"
            )
        if not isinstance(increment_global_step, bool):
            raise TypeError(f"increment_global_step must be a bool, got {increment_global_step!r}")
        self._session = session
        self._hooks = check_hooks(hooks)
        self._increment = increment_global_step
        self._coord = Coordinator()
        self._stop_requested = False
        self._closed = False
        for hook in self._hooks:
            hook.begin()
        for hook in self._hooks:
            hook.after_create_session(session, self._coord)

    @property
    def session(self) -> Session:
        """The run's :class:`Session`."""
        return self._session

    @property
    def coordinator(self) -> Coordinator:
        """The :class:`Coordinator` the hooks received."""
        return self._coord

    def should_stop(self) -> bool:
        """Whether the run should end: a hook or the coordinator asked, or the session is closed."""
        return self._closed or self._stop_requested or self._coord.should_stop()

    def run(self, step_fn: Callable[[], Any]) -> Any:
        """Runs one step: hooks' ``before_run``, ``step_fn()``, the global step + 1, ``after_run``.

        Fetch the step's input inside ``step_fn``: hooks (such as the input
        pipeline hook restoring its iterators) act in ``before_run``.

        Args:
            step_fn: Runs the step; returns a dict of named outputs, a number
                (the output ``"loss"``), or ``None``.

        Returns:
            What ``step_fn`` returned.

        Raises:
            RuntimeError: When called after the run should stop.
            StopIteration: From ``step_fn`` when the input ended (the global
                step is not incremented, ``after_run`` is not called, and
                the run stops).
        """
        if not callable(step_fn):
            raise TypeError(f"step_fn must be callable, got {step_fn!r:.100}")
        if self.should_stop():
            raise RuntimeError("Run called even after should_stop requested.")
        context = SessionRunContext(SessionRunArgs(step_fn), self._session)
        requests: list[SessionRunArgs | None] = []
        for hook in self._hooks:
            request = hook.before_run(context)
            if request is not None:
                if not isinstance(request, SessionRunArgs):
                    raise TypeError(
                        f"{hook!r}.before_run must return SessionRunArgs or None, got "
                        f"{request!r:.100}"
                    )
                if request.feed_dict is not None:
                    raise ValueError(
                        f"{hook!r} returned a feed_dict; a pipestate step has no feeds, so "
                        "feed_dict must be None"
                    )
                _check_fetches(request.fetches, hook)
            requests.append(request)
        try:
            output = step_fn()
        except StopIteration:
            self._coord.request_stop()
            raise
        if self._increment:
            self._session.global_step_variable.assign_add(1)
        outputs: dict[str, Any] = {}
        if isinstance(output, Mapping):
            outputs.update(output)
        elif output is not None:
            outputs["loss"] = output
        outputs[GLOBAL_STEP] = self._session.global_step
        for hook, request in zip(self._hooks, requests):
            if request is None:
                values = SessionRunValues(None)
            else:
                values = SessionRunValues(_resolve(request.fetches, outputs, hook), request.options)
            hook.after_run(context, values)
        if context.stop_requested:
            self._stop_requested = True
        return output

    def close(self) -> None:
        """Ends the run: calls every hook's ``end(session)`` (once)."""
        if self._closed:
            return
        self._closed = True
        for hook in self._hooks:
            hook.end(self._session)

    def __enter__(self) -> MonitoredSession:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> bool:
        if exc_type is None or issubclass(exc_type, StopIteration):
            self.close()
            return True
        self._closed = True  # the run failed: no end(), so nothing is saved from a broken state
        return False

    def __repr__(self) -> str:
        return f"MonitoredSession({self._session!r}, hooks={len(self._hooks)})"


# --------------------------------------------------------------------------- timers and hooks
class SecondOrStepTimer:
    """Triggers every ``every_secs`` seconds or every ``every_steps`` steps (exactly one of them).

    Raises:
        ValueError: When both or neither are given, or for a value that is not positive.
        TypeError: For values of the wrong type.
    """

    def __init__(self, every_secs: float | None = None, every_steps: int | None = None) -> None:
        if every_secs is None and every_steps is None:
            raise ValueError("Either every_secs or every_steps should be provided.")
        if every_secs is not None and every_steps is not None:
            raise ValueError("Can not provide both every_secs and every_steps.")
        self._every_secs = check_seconds("every_secs", every_secs)
        self._every_steps = check_count("every_steps", every_steps, minimum=1)
        self._last_triggered_step: int | None = None
        self._last_triggered_time: float | None = None

    def reset(self) -> None:
        """Forgets the last trigger: the next step triggers."""
        self._last_triggered_step = None
        self._last_triggered_time = None

    def should_trigger_for_step(self, step: int) -> bool:
        """Whether ``step`` is due: first call, enough seconds passed, or enough steps."""
        if self._last_triggered_step is None:
            return True
        if self._last_triggered_step == step:
            return False
        if self._every_secs is not None:
            assert self._last_triggered_time is not None
            return time.time() >= self._last_triggered_time + self._every_secs
        assert self._every_steps is not None
        return step >= self._last_triggered_step + self._every_steps

    def update_last_triggered_step(self, step: int) -> tuple[float | None, int | None]:
        """Records a trigger at ``step`` now; returns the seconds and steps since the last one."""
        now = time.time()
        if self._last_triggered_time is None or self._last_triggered_step is None:
            elapsed: tuple[float | None, int | None] = (None, None)
        else:
            elapsed = (now - self._last_triggered_time, step - self._last_triggered_step)
        self._last_triggered_time = now
        self._last_triggered_step = step
        return elapsed

    def last_triggered_step(self) -> int | None:
        """The step of the last trigger, or ``None``."""
        return self._last_triggered_step

    def __repr__(self) -> str:
        every = (
            f"every_secs={self._every_secs}"
            if self._every_secs is not None
            else f"every_steps={self._every_steps}"
        )
        return f"SecondOrStepTimer({every})"


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

    Raises:
        ValueError: When both or neither of ``save_secs`` / ``save_steps`` are
            given, or for bad values.
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
        self._manager = self._make_manager(checkpoint)
        return self._manager

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
        path = self._manager.save(checkpoint_number=step)
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
