"""The session hooks see: the state of one run, its stop flag, and what one step asks and returns.

pipestate has no graph and no ``tf.Session``. What hooks see as ``session``
is a :class:`Session`: the state of one training (or evaluation) run — the
global step, the iterators created for it (TensorFlow's iterators
collection), the model and the :class:`~pipestate.Checkpoint` that saves it.
Hooks read it directly instead of calling ``session.run``. ``coord`` is a
:class:`Coordinator`, a stop flag shared by the hooks and the loop.
:class:`SessionRunArgs`, :class:`SessionRunValues` and
:class:`SessionRunContext` are what a hook's ``before_run`` / ``after_run``
exchange with the loop (:class:`~pipestate.training.MonitoredSession`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np

from pipestate._validate import check_count
from pipestate.checkpoint import Checkpoint, Variable
from pipestate.data import DatasetIterator

__all__ = [
    "Coordinator",
    "Session",
    "SessionRunArgs",
    "SessionRunContext",
    "SessionRunValues",
]


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
