"""Per-op profiles of a pipeline: where the time goes, which op is the bottleneck, what to do.

Profiling never touches the iterators of an ordinary pipeline: it builds an
instrumented copy of the pipeline, whose ops are the same objects' copies
with their reading methods (``_get``, ``_get_batch``, ``_get_list``,
``_apply`` and their streaming iterators' ``_next``) timed, so a pipeline
that is not profiled pays nothing. The copy has the same fingerprint: a
state saved from a profiled iterator restores into the plain pipeline.

Timing a call costs about half a microsecond, more than many streaming ops
spend per element, so a streaming op's ``_next`` is timed on a sample of its
calls when timing every call would add more than 1% to the op's own cost
(:class:`_Sampler`): the calls are all counted, the times of the untimed ones
estimated from the timed ones, and the report marks such times ``~``. Every
time has the timing's own cost taken out (what the timed calls inside a call
added to it, and a calibrated clock read inside each interval).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pipestate._validate import brief, check_count, check_function
from pipestate.data.iterator import DatasetIterator, IndexIterator, State

if TYPE_CHECKING:
    from pipestate.data.dataset import Dataset
    from pipestate.data.loader import Loader

__all__ = ["OpProfile", "ProfileReport", "ProfiledIterator", "profile", "profiled"]

_CALLS, _ELEMENTS, _TOTAL, _SELF, _TIMED = range(5)
_OP, _INNER, _OVER = range(3)
"""A frame of an open timed call: its op, the time of the timed calls it made (less their
timing), and what timing them cost (to take out of its own time)."""
_CONSUMER_BOUND = 0.5
"""The consumer is the bottleneck when it spends at least this share of the time outside next()."""
_BUDGET = 0.01
"""The share of a sampled op's own cost that timing its sampled calls may add."""
_MAX_STRIDE = 512
"""At most this many calls (on average) per timed call of a sampled op."""
_OUTLIER = 4.0
"""A sampled call's time above this many times the median of its op's recent timed calls
counts once only (a descheduled thread, a buffer refill), not for the calls it stands for."""
_RECENT = 9
"""How many of an op's last timed calls that median is taken over."""

_open = [0]
"""Timed calls open, all threads together. While one is, sampled ops time every call: the
open call's self time is its time less that of the calls it makes, which must be known.
(Shared by the threads, it may make them time more than needed, never less.)"""


# ----------------------------------------------------------- the recorder
class _Recorder:
    """Per-thread tables of ``[calls, elements, cumulative s, self s, timed calls]`` per op."""

    def __init__(self, ops: int, sampling: bool = True, overhead: float | None = None) -> None:
        self.ops = ops
        self.local = threading.local()
        self.lock = threading.Lock()
        self.tables: list[tuple[int, str, list[list[float]]]] = []
        self.chunks = [0] * ops  # chunks a threaded op's consumer took
        self.ready = [0] * ops  # of which were ready before it asked
        self.waits = [0.0] * ops  # its time waiting for them
        self.overhead = _timing_overhead() if overhead is None else overhead
        self.samplers = [_Sampler(sampling) for _ in range(ops)]
        self.random = random.Random(0)  # the sampling strides' jitter (not the global one)

    def frames(self) -> tuple[list[list[Any]], list[list[float]]]:
        """This thread's stack of open calls and its table (made on first use)."""
        local = self.local
        try:
            return local.stack, local.table
        except AttributeError:
            local.stack = []
            local.table = [[0, 0, 0.0, 0.0, 0] for _ in range(self.ops)]
            thread = threading.current_thread()
            with self.lock:
                self.tables.append((thread.ident or 0, thread.name, local.table))
            return local.stack, local.table


class _Sampler:
    """Which calls of one streaming op are timed.

    Of a run of ``stride`` calls (on average; the run's length is drawn, so it cannot
    beat in step with the op's own pattern, e.g. a read-ahead block), the last is timed
    and stands for the untimed ones before it: they are counted exactly and their times
    estimated as its own. The stride grows while timing a call costs more than
    :data:`_BUDGET` of the call's own time, so cheap ops are timed in samples and
    costly ones on every call. A timed call far above the op's recent ones (the
    thread was descheduled, a buffer refilled) stands for the others only with the
    usual part; its excess counts once, as in an unsampled profile.
    """

    __slots__ = (
        "active",
        "adaptive",
        "own",
        "raised",
        "recent_own",
        "recent_total",
        "run",
        "skip",
        "stride",
        "table",
        "total",
        "weight",
    )

    def __init__(self, adaptive: bool) -> None:
        self.skip = 0  # untimed calls left before the next timed one
        self.raised = 0  # untimed calls of this run that raised
        self.run = 0  # untimed calls this run began with
        self.stride = 1
        self.adaptive = adaptive
        self.active = False  # its op's iterator is timed by it (then so is the op's _apply)
        # Calls the timed calls stood for and their estimated times: per call, the
        # estimate for the untimed calls of the current run.
        self.weight = 0
        self.total = 0.0
        self.own = 0.0
        self.table: list[list[float]] | None = None  # the table of the last timed call
        self.recent_total: list[float] = []  # the last timed calls' times
        self.recent_own: list[float] = []

    def weigh(self, weight: int, total: float, own: float) -> tuple[float, float]:
        """The times a timed call standing for ``weight`` calls adds: (total, own)."""
        total = _stand_for(weight, total, self.recent_total)
        own = _stand_for(weight, own, self.recent_own)
        self.weight += weight
        self.total += total
        self.own += own
        return total, own

    def next_run(self, seconds: float, timing: float, recorder: _Recorder) -> None:
        """Sets the next run after a timed call of ``seconds``, whose timing cost ``timing``."""
        wanted = int(timing / (_BUDGET * max(seconds, 1e-9))) + 1
        self.stride = stride = min(wanted, _MAX_STRIDE)
        self.run = self.skip = int(recorder.random.random() * (2 * stride - 1))

    def pending(self) -> int:
        """Untimed calls of the current run (not yet in any table)."""
        return max(self.run - self.skip, 0)


def _stand_for(weight: int, seconds: float, recent: list[float]) -> float:
    """``seconds`` of a timed call standing for ``weight`` calls, the part above
    :data:`_OUTLIER` times the median of the ``recent`` timed calls counted once."""
    if weight > 1 and recent:
        usual = min(seconds, _OUTLIER * sorted(recent)[(len(recent) - 1) // 2])
        stood = weight * usual + (seconds - usual)
    else:
        stood = seconds
    recent.append(seconds)
    if len(recent) > _RECENT:
        del recent[0]
    return stood


@functools.cache
def _timing_overhead() -> float:
    """Seconds of a timed call's own timing inside its interval (measured once)."""
    return _measure_overhead()


def _measure_overhead() -> float:
    """A no-op's timed interval less a plain call of it: the clock read inside the interval."""

    class _Probe:
        def _next(self) -> None:
            return None

    timed_probe = type("_Probe", (_Probe,), {"_next": _timed_next(_Probe._next)})
    recorder = _Recorder(1, sampling=False, overhead=0.0)
    owner = type("_Owner", (), {"_profile_op": 0, "_profile_recorder": recorder})()
    plain, timed = _Probe(), timed_probe()
    timed._dataset = owner
    _, table = recorder.frames()
    row = table[0]
    best = float("inf")
    for _ in range(5):
        before = row[_TOTAL]
        for _ in range(400):
            timed._next()
        began = time.perf_counter()
        for _ in range(400):
            plain._next()
        call = (time.perf_counter() - began) / 400
        best = min(best, (row[_TOTAL] - before) / 400 - call)
    return max(best, 0.0)


def _close(
    stack: list[list[Any]], frame: list[Any], raw: float, entry: float, inside: float
) -> None:
    """Pops ``frame`` and charges the outer call with its time and its timing's cost
    (``inside``: the part of that cost within the ``raw`` interval)."""
    stack.pop()
    if stack:
        outer = stack[-1]
        outer[_INNER] += raw - frame[_OVER] - inside
        outer[_OVER] += frame[_OVER] + inside + (time.perf_counter() - entry - raw)


def _timed(
    method: Callable[..., Any],
    count: Callable[[tuple[Any, ...], Any], int],
    iterator: bool = False,
) -> Any:
    """``method`` (of a dataset, or of an ``iterator``) timed for its op on every call:
    cumulative, and self (less the ops it calls). ``_apply`` is left to the op's
    iterator when that times a sample of its calls (it runs inside them)."""
    perf = time.perf_counter
    per_element = method.__name__ == "_apply"
    open_calls = _open

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any) -> Any:
        entry = perf()
        owner = self._dataset if iterator else self
        op = owner._profile_op
        recorder = owner._profile_recorder
        if per_element and recorder.samplers[op].active:  # in its op's (sampled) _next
            return method(self, *args)
        stack, table = recorder.frames()
        if stack and stack[-1][_OP] == op:  # the op calling itself (_get through _get_batch)
            return method(self, *args)
        frame = [op, 0.0, 0.0]
        stack.append(frame)
        open_calls[0] += 1
        began = perf()
        try:
            result = method(self, *args)
        finally:
            raw = perf() - began
            open_calls[0] -= 1
            elapsed = raw - frame[_OVER] - recorder.overhead
            row = table[op]
            row[_CALLS] += 1
            row[_TIMED] += 1
            row[_TOTAL] += elapsed
            row[_SELF] += elapsed - frame[_INNER]
            _close(stack, frame, raw, entry, recorder.overhead)
        row[_ELEMENTS] += count(args, result)
        return result

    return wrapper


def _timed_next(
    method: Callable[[Any], Any],
    sampler: _Sampler | None = None,
    slot: tuple[int, _Recorder] | None = None,
) -> Any:
    """An iterator's ``_next`` timed as :func:`_timed` does: every call, or, with a
    ``sampler``, the calls it picks (and those made while a timed call is open).
    ``slot``: the op's index and recorder, when the class serves one op only."""
    perf = time.perf_counter
    open_calls = _open

    def timed(self: Any, sampler: _Sampler | None) -> Any:
        entry = perf()
        if slot is None:
            owner = self._dataset
            op, recorder = owner._profile_op, owner._profile_recorder
        else:
            op, recorder = slot
        local = recorder.local
        try:
            stack = local.stack
        except AttributeError:
            stack = recorder.frames()[0]
        if stack and stack[-1][_OP] == op:
            return method(self)
        run = raised = 0
        if sampler is not None:  # this call ends a run: it stands for its untimed calls
            run, raised = sampler.pending(), sampler.raised
            sampler.run = sampler.raised = 0
        frame = [op, 0.0, 0.0]
        stack.append(frame)
        open_calls[0] += 1
        produced = 0
        began = perf()
        try:
            result = method(self)
            produced = 1
        finally:
            raw = perf() - began
            open_calls[0] -= 1
            elapsed = raw - frame[_OVER] - recorder.overhead
            own = elapsed - frame[_INNER]
            table = local.table
            row = table[op]
            weight = run + 1
            row[_CALLS] += weight
            row[_ELEMENTS] += run - raised + produced
            row[_TIMED] += 1
            if sampler is None:
                row[_TOTAL] += elapsed
                row[_SELF] += own
            else:
                total, own = sampler.weigh(weight, elapsed, own)
                row[_TOTAL] += total
                row[_SELF] += own
                sampler.table = table
                cost = frame[_OVER] + recorder.overhead + (perf() - entry - raw)
                sampler.next_run(elapsed, cost, recorder)
            stack.pop()
            if stack:  # as _close does, inline: this runs on every timed call of a cheap op
                outer = stack[-1]
                outer[_INNER] += elapsed
                outer[_OVER] += frame[_OVER] + recorder.overhead + (perf() - entry - raw)
        return result

    if sampler is None or not sampler.adaptive:

        @functools.wraps(method)
        def always(self: Any) -> Any:
            return timed(self, None)

        return always

    picks = sampler

    @functools.wraps(method)
    def wrapper(self: Any) -> Any:
        skip = picks.skip
        if skip and not open_calls[0]:  # untimed: counted when the run's timed call ends
            picks.skip = skip - 1
            try:
                return method(self)
            except BaseException:
                picks.raised += 1
                raise
        if skip:  # within a timed call, which must subtract this one: timed, for itself
            return timed(self, None)
        return timed(self, picks)

    return wrapper


def _one(args: tuple[Any, ...], result: Any) -> int:
    return 1


def _positions(args: tuple[Any, ...], result: Any) -> int:
    return len(args[1])


def _listed(args: tuple[Any, ...], result: Any) -> int:
    return len(result)


def _none(args: tuple[Any, ...], result: Any) -> int:
    return 0


_DATASET_METHODS = {"_get": _one, "_get_batch": _positions, "_get_list": _listed, "_apply": _none}
_dataset_classes: dict[type, type] = {}
_iterator_classes: dict[type, type] = {}


def _profiled_dataset_class(cls: type) -> type:
    made = _dataset_classes.get(cls)
    if made is None:
        namespace: dict[str, Any] = {
            name: _timed(getattr(cls, name), count)
            for name, count in _DATASET_METHODS.items()
            if hasattr(cls, name)
        }
        namespace["_make_iterator"] = _instrumenting(cls._make_iterator)  # type: ignore[attr-defined]
        made = _dataset_classes[cls] = type(cls.__name__, (cls,), namespace)
    return made


def _born_timed(cls: type, sampler: _Sampler, op: int, recorder: _Recorder) -> type:
    """``cls`` with ``_next`` timed as ``sampler`` picks, for one op to create its iterators.

    Created so rather than given a new class afterwards: an instance whose class
    changes after its attributes were set reads them slower (CPython specialises
    attribute reads per class), which would weigh on every call of a cheap op.
    """
    timed = _timed_next(cls._next, sampler, (op, recorder))  # type: ignore[attr-defined]
    namespace = {"_next": timed, "_profile_base": cls}
    return type(cls.__name__, (cls,), namespace)


def _instrumenting(make: Callable[..., DatasetIterator]) -> Any:
    @functools.wraps(make)
    def wrapper(self: Any, *args: Any) -> DatasetIterator:
        it = make(self, *args)
        cls = type(it)
        base = cls.__dict__.get("_profile_base")
        if base is not None:  # born timed; one that reads a feed is timed as such instead
            if not hasattr(it, "_reader"):
                self._profile_recorder.samplers[self._profile_op].active = True
                return it
            cls = base
        made = _iterator_classes.get(cls)
        if made is None:
            namespace: dict[str, Any] = {}
            advance = getattr(cls, "_advance", None)
            if advance is not None:  # a threaded index iterator: once per chunk
                namespace["_advance"] = _chunk_timed(advance)
            elif hasattr(it, "_reader"):  # reads a feed of chunks from threads: waits, per thread
                namespace["_next"] = _feed_timed(_timed_next(cls._next))
            elif not issubclass(cls, IndexIterator):
                namespace["_next"] = _timed_next(cls._next)
            # A plain index iterator is timed through its op's _get_list / _get_batch, and
            # keeps its class: ops take faster paths over an exact IndexIterator.
            made = type(cls.__name__, (cls,), namespace) if namespace else cls
            _iterator_classes[cls] = made
        if made is not type(it):
            it.__class__ = made
        return it

    return wrapper


def _chunk_timed(advance: Callable[..., Any]) -> Any:
    """A threaded index iterator's ``_advance`` timed as waiting (its work is timed in its ops)."""

    @functools.wraps(advance)
    def wrapper(self: Any) -> Any:
        # A Loader's iterator carries its own slot; a threaded index iterator its op's.
        holder = self if "_profile_op" in vars(self) else self._dataset
        op = holder._profile_op
        recorder: _Recorder = holder._profile_recorder
        engine = getattr(self, "_engine", None)
        stack, _ = recorder.frames()
        frame = [-1, 0.0, 0.0]  # no op: the ops computed inline under it are timed as themselves
        stack.append(frame)
        _open[0] += 1
        entry = began = time.perf_counter()
        try:
            return advance(self)
        finally:
            raw = time.perf_counter() - began
            _open[0] -= 1
            with recorder.lock:
                recorder.chunks[op] += 1
                if engine is not None and engine._results:
                    recorder.ready[op] += 1
                recorder.waits[op] += raw - frame[_OVER] - frame[_INNER]
            _close(stack, frame, raw, entry, 0.0)

    return wrapper


def _feed_timed(timed: Callable[..., Any]) -> Any:
    """A feed reader's ``_next``: also counts the chunks it takes and those found ready."""

    @functools.wraps(timed)
    def wrapper(self: Any) -> Any:
        reader = self._reader
        if reader.pos >= len(reader.elements) and not reader.inline:
            dataset = self._dataset
            op = dataset._profile_op
            recorder: _Recorder = dataset._profile_recorder
            feed = reader.feed
            with recorder.lock:
                recorder.chunks[op] += 1
                if feed is not None and feed.engine._results:
                    recorder.ready[op] += 1
        return timed(self)

    return wrapper


def _instrument(dataset: Dataset, recorder: _Recorder, ids: dict[int, int]) -> Dataset:
    """A copy of the pipeline with every op timed (the same fingerprint and elements)."""
    parents = tuple(_instrument(parent, recorder, ids) for parent in dataset._parents)
    clone = dataset._with_parents(parents)
    clone.__class__ = _profiled_dataset_class(type(dataset))
    clone._profile_op = ids[id(dataset)]  # type: ignore[attr-defined]
    clone._profile_recorder = recorder  # type: ignore[attr-defined]
    stream = clone._iterator_class
    if stream is not None and not clone._random_access:
        op = ids[id(dataset)]
        clone._iterator_class = _born_timed(stream, recorder.samplers[op], op, recorder)  # type: ignore[misc]
    return clone


def _ops(dataset: Dataset) -> list[Dataset]:
    """The ops of the pipeline, inputs first (the order of ``_op_chain``)."""
    found: list[Dataset] = []
    for parent in dataset._parents:
        found.extend(op for op in _ops(parent) if all(op is not seen for seen in found))
    found.append(dataset)
    return found


# ------------------------------------------------------------ the report
@dataclasses.dataclass
class OpProfile:
    """What one op cost.

    Attributes:
      op: the op alone, as in ``repr`` (``map(map_func='decode')``).
      inputs: indices (in :attr:`ProfileReport.ops`) of its inputs.
      elements: elements it produced.
      self_seconds: time in the op's own work, all threads together (waits excluded).
      total_seconds: time in the op and the ops it read from, all threads together.
      threads: how many threads did its work (worker threads of prefetch or a parallel map).
      waited_seconds: for prefetch and parallel map, the time other threads (the consumer,
        or a prefetch after it) spent waiting for their threads.
      ready_share: for prefetch and parallel map, the share of the chunks of elements
        their threads hand over that were ready when asked for (low: the buffer ran
        empty; ``None``: no chunk was taken, e.g. the work ran in the consumer's thread).
      calls: calls of the op's reading methods (exact).
      timed_calls: how many of them were timed. Fewer than ``calls`` when the op's calls
        cost less than timing them: then a sample was timed and the times are estimates
        (each timed call stands for the untimed calls before it).
    """

    op: str
    inputs: list[int]
    elements: int
    self_seconds: float
    total_seconds: float
    threads: int
    waited_seconds: float
    ready_share: float | None
    calls: int = 0
    timed_calls: int = 0

    @property
    def estimated(self) -> bool:
        """Whether the times are estimated from a sample of the op's calls."""
        return self.timed_calls < self.calls

    @property
    def rate(self) -> float:
        """Elements per second the op produced while it was running (its own stage rate)."""
        return self.elements / self.total_seconds if self.total_seconds > 0 else float("inf")

    @property
    def cost(self) -> float:
        """Seconds of the run this op accounts for: its work spread over its threads."""
        return self.self_seconds / max(self.threads, 1)


@dataclasses.dataclass
class ProfileReport:
    """A profile of a pipeline run: per-op costs, the consumer's waits, the bottleneck.

    Attributes:
      pipeline: the dataset's ``repr``.
      ops: per-op costs, inputs first (the order of the state's ``ops`` list).
      elements: elements the consumer received.
      wall_seconds: from the first ``next()`` to the report.
      next_seconds: the consumer's time inside ``next()`` (waiting for the pipeline).
      worker_threads: names of the pipeline's threads and the share of the wall time each
        was busy.
      bottleneck: the op that limits the rate (its repr), or ``"consumer"`` when the
        consumer's own work does.
      suggestion: what to change.
    """

    pipeline: str
    ops: list[OpProfile]
    elements: int
    wall_seconds: float
    next_seconds: float
    worker_threads: dict[str, float]
    bottleneck: str
    suggestion: str

    @property
    def consumer_seconds(self) -> float:
        """The consumer's time outside ``next()`` (its own work, e.g. a training step)."""
        return max(self.wall_seconds - self.next_seconds, 0.0)

    @property
    def rate(self) -> float:
        """Elements per second the consumer received."""
        return self.elements / self.wall_seconds if self.wall_seconds > 0 else float("inf")

    def __str__(self) -> str:
        return self.format()

    def format(self) -> str:
        """The report as a text table, as ``pipestate profile`` prints it."""
        width = min(max((len(op.op) for op in self.ops), default=2) + 2, 60)
        head = f"{'op':<{width}} {'self ms':>9} {'total ms':>9} {'elements':>9} {'elem/s':>10}"
        lines = [head + "  threads", "-" * (len(head) + 9)]
        total_cost = sum(max(op.cost, 0.0) for op in self.ops) or 1.0
        for op in self.ops:
            name = op.op if len(op.op) <= width - 2 else op.op[: width - 5] + "..."
            mark = "~" if op.estimated else ""
            own = f"{mark}{op.self_seconds * 1e3:.1f}"
            total = f"{mark}{op.total_seconds * 1e3:.1f}"
            share = f"{100 * max(op.cost, 0.0) / total_cost:3.0f}%"
            rate = "-" if op.rate == float("inf") else f"{op.rate:,.0f}"
            extra = ""
            if op.waited_seconds:
                extra = f"  (waited for: {op.waited_seconds * 1e3:.0f} ms"
                if op.ready_share is not None:
                    extra += f"; ready {100 * op.ready_share:.0f}% of chunks"
                extra += ")"
            lines.append(
                f"{name:<{width}} {own:>9} {total:>9} "
                f"{op.elements:9d} {rate:>10}  {op.threads:>3} {share}{extra}"
            )
        wall = max(self.wall_seconds, 1e-12)
        lines.append("")
        sampled = [op for op in self.ops if op.estimated]
        if sampled:
            timed = sum(op.timed_calls for op in sampled)
            calls = sum(op.calls for op in sampled)
            lines.append(
                f"~ estimated: {len(sampled)} op(s) cost less per call than timing a call; "
                f"{timed:,} of their {calls:,} calls were timed and the times scaled to all "
                "calls (counts are exact; sampling=False, or --exact, times every call)"
            )
        lines.append(
            f"{self.elements} elements in {self.wall_seconds:.3f} s ({self.rate:,.0f}/s); the "
            f"consumer waited in next() {100 * self.next_seconds / wall:.0f}% of the time and "
            f"worked {100 * self.consumer_seconds / wall:.0f}%"
        )
        for name, busy in sorted(self.worker_threads.items()):
            lines.append(f"thread {name}: busy {100 * busy:.0f}%")
        lines.append(f"bottleneck: {self.bottleneck}")
        lines.append(f"suggestion: {self.suggestion}")
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike[str]) -> None:
        """Draws the op graph coloured by cost into ``path`` (``.svg``, ``.png``, ``.pdf``).

        Raises:
          ImportError: matplotlib is not installed (``pip install pipestate[plot]``).
          TypeError: ``path`` is not a string or path.
        """
        from pipestate.data._profile_plot import plot_profile

        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"plot: path must be a file name, got {type(path).__name__} {path!r}")

        plot_profile(self, path)


# -------------------------------------------------------- profiling
class ProfiledIterator(DatasetIterator):
    """An iterator over an instrumented copy of a pipeline; :meth:`stats` says where time went.

    Created by :func:`profiled` (``ps.data.profiled(ds)``). It yields the
    pipeline's elements and saves and restores the same states as
    ``iter(ds)``; the time between ``next()`` calls counts as the consumer's.
    Over a :class:`~pipestate.data.Loader` with worker processes, the ops run
    in the workers, untimed: the Loader is one stage, timed by the waits.
    With ``sampling`` (the default), a streaming op whose calls cost less than
    timing them is timed on a sample of its calls (see :class:`OpProfile`), unless
    the pipeline runs threads (prefetch, a parallel map).
    """

    def __init__(
        self, dataset: Dataset, loader: Loader | None = None, sampling: bool = True
    ) -> None:
        super().__init__(dataset)
        ops = _ops(dataset)
        self._ops = ops
        self._sampling = sampling
        self._loader = loader if loader is not None and loader.num_workers > 0 else None
        # With threads (prefetch, parallel map), a sampled call may wait for the GIL held by
        # another thread, which its run would repeat: such pipelines time every call.
        threaded = any(op._background() is not None for op in ops)
        # The last slot: a Loader's waits.
        self._recorder = _Recorder(len(ops) + 1, sampling=sampling and not threaded)
        self._consumer = threading.get_ident()
        ids = {id(op): i for i, op in enumerate(ops)}
        self._profiled = _instrument(dataset, self._recorder, ids)
        if self._loader is None:
            self._inner = iter(self._profiled)
        else:
            inner = iter(self._loader)
            cls = type(inner)
            inner.__class__ = type(cls.__name__, (cls,), {"_advance": _chunk_timed(cls._advance)})  # type: ignore[attr-defined]
            inner._profile_op = len(ops)  # type: ignore[attr-defined]
            inner._profile_recorder = self._recorder  # type: ignore[attr-defined]
            self._inner = inner
        self._started: float | None = None
        self._in_next = 0.0
        self._count = 0

    def _next(self) -> Any:
        began = time.perf_counter()
        if self._started is None:
            self._started = began
        try:
            element = self._inner._next()
        finally:
            self._in_next += time.perf_counter() - began
        self._count += 1
        return element

    def _get_state(self) -> State:
        return self._inner._get_state()

    def _set_state(self, state: State) -> None:
        self._inner._set_state(state)

    def _close(self) -> None:
        self._inner.close()

    def stats(self) -> ProfileReport:
        """The profile of the run so far (the iterator keeps running and counting)."""
        wall = 0.0 if self._started is None else time.perf_counter() - self._started
        return _report(self, wall)

    def __repr__(self) -> str:
        sampling = "" if self._sampling else ", sampling=False"
        return f"ProfiledIterator({self._dataset!r}{sampling})"


def _report(it: ProfiledIterator, wall: float) -> ProfileReport:
    recorder = it._recorder
    datasets = it._ops
    n = len(datasets)
    work = [0.0] * n
    total = [0.0] * n
    elements = [0] * n
    calls = [0] * n
    timed = [0] * n
    waited = list(recorder.waits)
    threads: list[set[str]] = [set() for _ in range(n)]  # by name: engines restart threads
    busy: dict[str, float] = {}
    with recorder.lock:
        tables = list(recorder.tables)
    for ident, name, table in tables:
        worker = ident != it._consumer
        worked = 0.0
        for op in range(n):
            row = _with_pending(table, op, recorder.samplers[op])
            if not row[_CALLS]:
                continue
            total[op] += row[_TOTAL]
            elements[op] += int(row[_ELEMENTS])
            calls[op] += int(row[_CALLS])
            timed[op] += int(row[_TIMED])
            # In a threaded op's iterator, time outside its own workers is spent waiting
            # for them (the consumer, or the thread of a prefetch after it).
            dataset = datasets[op]
            if dataset._background() is not None and not name.startswith(
                f"pipestate-{dataset._op_name}-"
            ):
                waited[op] += row[_SELF]
            else:
                work[op] += row[_SELF]
                worked += row[_SELF]
                threads[op].add(name)
        if worker and wall > 0:
            busy[name] = min(busy.get(name, 0.0) + worked / wall, 1.0)
    index = {id(op): i for i, op in enumerate(datasets)}
    ops = [
        OpProfile(
            op=op._op_repr(),
            inputs=[index[id(parent)] for parent in op._parents],
            elements=elements[i],
            self_seconds=max(work[i], 0.0),
            total_seconds=total[i],
            threads=max(len(threads[i]), 1),
            waited_seconds=max(waited[i], 0.0),
            ready_share=(recorder.ready[i] / recorder.chunks[i] if recorder.chunks[i] else None),
            calls=calls[i],
            timed_calls=timed[i],
        )
        for i, op in enumerate(datasets)
    ]
    loader = it._loader
    if loader is not None:
        ops.append(
            OpProfile(
                op=f"Loader(num_workers={loader.num_workers})",
                inputs=[n - 1],
                elements=it._count,
                self_seconds=0.0,
                total_seconds=waited[n],
                threads=loader.num_workers,
                waited_seconds=waited[n],
                ready_share=None,
            )
        )
    bottleneck, suggestion = _diagnose(datasets, ops, wall, it._in_next, loader)
    return ProfileReport(
        pipeline=repr(it._dataset),
        ops=ops,
        elements=it._count,
        wall_seconds=wall,
        next_seconds=it._in_next,
        worker_threads=busy,
        bottleneck=bottleneck,
        suggestion=suggestion,
    )


def _with_pending(table: list[list[float]], op: int, sampler: _Sampler) -> list[float]:
    """``table``'s row for ``op``, with the untimed calls of the op's current run if its
    last timed call was in this table (their times estimated as the timed calls' average)."""
    row = table[op]
    pending = sampler.pending()
    if not pending or sampler.table is not table or not sampler.weight:
        return row
    row = list(row)
    row[_CALLS] += pending
    row[_ELEMENTS] += pending - sampler.raised
    row[_TOTAL] += pending * sampler.total / sampler.weight
    row[_SELF] += pending * sampler.own / sampler.weight
    return row


def _diagnose(
    datasets: list[Dataset],
    ops: list[OpProfile],
    wall: float,
    in_next: float,
    loader: Loader | None = None,
) -> tuple[str, str]:
    """The bottleneck and what to do about it."""
    threaded = [d for d in datasets if d._background() is not None]
    if wall <= 0 or not ops:
        return "unknown", "read some elements first"
    consumer = wall - in_next
    if consumer >= _CONSUMER_BOUND * wall:
        if not threaded:
            return "consumer", (
                f"the pipeline keeps up: the consumer works {100 * consumer / wall:.0f}% of the "
                "time and waits for the pipeline the rest. Add .prefetch(ps.data.AUTOTUNE) at "
                "the end of the pipeline so the next elements are prepared while it works."
            )
        return "consumer", (
            f"the pipeline keeps up: the consumer works {100 * consumer / wall:.0f}% of the "
            "time; speed up the consumer (the training step), not the input"
        )
    if loader is not None:
        from pipestate.data._engine import available_cores

        return ops[-1].op, (
            f"the consumer waited in next() {100 * in_next / wall:.0f}% of the time for the "
            f"Loader's {loader.num_workers} worker processes, which run the ops (not timed "
            f"here). Raise num_workers ({available_cores()} cores available to this process) "
            "or prefetch_factor, or profile the dataset itself (ds.profile()) to find its "
            "slow op."
        )
    worst = max(range(len(ops)), key=lambda i: ops[i].cost)
    dataset, op = datasets[worst], ops[worst]
    share = 100 * max(op.cost, 0.0) / max(sum(max(o.cost, 0.0) for o in ops), 1e-12)
    per = op.cost / max(op.elements, 1)
    micro = f"{per * 1e6:,.0f}" if per >= 10e-6 else f"{per * 1e6:.1f}"
    where = f"{op.op} takes {share:.0f}% of the pipeline's time ({micro} µs per element)"
    name = dataset._op_name
    starved = [o.op for o in ops if o.waited_seconds > 0.2 * wall and o is not op]
    note = (
        f"; {', '.join(starved)} ran empty (what reads from it waited for its threads; the "
        f"consumer waited in next() {100 * in_next / wall:.0f}% of the time)"
        if starved
        else ""
    )
    if name == "map" and dataset._background() is None:
        return op.op, (
            f"{where}{note}. Run it on threads with map(f, num_parallel_calls="
            "ps.data.AUTOTUNE) (NumPy, I/O and other GIL-releasing work), in processes with "
            "ps.data.Loader(ds, num_workers=...) (pure Python), or vectorise it: batch() before "
            "map() so the function runs once per batch."
        )
    if name == "map":
        return op.op, (
            f"{where} on {op.threads} thread(s){note}. If the function is pure Python (it holds "
            "the GIL), use processes: ps.data.Loader(ds, num_workers=...); else vectorise it "
            "with batch() before map()."
        )
    if not dataset._parents:
        return op.op, (
            f"{where}: the source is the slowest stage{note}. Overlap its reads with the rest "
            "with .prefetch(ps.data.AUTOTUNE), read several files at once with "
            "interleave(..., num_parallel_calls=ps.data.AUTOTUNE), or, for a random-access "
            "source, read it in processes with ps.data.Loader(ds, num_workers=...)."
        )
    if dataset._background() is not None:
        return op.op, f"{where}{note}: its threads are the slowest stage; give it more threads."
    return op.op, (
        f"{where}{note}. Move cheaper steps (filter, take) before it, or parallelise the work "
        "before it with map(..., num_parallel_calls=ps.data.AUTOTUNE)."
    )


def profiled(dataset: Dataset | Loader, *, sampling: bool = True) -> ProfiledIterator:
    """An iterator over ``dataset`` that profiles every op; ``it.stats()`` gives the report.

    Use it in your own loop, so the consumer's time (the training step) is
    measured too. It yields the same elements, and saves and restores the
    same states, as ``iter(dataset)``. A :class:`~pipestate.data.Loader` with
    worker processes is profiled as one stage: the consumer's waits for it.

    Args:
      dataset: the pipeline.
      sampling: time a sample of the calls of streaming ops that cost less per
        call than timing them (their times are then estimates, marked ``~``;
        counts stay exact). ``False`` times every call, at up to several times
        the pipeline's own cost on sub-microsecond ops. A pipeline with threads
        (prefetch, a parallel map) has every call timed either way.

    Raises:
      TypeError: ``dataset`` is not a pipestate Dataset or Loader, or ``sampling``
        is not a bool.

    Example:
      >>> it = ps.data.profiled(ds)  # doctest: +SKIP
      >>> for step, batch in zip(range(100), it):
      ...     train_step(batch)
      >>> print(it.stats())
    """
    from pipestate.data.dataset import Dataset
    from pipestate.data.loader import Loader

    if not isinstance(sampling, bool):
        raise TypeError(
            f"profiled: sampling must be True or False, got {type(sampling).__name__} "
            f"{brief(sampling, 80)}"
        )
    if isinstance(dataset, Loader):
        return ProfiledIterator(dataset.dataset, dataset, sampling)
    if not isinstance(dataset, Dataset):
        raise TypeError(
            f"profiled: dataset must be a pipestate Dataset or Loader, got "
            f"{type(dataset).__name__} {brief(dataset, 80)}"
        )
    return ProfiledIterator(dataset, sampling=sampling)


def profile(
    dataset: Dataset,
    num_elements: int | None = 1000,
    consume: Callable[[Any], Any] | None = None,
    *,
    sampling: bool = True,
) -> ProfileReport:
    """Reads up to ``num_elements`` elements of ``dataset`` and profiles every op.

    Args:
      dataset: the pipeline.
      num_elements: how many elements to read (``None``: to the end).
      consume: called on each element, standing in for the training step
        (its time counts as the consumer's).
      sampling: as in :func:`profiled` (``False``: time every call).

    Returns:
      A :class:`ProfileReport`: per-op time (self and cumulative), elements
      per second at each stage, thread use, the consumer's waits, the
      bottleneck and a suggestion.

    Raises:
      TypeError: a non-Dataset, a non-integer ``num_elements``, a non-callable ``consume``
        or a non-bool ``sampling``.
      ValueError: ``num_elements < 1``.
    """
    count = check_count("profile: num_elements", num_elements, minimum=1)
    check_function("consume", consume, "profile", allow_none=True)
    it = profiled(dataset, sampling=sampling)
    try:
        read = 0
        while count is None or read < count:
            try:
                element = next(it)
            except StopIteration:
                break
            read += 1
            if consume is not None:
                consume(element)
        return it.stats()
    finally:
        it.close()
