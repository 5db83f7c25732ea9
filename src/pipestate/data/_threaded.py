"""Random-access pipelines computed on threads, in chunks of output indices.

A chunk is a range of output indices, so the position of a delivered element
is ``chunk start + offset``: one int. Chunks computed ahead are never saved:
restoring drops them and restarts the workers at the restored index.
"""

from __future__ import annotations

import itertools
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from pipestate._validate import brief
from pipestate.data._engine import MAX_CHUNK, Chunk, Engine, read_range, surface
from pipestate.data._mode import ModeChooser
from pipestate.data.iterator import IndexIterator, State, check_keys, read_int, read_seed
from pipestate.errors import StateMismatchError

if TYPE_CHECKING:
    from pipestate.data.dataset import Dataset
    from pipestate.data.iterator import DatasetIterator


def background_settings(dataset: Dataset) -> tuple[int, int, bool, bool]:
    """``(threads, buffer, reorder, autotune)`` wanted by a pipeline's prefetch / parallel maps.

    ``threads`` is 0 when the pipeline has none. ``reorder`` is true when the
    op whose elements the iterator yields is a ``map`` or ``batch`` with
    ``deterministic=False`` (or ``None`` under ``Options.deterministic=False``;
    prefetch ops above it aside): only then may chunks arrive out of order
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
        if (
            isinstance(state, dict)
            and self._elastic is None
            and (self._AHEAD in state) != (self._reorder)
        ):
            # The same definition saved in the other order mode: Options.deterministic, which
            # is outside the fingerprint, differed. Continue in the saved run's mode.
            self._reorder = not self._reorder
            self._keys = (*self._STATE_KEYS, self._AHEAD) if self._reorder else self._STATE_KEYS
            if self._reorder:
                self._chooser = None
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
