"""Which checkpoints a manager keeps: its list, their save times, and the preservation clock.

As in ``tf.train.CheckpointManager``: beyond ``max_to_keep`` the oldest
checkpoints leave the list and are deleted, except that one is preserved for
good (left on storage, no longer listed) when ``keep_checkpoint_every_n_hours``
have passed since the last preserved one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from pipestate.checkpoint._state_file import CheckpointState

__all__ = ["RetainedCheckpoints"]


class RetainedCheckpoints:
    """The checkpoints a manager may still delete (oldest first, with save times) and its latest.

    Not thread-safe: the manager holds its lock around every use. Times are
    passed in by the caller, which reads the clock.

    Raises:
        TypeError, ValueError: For a ``max_to_keep`` that is not a positive int
            or ``None``, or hours that are not a positive number or ``None``.
    """

    def __init__(
        self, max_to_keep: int | None, keep_checkpoint_every_n_hours: float | None
    ) -> None:
        if max_to_keep is not None:
            if isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int):
                raise TypeError(
                    f"Expected a positive integer or `None` for `max_to_keep`, got "
                    f"{max_to_keep!r} of type {type(max_to_keep).__name__}"
                )
            if max_to_keep <= 0:
                raise ValueError(
                    f"Expected a positive integer or `None` for `max_to_keep`, got {max_to_keep}."
                )
        hours = keep_checkpoint_every_n_hours
        if hours is not None and (
            isinstance(hours, bool)
            or not isinstance(hours, (int, float))
            or not math.isfinite(hours)
            or hours <= 0
        ):
            raise ValueError(
                "keep_checkpoint_every_n_hours must be a positive number of hours or None, got "
                f"{hours!r}"
            )
        self.max_to_keep = max_to_keep
        self.hours = hours
        # Path -> save time, oldest first: the checkpoints that may still be deleted.
        self.times: dict[str, float] = {}
        self.latest: str | None = None
        self.last_preserved = 0.0

    def __repr__(self) -> str:
        return (
            f"RetainedCheckpoints(max_to_keep={self.max_to_keep}, hours={self.hours}, "
            f"listed={len(self.times)}, latest={self.latest!r})"
        )

    def start(self, now: float) -> None:
        """Start the preservation clock of a directory without a state file."""
        # A little in the past, so that a manager re-created at once still preserves.
        self.last_preserved = now - 1.0

    def recover(self, state: CheckpointState, now: float) -> float:
        """Take over the list, save times and preservation clock of a state file.

        Save times later than ``now`` are capped at ``now``, so that a clock
        gone backwards deletes nothing early.

        Returns:
            How many seconds ``now`` is behind the last preserved time (0 when it is not).
        """
        self.latest = state.model_checkpoint_path
        self.times = {}
        preserved = state.last_preserved_timestamp or 0.0
        behind = max(preserved - now, 0.0)
        preserved = min(preserved, now)
        self.last_preserved = preserved
        paths = state.all_model_checkpoint_paths
        stamps = state.all_model_checkpoint_timestamps or [preserved] * len(paths)
        for path, stamp in zip(paths, stamps):
            stamp = min(stamp, now)
            if stamp > preserved:
                self.times[path] = stamp
        return behind

    def snapshot(self) -> tuple[dict[str, float], str | None]:
        """What :meth:`rollback` restores."""
        return dict(self.times), self.latest

    def rollback(self, snapshot: tuple[dict[str, float], str | None]) -> None:
        """Go back to a :meth:`snapshot`."""
        self.times, self.latest = snapshot

    def add(self, path: str, replaces: str, now: float) -> None:
        """Make ``path``, saved at ``now``, the latest; one saved again moves to the end."""
        self.times.pop(replaces, None)
        self.times.pop(path, None)
        self.times[path] = now
        self.latest = path

    def rename(self, old: str, new: str) -> None:
        """``old`` is now called ``new``, in its place in the list, and is the latest."""
        self.times = {(new if path == old else path): stamp for path, stamp in self.times.items()}
        self.latest = new

    def expired(self) -> Iterator[str]:
        """Take the oldest checkpoints beyond ``max_to_keep`` off the list; yield those to delete.

        A preserved checkpoint leaves the list too (so that the list stays
        short) but is not yielded. Each is taken off only when the previous one
        was handled.
        """
        if not self.max_to_keep:
            return  # everything stays in the kept set; the preservation clock does not move
        while len(self.times) > self.max_to_keep:
            path = next(iter(self.times))
            stamp = self.times.pop(path)
            if self.hours and stamp - self.hours * 3600.0 >= self.last_preserved:
                self.last_preserved = stamp
                continue
            yield path

    def state(self, relative: Callable[[str], str]) -> CheckpointState:
        """The state file's contents, with paths as ``relative`` stores them."""
        assert self.latest is not None
        return CheckpointState(
            relative(self.latest),
            [relative(p) for p in self.times],
            list(self.times.values()),
            self.last_preserved,
        )
