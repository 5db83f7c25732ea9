"""A loader's worker processes: starting them, their pipes and blocks, stopping them."""

from __future__ import annotations

import collections
import contextlib
import itertools
import multiprocessing
import os
import pickle
import sys
import threading
import time
import weakref
from multiprocessing import connection
from typing import TYPE_CHECKING, Any

from pipestate.data import _shm
from pipestate.data._launch import dumps_for_workers, started_without_main
from pipestate.data._loader_worker import worker_main
from pipestate.data.iterator import draw_entropy

if TYPE_CHECKING:
    from pipestate.data.loader import Loader

__all__ = ["Pool", "Task", "lease_numbers"]


_SHUTDOWN_SECONDS = 2.0


_SEED_MASK = (1 << 64) - 1


_PRELOAD = ("pipestate.data._loader_worker",)
"""What a fork server imports once for all its workers (plus ``torch`` when this process has it)."""


lease_numbers = itertools.count(1)


class Pool:
    """Worker processes, their pipes and their shared-memory names: one iterator's, or a loader's.

    The iterator holding the current lease sends tasks; each worker answers
    its tasks in order, so results of tasks sent under an earlier lease (or
    before a restore) are dropped as they arrive.
    """

    def __init__(self, loader: Loader, blocks: _shm.Blocks) -> None:
        self.procs: list[Any] = []
        self.conns: list[Any] = []
        self.blocks = blocks
        self.sent: list[collections.deque[Task]] = []  # per worker: sent, result not read
        self.ready: list[bool] = []  # per worker: start-up done
        self.lease = next(lease_numbers)
        self.needs_main = False
        self.context = loader._context
        self._finalizer = weakref.finalize(
            self, _shutdown, self.procs, self.conns, self.blocks, True, os.getpid()
        )
        self._prepare(loader)

    def _prepare(self, loader: Loader) -> None:
        """What every worker is started with: the pickled dataset (unless forked) and seeds."""
        method = loader._context
        self._mp = multiprocessing.get_context(method)
        content = (
            loader._dataset,
            loader._collate_fn,
            loader._worker_init_fn,
            loader._info_dataset,
        )
        self._payload: Any = content  # fork: inherited, never pickled
        if method != "fork":
            try:
                self._payload, self.needs_main = dumps_for_workers(content)
            except (pickle.PicklingError, AttributeError, TypeError) as err:
                self.stop()
                why = ""
                if loader._context_chosen:
                    why = (
                        f" ({method!r} is the default because {threading.active_count()} "
                        "threads are running here, where 'fork' is unsafe)"
                    )
                raise TypeError(
                    f"Loader: the dataset can't be sent to worker processes started with "
                    f"{method!r}{why}: {err}. Define the pipeline's functions at module level "
                    "(not lambdas or local functions), or use multiprocessing_context='fork'."
                ) from err
            if method == "forkserver":
                # Imported once by the fork server (when it is not running yet), not
                # per worker; never the user's main module.
                preload = [*_PRELOAD, *(["torch"] if "torch" in sys.modules else [])]
                self._mp.set_forkserver_preload(preload)
        seed = loader._worker_seed
        self._seed = draw_entropy() if seed is None else seed
        self.count = loader._num_workers

    def add(self) -> None:
        """Starts the next worker."""
        worker, count = len(self.procs), self.count
        ours, theirs = self._mp.Pipe(duplex=True)
        proc = self._mp.Process(  # type: ignore[attr-defined]
            target=worker_main,
            args=(theirs, self._payload, worker, count, (self._seed + worker) & _SEED_MASK),
            name=f"pipestate-loader-{worker}",
            daemon=True,
        )
        try:
            with started_without_main(self.context != "fork" and not self.needs_main):
                proc.start()
        except BaseException:
            ours.close()
            theirs.close()
            self.stop()
            raise
        theirs.close()
        self.procs.append(proc)
        self.conns.append(ours)
        self.sent.append(collections.deque())
        self.ready.append(False)

    @property
    def alive(self) -> bool:
        """Whether the workers have not been stopped."""
        return self._finalizer.alive

    def stop(self, graceful: bool = True) -> None:
        """Stops the workers and removes every block not yet read."""
        if self._finalizer.detach() is not None:
            _shutdown(self.procs, self.conns, self.blocks, graceful, os.getpid())


class Task:
    __slots__ = ("name", "start", "stop", "worker")

    def __init__(self, worker: int, start: int, stop: int, name: str) -> None:
        self.worker, self.start, self.stop, self.name = worker, start, stop, name


def _shutdown(
    procs: list[Any], conns: list[Any], blocks: _shm.Blocks, graceful: bool, owner: int
) -> None:
    """Stops worker processes, then removes every block handed out and not yet read.

    Gracefully, each worker finishes its chunk in hand and exits; otherwise
    (or past a deadline) they are terminated. Only in the process that
    started them, ``owner``: a forked worker holds a copy of every pool of
    its parent, and collecting one there must not touch the parent's workers
    or blocks.
    """
    if os.getpid() != owner:
        return
    for conn in conns:
        with contextlib.suppress(BrokenPipeError, OSError):
            conn.send(None)
    deadline = time.monotonic() + (_SHUTDOWN_SECONDS if graceful else 0.0)
    while any(proc.is_alive() for proc in procs) and time.monotonic() < deadline:
        _drain(conns, timeout=0.05)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(1.0)
        if proc.is_alive():
            proc.kill()
            proc.join(1.0)
    for conn in conns:
        conn.close()
    # No worker can create a block any more: whatever each one had been given
    # (read or not, created, half-created or not at all) can go.
    blocks.release_all()


def _drain(conns: list[Any], timeout: float) -> None:
    """Reads and drops the workers' messages, so none blocks on a full pipe while stopping."""
    open_conns = [conn for conn in conns if not conn.closed]
    ready: list[Any] = connection.wait(open_conns, timeout)
    for conn in ready:
        try:
            while conn.poll(0):
                conn.recv()
        except (EOFError, OSError):
            conn.close()
