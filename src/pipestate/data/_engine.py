"""The thread pool behind ``prefetch`` and ``map(num_parallel_calls=...)``, and its hand-off.

Work is handed between threads in chunks: a queue round trip between two
threads costs tens of microseconds, so a worker produces a chunk worth a few
milliseconds of work before handing it over, and the consumer reads the
elements of a chunk with no synchronisation at all. An :class:`Engine` runs
the workers and hands numbered :class:`Chunk` objects to the consumer; what a
chunk holds is decided by its user: a range of output indices of a
random-access pipeline (``_threaded``) or elements of a streaming input with
its states (``_feed``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from pipestate.data import _structure
from pipestate.data.options import AUTOTUNE

if TYPE_CHECKING:
    from pipestate.data.dataset import Dataset

TARGET_CHUNK_SECONDS = 0.008
"""Work per hand-off: large enough that the hand-off costs a few percent at most."""
MAX_CHUNK = 1 << 15
"""Most elements in one chunk, whatever their cost."""
MAX_CHUNK_BYTES = 1 << 21
"""Most bytes of array data in one chunk (unless taking states needs longer chunks)."""
WINDOW = 4
"""Chunks each worker may have ahead of the consumer."""
AUTOTUNE_GAIN = 1.25
"""How much faster all threads must be than one for an ``AUTOTUNE`` map to keep them."""
JOIN_SECONDS = 5.0
"""How long ``close()`` waits for a worker finishing its chunk."""


def available_cores() -> int:
    """The number of cores this process may run on (its affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def resolve_parallelism(value: int) -> int:
    """``AUTOTUNE`` as the number of available cores; other values as they are."""
    return available_cores() if value == AUTOTUNE else value


def read_range(
    source: Dataset, epoch: int, start: int, stop: int
) -> tuple[list[Any], BaseException | None]:
    """Elements ``[start, stop)`` of a random-access dataset, as the index iterator reads them.

    Returns the elements read and ``None``, or the elements before the first
    one that failed and that error, so the consumer fails at the same element
    a sequential iterator would.
    """
    out: list[Any] = []
    position = start
    if source._vectorised and stop - start > 1:
        positions = np.arange(start, stop, dtype=np.int64)
        try:
            batch = source._get_batch(np.full_like(positions, epoch), positions)
        except Exception:
            pass  # find the failing element one at a time below
        else:
            return _structure.unstack(batch, len(positions)), None
    while position < stop:
        try:
            # Reads ahead cheaply (a map reads its input as one block); stops
            # before an element that fails, which raises when asked for alone.
            block = source._get_list(epoch, np.arange(position, stop, dtype=np.int64))
        except Exception as err:  # re-raised at the consumer, at this element
            return out, err
        if not block:
            break
        out.extend(block)
        position += len(block)
    return out, None


def _nbytes(element: Any) -> int:
    """The bytes of an element's array data."""
    return sum(getattr(leaf, "nbytes", 8) for leaf in _structure.flatten(element))


class Chunk:
    """Consecutive elements produced by one worker, with what the consumer needs to track them."""

    __slots__ = (
        "after",
        "elements",
        "end",
        "error",
        "error_after",
        "final",
        "overhead",
        "planned",
        "seq",
        "start",
        "tokens",
    )

    def __init__(self, seq: int, planned: int) -> None:
        self.seq = seq
        self.planned = planned  # elements reserved for it against the buffer limit
        self.start = 0  # random access: index of elements[0]
        self.elements: list[Any] = []
        self.tokens: list[Any] = []  # streaming: the input's state after each element
        self.error: BaseException | None = None
        self.error_after: Any = None  # streaming: the input's state after the failing element
        self.end = False  # streaming: the input ended after these elements
        self.after: Any = None  # streaming: the input's state after the chunk
        self.final: Any = None  # streaming: the input's state once it ended
        self.overhead = 0.0  # seconds spent taking states, for sizing chunks


class Engine:
    """Worker threads producing numbered chunks, and the consumer's side of the hand-off.

    ``claim(size)`` runs under the engine's lock and returns a ticket (or
    ``None`` when there is nothing left to claim); ``work(ticket)`` runs
    outside it and returns a :class:`Chunk` (or ``None``). Workers keep up to
    ``WINDOW`` chunks each, or ``buffer`` elements, ahead of the consumer: a
    deep window, so a consumer woken late (on a busy machine, or waiting for
    the GIL) does not stall the workers. The chunk size adapts so one chunk is
    about ``TARGET_CHUNK_SECONDS`` of work.

    With ``autotune`` one worker runs first; then all of them, and they stay
    only if together they compute elements at least ``AUTOTUNE_GAIN`` times
    as fast. Work that holds the GIL (plain Python) does not gain, and extra
    threads would only fight over it.

    The engine holds no reference to the iterator that owns it, so dropping
    the iterator stops the workers (through ``weakref.finalize``).
    """

    def __init__(
        self,
        name: str,
        workers: int,
        buffer: int,
        claim: Callable[[int], Any],
        work: Callable[[Any], Chunk | None],
        on_exit: Callable[[], None] | None = None,
        *,
        autotune: bool = False,
    ) -> None:
        self._name = name
        self._workers = workers
        self._active = 1 if autotune else workers  # workers allowed to claim chunks
        self._probe = 0 if autotune and workers > 1 else 2  # 0: one worker, 1: all, 2: decided
        self._probe_seconds = 0.0
        self._probe_elements = 0
        self._probe_chunks = 0
        self._single_cost = 0.0
        self._buffer = buffer
        self._claim = claim
        self._work = work
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)  # the consumer waits for results here
        self._room = threading.Condition(self._lock)  # workers wait for buffer room here
        self._results: dict[int, Chunk] = {}
        self._chunks_out = 0  # claimed and not yet taken by the consumer
        self._elements_out = 0
        self._halt: int | None = None  # no chunk numbered >= this will be produced
        self._taken = 0
        self._stopped = False
        self._exited = False
        self._alive = 0
        self._chunk_size = 1
        self._per_element: float | None = None
        self._threads: list[threading.Thread] = []
        self._fatal: BaseException | None = None
        self._waiting = False  # the consumer is blocked in take()

    def start(self) -> None:
        self._alive = self._workers
        for i in range(self._workers):
            thread = threading.Thread(
                target=self._run, args=(i,), name=f"pipestate-{self._name}-{i}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    # ----------------------------------------------------------------- workers
    def _has_room(self) -> bool:
        return self._chunks_out < WINDOW * self._active or self._elements_out < self._buffer

    def _run(self, index: int) -> None:
        try:
            while True:
                claimed = self._next_ticket(index)
                if claimed is None:
                    return
                ticket, size = claimed
                began = time.perf_counter()
                try:
                    chunk = self._work(ticket)
                except BaseException as err:  # not the user's code failing: stop everything
                    with self._lock:
                        self._fatal = err
                        self.halt(0)
                    return
                elapsed = time.perf_counter() - began
                if chunk is None:
                    with self._lock:
                        self._chunks_out -= 1
                        self._elements_out -= size
                        self._room.notify()
                    return
                if self._deliver(chunk, size, elapsed):
                    # Let the waiting consumer take the GIL now rather than after
                    # the interpreter's switch interval (5 ms): latency, not CPU.
                    time.sleep(0)
        finally:
            with self._lock:
                self._alive -= 1
                exiting = self._alive == 0 and self._stopped and not self._exited
                if exiting:
                    self._exited = True
                self._ready.notify_all()
            if exiting and self._on_exit is not None:
                self._on_exit()

    def _next_ticket(self, index: int) -> tuple[Any, int] | None:
        """Waits for room, then claims a chunk: ``(ticket, size)``, or ``None`` to exit."""
        with self._lock:
            while (
                not self._stopped
                and self._halt is None
                and (index >= self._active or not self._has_room())
            ):
                self._room.wait()
            if self._stopped or self._halt is not None:
                return None
            size = self._chunk_size
            ticket = self._claim(size)
            if ticket is None:
                return None
            self._chunks_out += 1
            self._elements_out += size
            return ticket, size

    def _deliver(self, chunk: Chunk, size: int, elapsed: float) -> bool:
        """Hands a chunk to the consumer; ``True`` if the consumer is waiting for one."""
        with self._lock:
            chunk.planned = size
            self._results[chunk.seq] = chunk
            if chunk.error is not None or chunk.end:
                self._halt = chunk.seq + 1 if self._halt is None else self._halt
                self._room.notify_all()
            if chunk.elements:
                self._adapt(
                    elapsed / len(chunk.elements),
                    chunk.overhead,
                    _nbytes(chunk.elements[0]),
                )
                if self._probe < 2:
                    self._tune(elapsed, len(chunk.elements))
            self._ready.notify()
            return self._waiting

    def _adapt(self, per_element: float, overhead: float, element_bytes: int) -> None:
        """Sizes the next chunks from the measured cost of an element (under the lock).

        ``overhead`` is a per-chunk cost (taking a state): chunks get long
        enough for it to be at most 5 % of their work. Chunks of large elements
        are kept under ``MAX_CHUNK_BYTES``, so memory freed by the consumer is
        reused by the workers instead of new memory being faulted in.
        """
        estimate = self._per_element
        estimate = per_element if estimate is None else 0.5 * (estimate + per_element)
        self._per_element = estimate
        target = max(TARGET_CHUNK_SECONDS, 20 * overhead)
        wanted = int(target / max(estimate, 1e-9))
        if not overhead:
            wanted = min(wanted, MAX_CHUNK_BYTES // max(element_bytes, 1))
        self._chunk_size = max(1, min(wanted, MAX_CHUNK, 4 * self._chunk_size))

    def _tune(self, seconds: float, elements: int) -> None:
        """Autotune: times one worker, then all; keeps all if they are faster (under the lock)."""
        self._probe_seconds += seconds
        self._probe_elements += elements
        self._probe_chunks += 1
        active = self._active
        if (
            self._probe_chunks < 4 * active
            or self._probe_seconds < 2 * TARGET_CHUNK_SECONDS * active
        ):
            return
        cost = self._probe_seconds / self._probe_elements  # seconds per element, per worker
        self._probe_seconds, self._probe_elements, self._probe_chunks = 0.0, 0, 0
        if self._probe == 0:
            self._single_cost = cost
            self._active = self._workers
            self._probe = 1
            self._room.notify_all()
        else:
            if self._workers * self._single_cost < AUTOTUNE_GAIN * cost:
                self._active = 1
            self._probe = 2

    def halt(self, seq: int) -> None:
        """Records (under the lock, from ``claim``) that nothing from ``seq`` on exists."""
        self._halt = seq if self._halt is None else min(self._halt, seq)
        self._room.notify_all()

    # ---------------------------------------------------------------- consumer
    def take(self, seq: int | None) -> Chunk | None:
        """Chunk ``seq`` (``None``: the first ready), waiting for it; ``None`` at the end."""
        with self._lock:
            while True:
                if seq is None:
                    chunk = self._results.pop(min(self._results), None) if self._results else None
                else:
                    chunk = self._results.pop(seq, None)
                if chunk is not None:
                    self._taken += 1
                    self._chunks_out -= 1
                    self._elements_out -= chunk.planned
                    self._room.notify()
                    return chunk
                if self._fatal is not None:
                    raise RuntimeError(f"pipestate {self._name} worker failed") from self._fatal
                halt = self._halt
                if halt is not None and (self._taken >= halt if seq is None else seq >= halt):
                    return None
                if self._stopped:
                    raise RuntimeError(f"pipestate {self._name} workers were stopped")
                if self._alive == 0:
                    raise RuntimeError(
                        f"pipestate {self._name} workers exited without producing chunk {seq}"
                    )
                self._waiting = True
                self._ready.wait()
                self._waiting = False

    def stop(self, join: bool = False) -> None:
        """Stops the workers (they finish the chunk in hand); idempotent, safe from any thread."""
        with self._lock:
            self._stopped = True
            self._results.clear()
            exiting = self._alive == 0 and not self._exited
            if exiting:
                self._exited = True
            self._room.notify_all()
            self._ready.notify_all()
        if exiting and self._on_exit is not None:
            self._on_exit()
        if join:
            current = threading.current_thread()
            deadline = time.monotonic() + JOIN_SECONDS
            for thread in self._threads:
                if thread is not current:
                    thread.join(max(0.0, deadline - time.monotonic()))


def surface(error: BaseException, where: str) -> BaseException:
    """The worker's exception, noted with where it was raised, to re-raise at the consumer.

    Re-raising the same object keeps the worker's frames in its traceback.
    """
    note = f"(raised in {where})"
    notes = getattr(error, "__notes__", None)
    if hasattr(error, "add_note") and (notes is None or note not in notes):
        error.add_note(note)
    return error
