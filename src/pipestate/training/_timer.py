"""``SecondOrStepTimer``: when a periodic hook is due, every N seconds or every N steps."""

from __future__ import annotations

import time

from pipestate._validate import check_count, check_seconds

__all__ = ["SecondOrStepTimer"]


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

    @property
    def every_secs(self) -> float | None:
        """The interval in seconds, or ``None`` for a step interval."""
        return self._every_secs

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
