"""Background saving: host copies of the state, one save in flight, errors on the next call."""

from __future__ import annotations

import concurrent.futures.thread  # noqa: F401  (registers its exit hook before ours, below)
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

__all__ = ["AsyncWriter", "HostBuffers"]

_WRITERS: weakref.WeakSet[AsyncWriter] = weakref.WeakSet()


def _finish_at_exit() -> None:
    """Let saves in flight commit when the program ends, before thread pools shut down."""
    for writer in list(_WRITERS):
        try:
            writer.wait()
        except BaseException as err:
            warnings.warn(
                f"an async checkpoint save failed as the program ended: {err}",
                RuntimeWarning,
                stacklevel=1,
            )


# Hooks registered here run before the interpreter joins its threads, newest first: so this
# one runs before concurrent.futures stops accepting work, which writing shards needs.
getattr(threading, "_register_atexit", lambda fn: None)(_finish_at_exit)


class HostBuffers:
    """Host memory for the arrays of async saves, reused from one save to the next.

    Copying into memory that is already mapped costs about half of copying
    into fresh memory, and does not depend on how fast the system hands out
    pages. Only one snapshot uses the buffers at a time: a save waits for the
    previous one before copying. Buffers of arrays that a save no longer has
    are released.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}
        self._used: set[str] = set()

    def __repr__(self) -> str:
        nbytes = sum(b.nbytes for b in self._buffers.values())
        return f"HostBuffers({len(self._buffers)} arrays, {nbytes} bytes)"

    @contextmanager
    def snapshot(self) -> Iterator[Callable[[str, np.ndarray], np.ndarray]]:
        """Yield ``copy(key, array)`` for one snapshot; then drop buffers it did not use."""
        self._used = set()
        try:
            yield self.copy
        finally:
            for key in set(self._buffers) - self._used:
                del self._buffers[key]

    def copy(self, key: str, array: np.ndarray) -> np.ndarray:
        """A C-ordered copy of ``array`` in the buffer kept for ``key``."""
        buffer = self._buffers.get(key)
        if buffer is None or buffer.shape != array.shape or buffer.dtype != array.dtype:
            buffer = self._buffers[key] = np.empty(array.shape, array.dtype)
        np.copyto(buffer, array, casting="no")
        self._used.add(key)
        return buffer


class AsyncWriter:
    """Runs the write-and-commit part of saves on a background thread, one at a time.

    :meth:`submit` waits for the save in flight before starting the next one.
    An error of a background save is kept and raised by the next
    :meth:`submit`, :meth:`wait` or :meth:`raise_if_failed`, once.

    A program that ends while a save is in flight waits for it to commit (or
    fail) before it exits. The thread is a daemon all the same, so that an
    interrupted exit is not held up: with a storage ``timeout``, every
    storage call of the save is bounded, so a hung storage fails the save
    rather than the exit.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._what = ""
        self._error: BaseException | None = None
        self.buffers = HostBuffers()
        # Held from waiting for the previous save to submitting the next one, so that
        # two threads saving at once cannot both copy into the buffers.
        self.saving = threading.RLock()
        _WRITERS.add(self)

    def __repr__(self) -> str:
        state = f"writing {self._what!r}" if self.in_flight else "idle"
        return f"AsyncWriter({state})"

    @property
    def in_flight(self) -> bool:
        """Whether a background save is still running."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def submit(self, what: str, job: Callable[[], object]) -> None:
        """Wait for the save in flight (raising its error), then run ``job`` in the background."""
        with self._lock:
            self._join()
            self._what = what
            self._thread = threading.Thread(
                target=self._run, args=(job,), name=f"pipestate-async-save({what})", daemon=True
            )
            self._thread.start()

    def wait(self) -> None:
        """Block until no save is in flight; raise the error of a failed background save."""
        with self._lock:
            self._join()

    def raise_if_failed(self) -> None:
        """Raise the error of a background save that has failed already, without blocking."""
        with self._lock:
            if not self.in_flight:
                self._join()

    def _join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _run(self, job: Callable[[], object]) -> None:
        try:
            job()
        except BaseException as err:  # raised by the caller's next call
            self._error = err
