"""Background threads for ``prefetch`` and ``map(num_parallel_calls=...)``.

Work is handed between threads in chunks: a queue round trip between two
threads costs tens of microseconds, so a worker produces a chunk worth a few
milliseconds of work before handing it over, and the consumer reads the
elements of a chunk with no synchronisation at all. Each delivered element
has a position the consumer can report exactly:

- over a random-access pipeline (``ThreadedIndexIterator``) a chunk is a range
  of output indices, so the position is ``chunk start + offset``: one int;
- over a streaming input (``StreamFeed``) each element travels with the input
  iterator's state just after it, taken by the worker that read it.

Prefetched and in-flight chunks are never saved: restoring drops them and
restarts the workers at the restored position.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from pipestate._validate import brief
from pipestate.data import _structure
from pipestate.data.iterator import IndexIterator, State, check_keys, read_int, read_seed
from pipestate.data.options import AUTOTUNE
from pipestate.errors import StateMismatchError

if TYPE_CHECKING:
    from pipestate.data.dataset import Dataset
    from pipestate.data.iterator import DatasetIterator

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


# ------------------------------------------------------------------ reading
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
                with self._lock:
                    while (
                        not self._stopped
                        and self._halt is None
                        and (index >= self._active or not self._has_room())
                    ):
                        self._room.wait()
                    if self._stopped or self._halt is not None:
                        return
                    size = self._chunk_size
                    ticket = self._claim(size)
                    if ticket is None:
                        return
                    self._chunks_out += 1
                    self._elements_out += size
                began = time.perf_counter()
                try:
                    chunk = self._work(ticket)
                except BaseException as err:  # not the user's code failing: stop everything
                    with self._lock:
                        self._fatal = err
                        self.halt(0)
                    return
                elapsed = time.perf_counter() - began
                with self._lock:
                    if chunk is None:
                        self._chunks_out -= 1
                        self._elements_out -= size
                        self._room.notify()
                        return
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
                    handover = self._waiting
                if handover:
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


# ---------------------------------------------------- random-access pipelines
def background_settings(dataset: Dataset) -> tuple[int, int, bool, bool]:
    """``(threads, buffer, reorder, autotune)`` wanted by a pipeline's prefetch / parallel maps.

    ``threads`` is 0 when the pipeline has none. ``reorder`` is true when the
    op whose elements the iterator yields is a ``map(deterministic=False)``
    (prefetch ops above it aside): only then may chunks arrive out of order
    without changing what any op after it computes. ``autotune`` is true
    unless a parallel map asked for an explicit number of threads.
    """
    threads = buffer = 0
    autotune = True
    stack = [dataset]
    while stack:
        node = stack.pop()
        wanted = node._background()
        if wanted is not None:
            threads = max(threads, wanted.threads)
            buffer = max(buffer, wanted.buffer)
            autotune = autotune and wanted.autotune
        stack.extend(node._parents)
    top = dataset
    while top._passthrough:
        top = top._parents[0]
    top_wants = top._background()
    reorder = threads > 0 and top_wants is not None and top_wants.reorder
    return threads, buffer, reorder, autotune


def index_iterator(dataset: Dataset, entropy: int | None, epoch: int = 0) -> DatasetIterator:
    """The iterator of a random-access pipeline: threaded if it has prefetch or parallel map."""
    threads, buffer, reorder, autotune = background_settings(dataset)
    if threads:
        return ThreadedIndexIterator(dataset, entropy, epoch, threads, buffer, reorder, autotune)
    return IndexIterator(dataset, entropy, epoch)


class ChunkIndexIterator(IndexIterator):
    """Base of index iterators whose elements arrive in chunks from elsewhere.

    The consumer reads a chunk with no synchronisation; ``_advance`` fetches
    the next one. ``_index`` (the index of the next element) is the chunk's
    start plus the offset in it, so ops that read ``parent._index - 1`` after
    ``next`` see the index of the element they got.
    """

    _elements: Sequence[Any] = ()
    _pos = 0
    _chunk_start = 0

    def __init__(self, dataset: Dataset, entropy: int | None, epoch: int = 0) -> None:
        self._error: BaseException | None = None
        super().__init__(dataset, entropy, epoch)
        self.__dict__.pop("_next", None)  # the index iterator's per-element path is not used

    @property
    def _index(self) -> int:
        return self._chunk_start + self._pos

    @_index.setter
    def _index(self, value: int) -> None:
        self._chunk_start = value
        self._pos = 0
        self._elements = []

    def _next(self) -> Any:
        pos = self._pos
        elements = self._elements
        if pos < len(elements):
            self._pos = pos + 1
            return elements[pos]
        return self._advance()

    def _advance(self) -> Any:
        """Moves to the next chunk and returns its first element; raises at the end or on error."""
        raise NotImplementedError


class ModeChooser:
    """Chooses between computing chunks in the consumer's thread and on a lone thread.

    A lone background thread (a ``prefetch``, or a map on one thread) pays only
    when the consumer has work of its own that runs while the thread computes
    (a training step that releases the GIL); otherwise hand-offs and the fight
    for the GIL make it slower than computing inline. So both are measured:
    windows of ``WINDOW_SECONDS`` of the consumer's wall time, inline and on
    the thread, are compared by elements delivered per second (the first chunk
    after a start or a switch left out: it carries start-up costs, a shuffle
    buffer's filling); the thread stays only if it is ``GAIN`` times faster,
    and the other mode is tried again every ``REPROBE`` windows. It starts inline.
    """

    WINDOW_SECONDS = 0.05
    WINDOW_CHUNKS = 3
    GAIN = 1.1
    REPROBE = 16
    OVERLAP = 0.2  # share of the consumer's own time below which a thread is not tried

    def __init__(self) -> None:
        self.inline = True
        self._start: float | None = None
        self._settle = 1  # chunks to let pass before a window starts: start-up costs
        self._elements = 0
        self._chunks = 0
        self._probing = False
        self._windows = 0  # windows since the last probe of the other mode
        self._reprobe = 1  # the first probe comes after one window
        self._rate = 0.0  # elements per second in the mode kept
        self._own = 0.0  # inline: the consumer's own time, this window
        self._span = 0.0  # inline: the window's time, measured alongside

    def note_inline(self, own: float, span: float) -> None:
        """Inline: ``span`` seconds passed, ``own`` of them outside the pipeline's work."""
        self._own += own
        self._span += span

    def count(self, elements: int) -> None:
        """Records a chunk of ``elements`` delivered."""
        self._elements += elements
        self._chunks += 1

    def switch_due(self, now: float) -> bool:
        """At a chunk boundary: closes a window when due; ``True`` (and toggles) to switch."""
        if self._start is None:
            if self._settle:  # the first chunk after a switch carries the thread's start-up
                self._settle -= 1
                return False
            self._start, self._elements, self._chunks = now, 0, 0
            return False
        elapsed = now - self._start
        if elapsed < self.WINDOW_SECONDS or self._chunks < self.WINDOW_CHUNKS:
            return False
        rate = self._elements / elapsed
        self._start, self._elements, self._chunks = now, 0, 0
        switch = False
        if self._probing:
            self._probing = False
            self._windows = 0
            self._reprobe = self.REPROBE
            # The thread must clearly win; inline wins ties (it costs no extra CPU).
            better = (
                rate > self.GAIN * self._rate if not self.inline else rate * self.GAIN >= self._rate
            )
            if better:
                self._rate = rate
            else:
                switch = True
        else:
            self._rate = rate
            self._windows += 1
            # A thread can only overlap the consumer's own work: with little of it
            # (an idle loop), trying one would only cost.
            worth = not self.inline or self._own > self.OVERLAP * self._span
            if self._windows >= self._reprobe and worth:
                self._probing = True
                switch = True
        self._own = self._span = 0.0
        if switch:
            self._start, self._settle = None, 1
            self.inline = not self.inline
        return switch


class ThreadedIndexIterator(ChunkIndexIterator):
    """A random-access pipeline computed in chunks of output indices on worker threads.

    The state is the index iterator's: the index of the next element the
    consumer will receive (chunks computed ahead are dropped, never saved).
    With ``reorder`` chunks are delivered as they complete; the state is then
    a watermark (every index below it was delivered) and ``"ahead"``: the
    ranges beyond it already delivered, as a flat list ``[start, stop, ...]``.
    """

    _AHEAD = "ahead"

    def __init__(
        self,
        dataset: Dataset,
        entropy: int | None,
        epoch: int,
        threads: int,
        buffer: int,
        reorder: bool,
        autotune: bool = False,
    ) -> None:
        self._chooser: ModeChooser | None = None
        self._inline_last: tuple[float, float] | None = None  # (start, cost) of the last chunk
        self._inline_size = 8
        self._engine: Engine | None = None
        self._autotune = autotune
        self._finalizer: weakref.finalize | None = None  # type: ignore[type-arg]
        self._seq = 0
        self._watermark = 0
        self._ahead: list[tuple[int, int]] = []
        super().__init__(dataset, entropy, epoch)
        self._threads = threads
        self._buffer = buffer
        self._reorder = reorder and self._elastic is None
        if threads == 1 and not self._reorder:
            self._chooser = ModeChooser()
        if self._reorder:
            self._keys = (*self._keys, self._AHEAD)

    def _switch_mode(self) -> None:
        """Moves between the thread and inline computing, at a chunk boundary."""
        # The current chunk is read to its end: the next index is the one after it.
        self._index = self._chunk_start + len(self._elements)
        self._stop_engine(join=False)
        self._inline_last = None

    def _advance_inline(self) -> Any:
        """Computes the next chunk in the consumer's thread."""
        start = self._chunk_start + len(self._elements)
        length = self._length
        if 0 <= length <= start:
            self._index = start
            raise StopIteration
        stop = start + self._inline_size
        if length >= 0:
            stop = min(stop, length)
        began = time.perf_counter()
        elements, error = read_range(self._source, self._epoch, start, stop)
        cost = time.perf_counter() - began
        assert self._chooser is not None
        if self._inline_last is not None:  # the previous chunk: its cost, and the consumer's time
            span = began - self._inline_last[0]
            self._chooser.note_inline(max(span - self._inline_last[1], 0.0), span)
        self._inline_last = (began, cost)
        # About a millisecond a chunk: cheap to drop at a switch, long enough to amortise.
        if cost < 0.0005 and error is None:
            self._inline_size = min(self._inline_size * 2, MAX_CHUNK)
        elif cost > 0.002:
            self._inline_size = max(self._inline_size // 2, 1)
        self._chunk_start, self._elements, self._pos = start, elements, 0
        self._chooser.count(len(elements))
        if error is not None:
            self._error = surface(
                error, f"a pipestate pipeline, at element {start + len(elements)}"
            )
        return self._next()

    def _raise_error(self) -> NoReturn:
        """Raises the error of the element after the chunk; the next element follows it.

        As without threads, the failing element counts as consumed: the
        iterator moves past it, and the chunks computed ahead are dropped.
        """
        error, self._error = self._error, None
        assert error is not None
        failed = self._chunk_start + len(self._elements)
        if self._reorder:
            self._commit()
            self._ahead = _merge(self._ahead, failed, failed + 1)
            self._watermark, self._ahead = _normalise(self._watermark, self._ahead)
        else:
            self._index = failed + 1
        self._stop_engine(join=False)
        self._inline_last = None
        raise error

    def _advance(self) -> Any:
        if self._error is not None:
            self._raise_error()
        chooser = self._chooser
        if chooser is not None:
            if chooser.switch_due(time.perf_counter()):
                self._switch_mode()
            if chooser.inline:
                return self._advance_inline()
        engine = self._engine
        if engine is None:
            engine = self._start_engine()
        if self._reorder:
            self._commit()
            chunk = engine.take(None)
        else:
            chunk = engine.take(self._seq)
        if chunk is None:
            self._chunk_start += len(self._elements)
            self._elements, self._pos = [], 0
            raise StopIteration
        self._seq += 1
        self._chunk_start = chunk.start
        self._elements = chunk.elements
        self._pos = 0
        if chunk.error is not None:
            self._error = surface(
                chunk.error,
                f"a pipestate worker thread, at element {chunk.start + len(chunk.elements)}",
            )
        if chooser is not None:
            chooser.count(len(chunk.elements))
        return self._next()

    def _start_engine(self) -> Engine:
        source, epoch, length = self._source, self._epoch, self._length
        skips = list(self._ahead)
        cursor = self._watermark if self._reorder else self._chunk_start
        state = {"cursor": cursor, "seq": 0}

        def claim(size: int) -> tuple[int, int, int] | None:
            start = state["cursor"]
            while skips and start >= skips[0][0]:
                start = max(start, skips[0][1])
                skips.pop(0)
            if 0 <= length <= start:
                engine.halt(state["seq"])
                return None
            stop = start + size
            if length >= 0:
                stop = min(stop, length)
            if skips:
                stop = min(stop, skips[0][0])
            seq = state["seq"]
            state["seq"] = seq + 1
            state["cursor"] = stop
            return seq, start, stop

        def work(ticket: tuple[int, int, int]) -> Chunk:
            seq, start, stop = ticket
            chunk = Chunk(seq, stop - start)
            chunk.start = start
            chunk.elements, chunk.error = read_range(source, epoch, start, stop)
            return chunk

        engine = Engine(
            self._dataset._op_name,
            self._threads,
            self._buffer,
            claim,
            work,
            autotune=self._autotune,
        )
        self._engine = engine
        self._seq = 0
        self._finalizer = weakref.finalize(self, engine.stop)
        engine.start()
        return engine

    def _stop_engine(self, join: bool) -> None:
        engine = self._engine
        if engine is not None:
            self._engine = None
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
            engine.stop(join=join)

    # ----------------------------------------------------------------- state
    def _commit(self) -> None:
        """Reorder mode: counts the current chunk (fully read) as delivered."""
        if self._elements:
            self._ahead = _merge(
                self._ahead, self._chunk_start, self._chunk_start + len(self._elements)
            )
            self._watermark, self._ahead = _normalise(self._watermark, self._ahead)
            self._chunk_start += len(self._elements)
            self._elements, self._pos = [], 0

    def _get_state(self) -> State:
        if not self._reorder:
            return super()._get_state()
        ahead = self._ahead
        if self._pos:
            ahead = _merge(ahead, self._chunk_start, self._chunk_start + self._pos)
        watermark, ahead = _normalise(self._watermark, ahead)
        return {
            self._INDEX: watermark,
            self._SEED: self._entropy,
            self._AHEAD: [bound for pair in ahead for bound in pair],
        }

    def _set_state(self, state: State) -> None:
        ahead: list[tuple[int, int]] = []
        if self._reorder:
            op = self._dataset._op_name
            check_keys(state, self._keys, op)
            maximum = None if self._length < 0 else self._length
            index = read_int(state, self._INDEX, op, maximum=maximum)
            ahead = _read_ranges(state, self._AHEAD, op, index)
            if ahead and maximum is not None and ahead[-1][1] > maximum:
                raise StateMismatchError(f"{op}: state['ahead'] goes past the end, {maximum}")
            seed = read_seed(state, op, self._entropy)
            if seed is not None and seed != self._entropy:
                self._source = self._dataset._resolve_seeds(seed, itertools.count())
            self._entropy = seed
            self._index = index
        else:
            super()._set_state(state)
        self._stop_engine(join=True)
        self._error = None
        self._seq = 0
        self._watermark = self._chunk_start
        self._ahead = ahead

    def _close(self) -> None:
        self._stop_engine(join=True)
        self._elements = []


def _merge(ranges: list[tuple[int, int]], start: int, stop: int) -> list[tuple[int, int]]:
    """``ranges`` (sorted, disjoint) with ``[start, stop)`` added, adjacent ranges joined."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted([*ranges, (start, stop)]):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _normalise(watermark: int, ranges: list[tuple[int, int]]) -> tuple[int, list[tuple[int, int]]]:
    """Moves the watermark over the ranges that start at it."""
    while ranges and ranges[0][0] <= watermark:
        watermark = max(watermark, ranges[0][1])
        ranges = ranges[1:]
    return watermark, ranges


def _read_ranges(state: State, key: str, op: str, watermark: int) -> list[tuple[int, int]]:
    """Reads a flat ``[start, stop, ...]`` list of sorted disjoint ranges beyond ``watermark``."""
    value = state[key]
    if (
        not isinstance(value, list)
        or len(value) % 2
        or any(isinstance(v, bool) or not isinstance(v, int) for v in value)
    ):
        raise StateMismatchError(
            f"{op}: state[{key!r}] must be a flat list of [start, stop) pairs,"
            f" got {brief(value, 120)}"
        )
    pairs = list(zip(value[::2], value[1::2]))
    previous = watermark
    for lo, hi in pairs:
        if not previous < lo < hi:
            raise StateMismatchError(
                f"{op}: state[{key!r}] must hold sorted, disjoint ranges after index "
                f"{watermark}, got {brief(value, 120)}"
            )
        previous = hi
    return pairs


# --------------------------------------------------------- streaming inputs
PER_ELEMENT_STATE_SHARE = 0.05
_MAX_INLINE_STEP = 4096  # elements read inline between looks at the chooser, at most
"""Take the input's state after every element while that costs at most this share of reading it."""


class StreamFeed:
    """Reads a streaming input iterator on worker threads, in chunks, recording its positions.

    Chunks are read under one lock, in order; ``fn`` (a parallel map's
    function) is applied outside it, so several workers can run it at once.
    The input iterator belongs to the workers from ``start()`` on and is
    closed by the last one to exit after ``stop()``.

    The input's state is taken after every chunk. It is also taken after every
    element while that is cheap (at most ``PER_ELEMENT_STATE_SHARE`` of the
    time to read an element) or the pipeline has external state; otherwise (a
    buffer shuffle's state holds its whole buffer) the consumer finds a
    position inside a chunk by reading the input again from the chunk's start
    in a scratch iterator, which costs at most one chunk's work and happens
    only in ``get_state()``. Chunks are made long enough that taking the state
    once per chunk costs at most 5 % of the chunk.
    """

    def __init__(
        self,
        name: str,
        parent: DatasetIterator,
        workers: int,
        buffer: int,
        fn: Callable[[Any], Any] | None,
        *,
        track: bool = True,
        external: bool = False,
        autotune: bool = False,
    ) -> None:
        read_lock = threading.Lock()
        progress: dict[str, Any] = {"seq": 0, "done": False, "each": True}

        def claim(size: int) -> int:
            return size

        def work(size: int) -> Chunk | None:
            with read_lock:
                if progress["done"] or engine._stopped:
                    return None
                seq = progress["seq"]
                progress["seq"] = seq + 1
                chunk = Chunk(seq, size)
                elements, tokens = chunk.elements, chunk.tokens
                read, state = parent._next, parent._get_state
                each = track and progress["each"]
                clock = time.perf_counter
                began = clock()
                capture = 0.0  # seconds spent taking states after elements
                try:
                    if each:
                        for _ in range(size):
                            elements.append(read())
                            taken = clock()
                            tokens.append(state())
                            capture += clock() - taken
                    else:
                        for _ in range(size):
                            elements.append(read())
                except StopIteration:
                    chunk.end = progress["done"] = True
                except Exception as err:
                    chunk.error = err
                    progress["done"] = True
                    if track:
                        # Past the failing element, as the input itself is: the
                        # consumer continues from here after raising the error.
                        with contextlib.suppress(Exception):
                            chunk.error_after = state()
                read_seconds = clock() - began - capture
                if track and chunk.error is None:
                    taken = clock()
                    if chunk.end:
                        chunk.final = state()
                        chunk.after = tokens[-1] if tokens else None
                    else:
                        chunk.after = tokens[-1] if tokens else state()
                    if elements:
                        count = len(elements)
                        per_state = capture / count if each else clock() - taken
                        chunk.overhead = 0.0 if each else per_state
                        progress["each"] = external or (
                            per_state <= PER_ELEMENT_STATE_SHARE * read_seconds / count
                        )
            if fn is not None:
                _apply_all(fn, chunk)
            return chunk

        def on_exit() -> None:
            with read_lock:
                parent.close()

        engine = Engine(name, workers, buffer, claim, work, on_exit, autotune=autotune)
        self.engine = engine


def _apply_all(fn: Callable[[Any], Any], chunk: Chunk) -> None:
    """Maps a chunk's elements in place; on an error keeps the outputs before it."""
    elements = chunk.elements
    for i, element in enumerate(elements):
        try:
            elements[i] = fn(element)
        except Exception as err:
            # The input's state after the failing element, when taken; else found by reading.
            chunk.error_after = chunk.tokens[i] if i < len(chunk.tokens) else None
            del elements[i:]
            del chunk.tokens[i:]
            chunk.error = err
            chunk.end = False
            chunk.after = None
            return


class StreamConsumer:
    """The consumer's side of a :class:`StreamFeed`, mixed into a streaming op's iterator.

    The iterator sets ``_feed_parent`` (the input iterator, owned by the
    workers once they start), implements ``_feed_scratch`` (a fresh input
    iterator), and calls ``_feed_stop`` to drop the workers. The input's
    state after the last element delivered is ``_feed_token()``.
    """

    _feed_name = "stream"
    _feed_workers = 1
    _feed_buffer = 0
    _feed_fn: Callable[[Any], Any] | None = None
    _feed_track = True
    _feed_autotune = False
    _feed: StreamFeed | None = None
    _feed_finalizer: weakref.finalize | None = None  # type: ignore[type-arg]
    _feed_parent: DatasetIterator
    _feed_chunk: Chunk | None = None  # the chunk being read
    _feed_elements: Sequence[Any] = ()
    _feed_pos = 0
    _feed_before: Any = None  # the input's state before the current chunk
    _feed_error: BaseException | None = None
    _feed_seq = 0
    _feed_ended = False  # the input ended after the current chunk
    _feed_chooser: ModeChooser | None = None  # for one thread: inline or on the thread
    _feed_countdown = 0  # elements left before the next look at the chooser, inline
    _feed_adaptive = True  # may still get a chooser
    _feed_since = 0  # elements delivered inline since _feed_before was taken
    _feed_step_time: float | None = None  # when the last inline step began
    _feed_sample = 0.0  # the time to read the first element of the last inline step
    _feed_step = 8  # elements read inline between looks at the chooser (adapts)

    def _feed_scratch(self) -> DatasetIterator:
        """A fresh iterator over the input, to find a position inside a chunk."""
        raise NotImplementedError

    def _next(self) -> Any:
        pos = self._feed_pos
        elements = self._feed_elements
        if pos < len(elements):
            self._feed_pos = pos + 1
            return elements[pos]
        return self._feed_advance()

    def _feed_next_inline(self) -> Any:
        """``_next`` while the chooser keeps the work in the consumer's thread."""
        self._feed_countdown -= 1
        if self._feed_countdown <= 0:
            return self._feed_advance()
        return self._feed_read_inline()

    def _feed_read_inline(self) -> Any:
        try:
            element = self._feed_parent._next()
            fn = self._feed_fn
            if fn is not None:
                element = fn(element)
        except StopIteration:
            raise
        except Exception as err:
            # As without a feed: the failing element counts as consumed, and the
            # next element follows it.
            self._feed_since += 1
            raise surface(err, f"a pipestate {self._feed_name}, read inline") from None
        self._feed_since += 1
        return element

    def _feed_raise(self) -> NoReturn:
        """Raises the error after the current chunk; reading resumes past the failing element."""
        error = self._feed_error
        assert error is not None
        chunk = self._feed_chunk
        after = chunk.error_after if chunk is not None else None
        if after is None:
            try:
                after = self._feed_catch_up(len(self._feed_elements) + 1)
            except Exception:
                raise error from None  # the input fails here too: the error stays
        self._feed_stop(join=False)
        parent = self._feed_scratch()
        parent._set_state(_copy_state(after))
        self._feed_parent = parent
        self._feed_before = after
        raise error

    def _feed_step_inline(self, chooser: ModeChooser) -> bool:
        """At a step of inline reading: takes the input's state; ``False`` if that is too dear.

        The state is what a failing element rewinds to; a pipeline whose state
        is expensive to take (a buffer of elements) stays on the thread.
        """
        began = time.perf_counter()
        self._feed_before = self._feed_parent._get_state()
        self._feed_since = 0
        taken = time.perf_counter()
        last, self._feed_step_time = self._feed_step_time, taken
        if last is not None:
            span, cost = began - last, taken - began
            chooser.note_inline(max(span - self._feed_sample * self._feed_step, 0.0), span)
            if cost > PER_ELEMENT_STATE_SHARE * span:
                # Longer steps amortise the state; at the longest, the thread it is.
                if self._feed_step >= _MAX_INLINE_STEP:
                    self._feed_chooser = None
                    self.__dict__.pop("_next", None)
                    return False
                self._feed_step = min(self._feed_step * 4, _MAX_INLINE_STEP)
            elif span < 0.001:  # steps of a millisecond or more, the consumer's time included
                self._feed_step = min(self._feed_step * 2, _MAX_INLINE_STEP)
            elif span > 0.004 and cost < 0.25 * PER_ELEMENT_STATE_SHARE * span:
                self._feed_step = max(self._feed_step // 2, 1)
        return True

    def _feed_advance(self) -> Any:
        if self._feed_error is not None:
            self._feed_raise()
        chooser = self._feed_chooser
        if chooser is None and self._feed_adaptive and self._feed_workers == 1 and self._feed_track:
            chooser = self._feed_chooser = ModeChooser()
            self._feed_adaptive = False  # one chooser per iterator; None again when given up
            self._feed_countdown = 1
        if chooser is not None and chooser.inline:
            chooser.count(self._feed_since)
            if chooser.switch_due(time.perf_counter()):
                self.__dict__.pop("_next", None)  # back to the chunked path, on the thread
                self._feed_step_time = None
            elif self._feed_step_inline(chooser):
                self._feed_countdown = self._feed_step
                self._next = self._feed_next_inline  # type: ignore[method-assign]
                began = time.perf_counter()
                element = self._feed_read_inline()
                self._feed_sample = time.perf_counter() - began  # one element's cost
                return element
            else:
                chooser = None
        chunk = self._feed_chunk
        if chunk is not None:  # read to its end
            self._feed_before = chunk.final if chunk.end else chunk.after
            self._feed_chunk, self._feed_elements, self._feed_pos = None, [], 0
            if (
                chooser is not None
                and not self._feed_ended
                and chooser.switch_due(time.perf_counter())
            ):
                # Inline from here: a fresh input iterator at the position delivered.
                position = _copy_state(self._feed_before)
                self._feed_stop(join=False)
                self._feed_parent = self._feed_scratch()
                self._feed_parent._set_state(position)
                self._feed_countdown = 1
                self._feed_step_time = None
                return self._next()
        if self._feed_ended:
            raise StopIteration
        feed = self._feed
        if feed is None:
            feed = self._feed_start()
        chunk = feed.engine.take(self._feed_seq)
        if chunk is None:  # not reached: the chunk that ends the input says so
            raise StopIteration
        self._feed_seq += 1
        if chooser is not None:
            chooser.count(len(chunk.elements))
        self._feed_chunk = chunk
        self._feed_elements = chunk.elements
        if chunk.error is not None:
            self._feed_error = surface(chunk.error, f"a pipestate {self._feed_name} thread")
        self._feed_ended = chunk.end
        return self._next()

    def _feed_start(self) -> StreamFeed:
        parent = self._feed_parent
        self._feed_before = parent._get_state()
        dataset: Dataset = self._dataset  # type: ignore[attr-defined]
        feed = StreamFeed(
            self._feed_name,
            parent,
            self._feed_workers,
            self._feed_buffer,
            self._feed_fn,
            track=self._feed_track,
            external=bool(dataset._external_ops()),
            autotune=self._feed_autotune,
        )
        self._feed = feed
        self._feed_seq = 0
        self._feed_finalizer = weakref.finalize(self, feed.engine.stop)
        feed.engine.start()
        return feed

    def _feed_token(self, copy: bool = True) -> Any:
        """The input's state after the last element delivered."""
        if self._feed is None:
            return self._feed_parent._get_state()
        chunk, pos = self._feed_chunk, self._feed_pos
        if chunk is None or pos == 0:
            token = self._feed_before
        elif chunk.tokens:
            token = chunk.tokens[pos - 1]
        elif pos == len(chunk.elements) and chunk.after is not None:
            token = chunk.after
        else:
            return self._feed_catch_up(pos)
        return _copy_state(token) if copy else token

    def _feed_catch_up(self, count: int) -> Any:
        """The input's state ``count`` elements into the current chunk, read again from its start.

        Costs at most one chunk's reading, in ``get_state()`` only; restoring never does this.
        """
        scratch = self._feed_scratch()
        try:
            scratch._set_state(_copy_state(self._feed_before))
            for _ in range(count):
                scratch._next()
            return scratch._get_state()
        finally:
            scratch.close()

    def _feed_stop(self, join: bool = True) -> None:
        """Stops the workers, who close the input; without workers, closes it here."""
        feed = self._feed
        self._feed_chunk, self._feed_elements, self._feed_pos = None, [], 0
        self._feed_error = None
        self._feed_ended = False
        # Inline reading starts a fresh step (and takes a fresh rewind point) next time.
        if not self._closed:  # type: ignore[attr-defined]
            self.__dict__.pop("_next", None)
        self._feed_countdown = 0
        self._feed_step_time = None
        if feed is None:
            self._feed_parent.close()
            return
        self._feed = None
        if self._feed_finalizer is not None:
            self._feed_finalizer.detach()
            self._feed_finalizer = None
        feed.engine.stop(join=join)


def _copy_state(state: Any) -> Any:
    """A copy of a state's dicts and lists (leaves shared), so callers can't alter a token."""
    if isinstance(state, dict):
        return {key: _copy_state(value) for key, value in state.items()}
    if isinstance(state, list):
        return [_copy_state(value) for value in state]
    return state
