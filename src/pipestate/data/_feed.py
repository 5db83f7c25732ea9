"""Streaming inputs read on threads: the workers' side (``StreamFeed``) and the consumer's.

Each element travels with the input iterator's state just after it, taken by
the worker that read it, so the consumer reports exactly the position of what
it received. Chunks read ahead are never saved: restoring drops them and
restarts the workers at the restored position.

A lone thread (a ``prefetch``, or a map on one thread) is worth having only
when the consumer has work of its own; the reader asks a
:class:`~pipestate.data._mode.ModeChooser` and reads inline while it says so.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from pipestate.data._engine import Chunk, Engine, surface
from pipestate.data._mode import ModeChooser

if TYPE_CHECKING:
    from pipestate.data.iterator import DatasetIterator

PER_ELEMENT_STATE_SHARE = 0.05
"""Take the input's state after every element while that costs at most this share of reading it."""
_MAX_INLINE_STEP = 4096
"""Elements read inline between looks at the chooser, at most."""


class StreamFeed:
    """Reads a streaming input iterator on worker threads, in chunks, recording its positions.

    Chunks are read under one lock, in order; ``fn`` (a parallel map's
    function) is applied outside it, so several workers can run it at once.
    The input iterator belongs to the workers from ``engine.start()`` on and
    is closed by the last one to exit after ``engine.stop()``.

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
        self._parent = parent
        self._fn = fn
        self._track = track
        self._external = external
        self._read_lock = threading.Lock()
        self._seq = 0  # the number of the next chunk read (under the read lock)
        self._done = False  # the input ended or failed
        self._each = True  # take the input's state after every element
        self.engine = Engine(
            name, workers, buffer, _claim, self._work, self._on_exit, autotune=autotune
        )

    def _work(self, size: int) -> Chunk | None:
        """Reads the next chunk of up to ``size`` elements, then maps it outside the read lock."""
        with self._read_lock:
            if self._done or self.engine._stopped:
                return None
            chunk = Chunk(self._seq, size)
            self._seq += 1
            each = self._track and self._each
            clock = time.perf_counter
            began = clock()
            capture = self._read(chunk, size, each)
            read_seconds = clock() - began - capture
            if self._track and chunk.error is None:
                self._note_states(chunk, each, capture, read_seconds)
        if self._fn is not None:
            _apply_all(self._fn, chunk)
        return chunk

    def _read(self, chunk: Chunk, size: int, each: bool) -> float:
        """Reads elements into ``chunk``, with the input's state after each if ``each``.

        Returns the seconds spent taking states after elements.
        """
        elements, tokens = chunk.elements, chunk.tokens
        read, state = self._parent._next, self._parent._get_state
        clock = time.perf_counter
        capture = 0.0
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
            chunk.end = self._done = True
        except Exception as err:
            chunk.error = err
            self._done = True
            if self._track:
                # Past the failing element, as the input itself is: the
                # consumer continues from here after raising the error.
                with contextlib.suppress(Exception):
                    chunk.error_after = state()
        return capture

    def _note_states(self, chunk: Chunk, each: bool, capture: float, read_seconds: float) -> None:
        """Records the input's state after a chunk read whole; decides on states per element."""
        state, clock = self._parent._get_state, time.perf_counter
        tokens, elements = chunk.tokens, chunk.elements
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
            self._each = self._external or (
                per_state <= PER_ELEMENT_STATE_SHARE * read_seconds / count
            )

    def _on_exit(self) -> None:
        with self._read_lock:
            self._parent.close()


def _claim(size: int) -> int:
    """A streaming chunk is claimed by its size alone: the read lock orders the chunks."""
    return size


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


class FeedReader:
    """The consumer's side of a :class:`StreamFeed`, owned by a streaming op's iterator.

    The iterator keeps it as ``_reader`` and takes :func:`next_element` as
    its ``_next``, which reads the current chunk (``elements`` from ``pos``)
    with no call per element and calls ``advance()`` once it is read.

    ``advance()`` moves to the next chunk (starting the workers on first use),
    or, while the chooser keeps the work in the consumer's thread (``inline``),
    reads one element from the input itself. ``attach()`` gives the reader its
    input iterator (owned by the workers once they start) and a way to open a
    fresh one; ``token()`` is the input's state after the last element
    delivered; ``stop()`` drops the workers and what they read ahead.

    Args:
      name: the op, for thread names and error notes.
      workers: threads reading (and mapping) the input.
      buffer: elements to keep ready ahead of the consumer, at least.
      fn: a function applied to each element on the threads, or ``None``.
      track: whether elements carry the input's state (off only to measure its cost).
      autotune: whether to keep the threads only if they beat one.
      external: whether the pipeline has external state (then the input's
        state is taken after every element, never found by reading again).
    """

    __slots__ = (
        "__weakref__",
        "adaptive",
        "autotune",
        "before",
        "buffer",
        "chooser",
        "chunk",
        "countdown",
        "elements",
        "ended",
        "error",
        "external",
        "feed",
        "finalizer",
        "fn",
        "inline",
        "name",
        "open_input",
        "parent",
        "pos",
        "sample",
        "seq",
        "since",
        "step",
        "step_time",
        "track",
        "workers",
    )

    def __init__(
        self,
        name: str,
        *,
        workers: int = 1,
        buffer: int = 0,
        fn: Callable[[Any], Any] | None = None,
        track: bool = True,
        autotune: bool = False,
        external: bool = False,
    ) -> None:
        self.name = name
        self.workers = workers
        self.buffer = buffer
        self.fn = fn
        self.track = track
        self.autotune = autotune
        self.external = external
        self.parent: DatasetIterator  # set by attach()
        self.open_input: Callable[[], DatasetIterator]  # set by attach()
        self.feed: StreamFeed | None = None
        self.finalizer: weakref.finalize | None = None  # type: ignore[type-arg]
        self.chunk: Chunk | None = None  # the chunk being read
        self.elements: Sequence[Any] = ()  # its elements; the next one delivered is [pos]
        self.pos = 0
        self.before: Any = None  # the input's state before the current chunk or inline step
        self.error: BaseException | None = None  # raised once the current chunk is read
        self.seq = 0  # the number of the next chunk to take
        self.ended = False  # the input ended after the current chunk
        self.inline = False  # the mode: reading element by element in the consumer's thread
        self.chooser: ModeChooser | None = None  # for one thread: inline or on the thread
        self.adaptive = True  # may still get a chooser
        self.countdown = 0  # elements left in the inline step
        self.since = 0  # elements delivered inline since ``before`` was taken
        self.step_time: float | None = None  # when the last inline step began
        self.sample = 0.0  # the time to read the first element of the last inline step
        self.step = 8  # elements read inline between looks at the chooser (adapts)

    def __repr__(self) -> str:
        return f"FeedReader({self.name!r}, workers={self.workers}, buffer={self.buffer})"

    def attach(self, parent: DatasetIterator, open_input: Callable[[], DatasetIterator]) -> None:
        """Reads ``parent`` from here on (after ``stop()``); ``open_input()`` opens a fresh input.

        ``open_input`` must not hold the owning iterator: dropping that stops the threads.
        """
        self.parent = parent
        self.open_input = open_input

    # ---------------------------------------------------------------- reading
    def advance(self) -> Any:
        """The next element once the current chunk is read: every element, while inline."""
        if self.inline:
            self.countdown -= 1
            if self.countdown > 0:
                # Read here, not in a helper: while inline this runs for every element.
                try:
                    element = self.parent._next()
                    fn = self.fn
                    if fn is not None:
                        element = fn(element)
                except StopIteration:
                    raise
                except Exception as err:
                    # As without a feed: the failing element counts as consumed, and the
                    # next element follows it.
                    self.since += 1
                    raise surface(err, f"a pipestate {self.name}, read inline") from None
                self.since += 1
                return element
        return self._next_step()

    def _next_step(self) -> Any:
        """At the end of a chunk or of an inline step: chooses the mode, then reads on."""
        if self.error is not None:
            self._raise_error()
        chooser = self.chooser
        if chooser is None and self.adaptive and self.workers == 1 and self.track:
            chooser = self.chooser = ModeChooser()
            self.adaptive = False  # one chooser per reader; None again when given up
            self.countdown = 1
        if chooser is not None and chooser.inline:
            if self._continue_inline(chooser):
                began = time.perf_counter()
                element = self.advance()
                self.sample = time.perf_counter() - began  # one element's cost
                return element
            chooser = self.chooser  # None once inline reading was given up
        chunk = self.chunk
        if chunk is not None:  # read to its end
            self.before = chunk.final if chunk.end else chunk.after
            self.chunk, self.elements, self.pos = None, [], 0
            if chooser is not None and not self.ended and chooser.switch_due(time.perf_counter()):
                self._go_inline()
                return self._next_step()
        if self.ended:
            raise StopIteration
        return self._take_chunk(chooser)

    def _take_chunk(self, chooser: ModeChooser | None) -> Any:
        """Takes the next chunk from the workers (starting them) and returns its first element."""
        feed = self.feed
        if feed is None:
            feed = self._start()
        chunk = feed.engine.take(self.seq)
        if chunk is None:  # not reached: the chunk that ends the input says so
            raise StopIteration
        self.seq += 1
        if chooser is not None:
            chooser.count(len(chunk.elements))
        self.chunk = chunk
        self.elements = elements = chunk.elements
        if chunk.error is not None:
            self.error = surface(chunk.error, f"a pipestate {self.name} thread")
        self.ended = chunk.end
        if elements:
            self.pos = 1
            return elements[0]
        return self._next_step()

    def _continue_inline(self, chooser: ModeChooser) -> bool:
        """At the end of an inline step: ``True`` to read another step inline."""
        chooser.count(self.since)
        if chooser.switch_due(time.perf_counter()):
            self.inline = False  # back to the chunked path, on the thread
            self.step_time = None
            return False
        if not self._step_inline(chooser):
            return False
        self.countdown = self.step + 1  # the step's first read counts down too
        self.inline = True
        return True

    def _step_inline(self, chooser: ModeChooser) -> bool:
        """At a step of inline reading: takes the input's state; ``False`` if that is too dear.

        The state is what a failing element rewinds to; a pipeline whose state
        is expensive to take (a buffer of elements) stays on the thread.
        """
        began = time.perf_counter()
        self.before = self.parent._get_state()
        self.since = 0
        taken = time.perf_counter()
        last, self.step_time = self.step_time, taken
        if last is not None:
            span, cost = began - last, taken - began
            chooser.note_inline(max(span - self.sample * self.step, 0.0), span)
            if cost > PER_ELEMENT_STATE_SHARE * span:
                # Longer steps amortise the state; at the longest, the thread it is.
                if self.step >= _MAX_INLINE_STEP:
                    self.chooser = None
                    self.inline = False
                    return False
                self.step = min(self.step * 4, _MAX_INLINE_STEP)
            elif span < 0.001:  # steps of a millisecond or more, the consumer's time included
                self.step = min(self.step * 2, _MAX_INLINE_STEP)
            elif span > 0.004 and cost < 0.25 * PER_ELEMENT_STATE_SHARE * span:
                self.step = max(self.step // 2, 1)
        return True

    def _go_inline(self) -> None:
        """Stops the workers at a chunk boundary and reads inline, from the position delivered."""
        position = _copy_state(self.before)
        self.stop(join=False)
        self.parent = self.open_input()
        self.parent._set_state(position)
        self.countdown = 1
        self.step_time = None

    def _raise_error(self) -> NoReturn:
        """Raises the error after the current chunk; reading resumes past the failing element."""
        error = self.error
        assert error is not None
        chunk = self.chunk
        after = chunk.error_after if chunk is not None else None
        if after is None:
            try:
                after = self._catch_up(len(self.elements) + 1)
            except Exception:
                raise error from None  # the input fails here too: the error stays
        self.stop(join=False)
        parent = self.open_input()
        parent._set_state(_copy_state(after))
        self.parent = parent
        self.before = after
        raise error

    def _start(self) -> StreamFeed:
        parent = self.parent
        self.before = parent._get_state()
        feed = StreamFeed(
            self.name,
            parent,
            self.workers,
            self.buffer,
            self.fn,
            track=self.track,
            external=self.external,
            autotune=self.autotune,
        )
        self.feed = feed
        self.seq = 0
        self.finalizer = weakref.finalize(self, feed.engine.stop)
        feed.engine.start()
        return feed

    # ------------------------------------------------------------------ state
    def token(self, copy: bool = True) -> Any:
        """The input's state after the last element delivered."""
        if self.feed is None:
            return self.parent._get_state()
        chunk, pos = self.chunk, self.pos
        if chunk is None or pos == 0:
            token = self.before
        elif chunk.tokens:
            token = chunk.tokens[pos - 1]
        elif pos == len(chunk.elements) and chunk.after is not None:
            token = chunk.after
        else:
            return self._catch_up(pos)
        return _copy_state(token) if copy else token

    def _catch_up(self, count: int) -> Any:
        """The input's state ``count`` elements into the current chunk, read again from its start.

        Costs at most one chunk's reading, in ``get_state()`` only; restoring never does this.
        """
        scratch = self.open_input()
        try:
            scratch._set_state(_copy_state(self.before))
            for _ in range(count):
                scratch._next()
            return scratch._get_state()
        finally:
            scratch.close()

    def stop(self, join: bool = True) -> None:
        """Stops the workers, who close the input; without workers, closes it here."""
        feed = self.feed
        self.chunk, self.elements, self.pos = None, [], 0
        self.error = None
        self.ended = False
        # Inline reading starts a fresh step (and takes a fresh rewind point) next time.
        self.inline = False
        self.countdown = 0
        self.step_time = None
        if feed is None:
            self.parent.close()
            return
        self.feed = None
        if self.finalizer is not None:
            self.finalizer.detach()
            self.finalizer = None
        feed.engine.stop(join=join)


class ReadsFeed(Protocol):
    """An iterator that owns a :class:`FeedReader`."""

    _reader: FeedReader


def next_element(self: ReadsFeed) -> Any:
    """``_next`` of an iterator that owns a :class:`FeedReader`: the next element delivered.

    Assigned as ``_next = next_element`` in the iterator's class, so the
    element comes out of the current chunk with no call beyond ``_next``.
    """
    reader = self._reader
    pos = reader.pos
    elements = reader.elements
    if pos < len(elements):
        reader.pos = pos + 1
        return elements[pos]
    return reader.advance()


def _copy_state(state: Any) -> Any:
    """A copy of a state's dicts and lists (leaves shared), so callers can't alter a token."""
    if isinstance(state, dict):
        return {key: _copy_state(value) for key, value in state.items()}
    if isinstance(state, list):
        return [_copy_state(value) for value in state]
    return state
