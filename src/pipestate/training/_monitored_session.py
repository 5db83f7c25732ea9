"""``MonitoredSession``: the loop driver that runs steps with hooks around them.

It calls the hooks of :mod:`pipestate.training` around each step, for the
estimator-style runner and for hand-written loops alike, and hands each hook
the step outputs it asked for in ``before_run``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pipestate.training._hooks import SessionRunHook
from pipestate.training._session import (
    Coordinator,
    Session,
    SessionRunArgs,
    SessionRunContext,
    SessionRunValues,
)

__all__ = ["GLOBAL_STEP", "MonitoredSession", "check_hooks"]

GLOBAL_STEP = "global_step"
"""The fetch name of the global step (its value after the step)."""


def _check_fetches(fetches: Any, hook: object) -> None:
    """Checks that a hook's fetches are output names, or nested lists / tuples / dicts of them."""
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
    """``fetches`` with each name replaced by its output, in the same structure."""
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


def _checked_request(hook: SessionRunHook, request: Any) -> SessionRunArgs | None:
    """What ``hook.before_run`` returned, checked to be ``SessionRunArgs`` of names, or ``None``."""
    if request is None:
        return None
    if not isinstance(request, SessionRunArgs):
        raise TypeError(
            f"{hook!r}.before_run must return SessionRunArgs or None, got {request!r:.100}"
        )
    if request.feed_dict is not None:
        raise ValueError(
            f"{hook!r} returned a feed_dict; a pipestate step has no feeds, so feed_dict must "
            "be None"
        )
    _check_fetches(request.fetches, hook)
    return request


def _named_outputs(output: Any, global_step: int) -> dict[str, Any]:
    """The step's outputs by fetch name: its dict, or a number as ``"loss"``, and the step."""
    outputs: dict[str, Any] = {}
    if isinstance(output, Mapping):
        outputs.update(output)
    elif output is not None:
        outputs["loss"] = output
    outputs[GLOBAL_STEP] = global_step
    return outputs


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
        requests = [_checked_request(hook, hook.before_run(context)) for hook in self._hooks]
        try:
            output = step_fn()
        except StopIteration:
            self._coord.request_stop()
            raise
        if self._increment:
            self._session.global_step_variable.assign_add(1)
        outputs = _named_outputs(output, self._session.global_step)
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
