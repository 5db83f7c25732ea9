"""``Loader``: reads a random-access pipeline with worker processes, in order, with exact state."""

from __future__ import annotations

import collections
import contextlib
import itertools
import multiprocessing
import pickle
import signal
import time
import traceback
import weakref
from multiprocessing import connection
from typing import Any, NoReturn

import numpy as np

from pipestate._validate import check_parallelism
from pipestate.data import _shm
from pipestate.data._workers import (
    ChunkIndexIterator,
    read_range,
    resolve_parallelism,
    surface,
)
from pipestate.data.dataset import Dataset
from pipestate.data.iterator import DatasetIterator, State
from pipestate.errors import PipestateError

__all__ = ["Loader", "LoaderWorkerError"]

TARGET_CHUNK_SECONDS = 0.02
"""Work per task sent to a process: a process hand-off costs a few hundred microseconds."""
MAX_CHUNK = 1 << 16
_SHUTDOWN_SECONDS = 2.0
_STARTUP_SECONDS = 60.0
"""With ``timeout``, the longest a worker may take to start (import, unpickle the dataset)."""


class LoaderWorkerError(PipestateError, RuntimeError):
    """A loader worker process died (killed, crashed, out of memory) or stopped answering."""


class _RemoteTracebackError(Exception):
    """The traceback of an exception raised in a worker process, as text."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


class Loader:
    """Reads a random-access dataset with ``num_workers`` processes, for CPU-heavy Python code.

    The work is split by global index: the index space is cut into chunks,
    chunk ``k`` goes to worker ``k % num_workers`` and the consumer puts the
    results back in index order, so the elements do not depend on
    ``num_workers``. The iterator's state is the dataset's own (the index of
    the next element, and the seed drawn for ``seed=None`` ops): it restores
    under any ``num_workers``, into ``iter(dataset)``, and the other way round.
    Arrays cross from the workers through shared memory, in blocks the
    consumer names and removes; only their layout is pickled. An element that
    raises is raised in its place and counts as consumed, as with
    ``iter(dataset)``. Workers start on the first ``next()`` and stop on ``close()``,
    when the iterator is garbage collected, or at exit.

    Example:
      >>> loader = ps.data.Loader(ds.map(decode).batch(64), num_workers=4)  # doctest: +SKIP
      >>> it = iter(loader)
      >>> batch = next(it)
      >>> state = it.get_state()   # restores with any num_workers

    Args:
      dataset: a random-access pipeline (no ``filter``, buffer ``shuffle`` or
        other streaming op: use ``map(num_parallel_calls=...)`` for those).
      num_workers: worker processes; ``0`` reads in this process;
        ``pipestate.data.AUTOTUNE``: one per available core.
      prefetch_factor: chunks each worker may compute ahead of the consumer.
      chunk_size: elements per task; ``None`` sizes tasks to about 20 ms of work.
      multiprocessing_context: ``'forkserver'`` (default where available),
        ``'spawn'`` or ``'fork'``. With the first two the dataset is pickled
        to the workers, so its functions must be defined at module level;
        ``'fork'`` also takes lambdas but is unsafe once threads are running.
      timeout: seconds to wait for one chunk before raising
        :class:`LoaderWorkerError`, counted once its worker has started (a
        worker may take ``max(timeout, 60)`` seconds to start); ``None``
        waits as long as the worker lives.

    Raises:
      TypeError: ``dataset`` is not a random-access Dataset, or bad arguments.
      ValueError: out-of-range arguments.
    """

    def __init__(
        self,
        dataset: Dataset,
        num_workers: int = -1,
        *,
        prefetch_factor: int = 2,
        chunk_size: int | None = None,
        multiprocessing_context: str | None = None,
        timeout: float | None = None,
    ) -> None:
        if not isinstance(dataset, Dataset):
            raise TypeError(
                f"Loader: dataset must be a pipestate Dataset, got {type(dataset).__name__} "
                f"{dataset!r:.80}"
            )
        if not dataset._random_access:
            raise TypeError(
                f"Loader needs a random-access pipeline (its workers compute elements by index), "
                f"but {dataset!r} is not: an op such as filter or shuffle(buffer_size) needs the "
                "elements before it. Use map(..., num_parallel_calls=...) for parallel work in a "
                "streaming pipeline, or move the streaming ops after the Loader's dataset."
            )
        self._dataset = dataset
        self._num_workers = resolve_parallelism(
            check_parallelism(num_workers, "num_workers", "Loader", minimum=0)
        )
        self._prefetch_factor = _check_positive("prefetch_factor", prefetch_factor)
        self._chunk_size = None if chunk_size is None else _check_positive("chunk_size", chunk_size)
        if multiprocessing_context is None:
            methods = multiprocessing.get_all_start_methods()
            multiprocessing_context = "forkserver" if "forkserver" in methods else "spawn"
        if multiprocessing_context not in multiprocessing.get_all_start_methods():
            raise ValueError(
                f"Loader: multiprocessing_context must be one of "
                f"{multiprocessing.get_all_start_methods()}, got {multiprocessing_context!r}"
            )
        self._context = multiprocessing_context
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"Loader: timeout must be a positive number or None, got {timeout!r}")
        self._timeout = timeout

    @property
    def dataset(self) -> Dataset:
        """The dataset this loader reads."""
        return self._dataset

    @property
    def num_workers(self) -> int:
        """The number of worker processes (``AUTOTUNE`` resolved)."""
        return self._num_workers

    def __iter__(self) -> DatasetIterator:
        if self._num_workers == 0:
            return iter(self._dataset)
        entropy = self._dataset._iterator_entropy()
        return LoaderIterator(self, entropy)

    def __len__(self) -> int:
        return len(self._dataset)

    def __repr__(self) -> str:
        return (
            f"Loader({self._dataset!r}, num_workers={self._num_workers}, "
            f"prefetch_factor={self._prefetch_factor}, chunk_size={self._chunk_size}, "
            f"multiprocessing_context={self._context!r})"
        )


def _check_positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"Loader: {name} must be an integer, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"Loader: {name} must be >= 1, got {name}={value}")
    return int(value)


class _Task:
    __slots__ = ("name", "start", "stop", "worker")

    def __init__(self, worker: int, start: int, stop: int, name: str) -> None:
        self.worker, self.start, self.stop, self.name = worker, start, stop, name


class LoaderIterator(ChunkIndexIterator):
    """The iterator of a :class:`Loader`: chunks computed by processes, read in index order.

    Its state is the index iterator's (``{"index", "seed"}``, plus
    ``"global"`` for a pipeline topped by ``shard``). Chunks in flight when
    the state is restored are discarded as they arrive. An element whose
    computation raised is raised in its place, as by ``iter(dataset)``, and
    counts as consumed: the next ``next()`` returns the element after it.
    """

    def __init__(self, loader: Loader, entropy: int | None) -> None:
        super().__init__(loader._dataset, entropy, 0)
        self._loader = loader
        self._blocks = _shm.Blocks()
        self._procs: list[Any] = []
        self._conns: list[Any] = []
        self._finalizer: weakref.finalize | None = None  # type: ignore[type-arg]
        self._pending: collections.deque[_Task] = collections.deque()  # to read, in order
        self._sent: list[collections.deque[_Task]] = []  # per worker: sent, result not read
        self._ready: list[bool] = []  # per worker: start-up done
        self._cursor = 0  # first index not yet given to a worker
        self._tasks = 0  # tasks issued since the workers started or the state was restored
        self._chunk = loader._chunk_size or 1
        self._per_element: float | None = None
        # The rest of the current chunk after an element that raised: the
        # error, raised once the elements before it are read, then the pieces
        # (start, elements, error or None) that follow it.
        self._failure: BaseException | None = None
        self._pieces: collections.deque[tuple[int, list[Any], BaseException | None]] = (
            collections.deque()
        )

    # ------------------------------------------------------------ processes
    def _start_workers(self) -> None:
        loader = self._loader
        context = multiprocessing.get_context(loader._context)
        if loader._context == "forkserver":
            # Import the library once in the fork server (if it is not running
            # yet), not in every worker: workers then start in milliseconds.
            context.set_forkserver_preload(["__main__", "pipestate.data.loader"])
        procs: list[Any] = []
        conns: list[Any] = []
        self._procs, self._conns = procs, conns
        self._finalizer = weakref.finalize(self, _shutdown, procs, conns, self._blocks)
        for worker in range(loader._num_workers):
            ours, theirs = context.Pipe(duplex=True)
            proc = context.Process(  # type: ignore[attr-defined]
                target=_worker_main,
                args=(theirs, self._dataset, worker),
                name=f"pipestate-loader-{worker}",
                daemon=True,
            )
            try:
                proc.start()
            except (pickle.PicklingError, AttributeError, TypeError) as err:
                ours.close()
                theirs.close()
                self._stop_workers()
                raise TypeError(
                    f"Loader: the dataset can't be sent to worker processes started with "
                    f"{loader._context!r}: {err}. Define the pipeline's functions at module "
                    "level (not lambdas or local functions), or use "
                    "multiprocessing_context='fork'."
                ) from err
            theirs.close()
            procs.append(proc)
            conns.append(ours)
        self._sent = [collections.deque() for _ in procs]
        self._ready = [False] * len(procs)
        self._tasks = 0

    def _stop_workers(self, graceful: bool = True) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
            _shutdown(self._procs, self._conns, self._blocks, graceful)
        self._procs, self._conns = [], []
        self._pending.clear()
        self._sent = []

    def _issue(self) -> None:
        """Gives workers new chunks, up to ``prefetch_factor`` each ahead of the consumer."""
        limit = self._loader._prefetch_factor * len(self._procs)
        length = self._length
        while len(self._pending) < limit and (length < 0 or self._cursor < length):
            start = self._cursor
            stop = start + self._chunk
            if length >= 0:
                stop = min(stop, length)
            worker = self._tasks % len(self._procs)
            # The consumer names the block before the worker creates it, so it
            # can remove it whatever becomes of the worker.
            task = _Task(worker, start, stop, self._blocks.new())
            self._sent[worker].append(task)
            self._pending.append(task)
            self._tasks += 1
            self._cursor = stop
            try:
                self._conns[worker].send((task.name, self._entropy, self._epoch, start, stop))
            except (BrokenPipeError, OSError):
                self._dead(worker, task)

    def _receive(self, task: _Task) -> tuple[Any, ...]:
        """The result of ``task``, dropping first those of its worker's tasks a restore dropped."""
        worker = task.worker
        sent = self._sent[worker]
        while True:
            result: tuple[Any, ...] = self._recv(worker, task)
            done = sent.popleft()
            if done is task:
                return result
            self._blocks.release(done.name, exists=result[1])

    def _recv(self, worker: int, task: _Task) -> Any:
        """The next message of ``worker``; the timeout counts from the end of its start-up."""
        timeout = self._loader._timeout
        if not self._ready[worker]:
            # A worker says it is ready once started (its start-up, slow on a
            # busy machine, is not part of any chunk's time).
            startup = None if timeout is None else max(timeout, _STARTUP_SECONDS)
            self._wait(worker, task, startup, "start")
            self._ready[worker] = True
        return self._wait(worker, task, timeout, "return elements")

    def _wait(self, worker: int, task: _Task, timeout: float | None, doing: str) -> Any:
        conn, proc = self._conns[worker], self._procs[worker]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = connection.wait([conn, proc.sentinel], remaining)
            if conn in ready or (ready and conn.poll(0)):
                try:
                    return conn.recv()
                except (EOFError, OSError):
                    self._dead(worker, task)
            if ready:
                self._dead(worker, task)
            if deadline is not None and time.monotonic() >= deadline:
                error = LoaderWorkerError(
                    f"Loader worker {worker} (pid {proc.pid}) did not {doing} within "
                    f"{timeout}s (timeout={self._loader._timeout}); it was given elements "
                    f"[{task.start}, {task.stop}) of {self._dataset!r}"
                )
                self._fail(error)

    def _dead(self, worker: int, task: _Task) -> NoReturn:
        proc = self._procs[worker]
        proc.join(0.5)
        code = proc.exitcode
        how = f"exit code {code}"
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                how += f" ({signal.Signals(-code).name})"
        self._fail(
            LoaderWorkerError(
                f"Loader worker {worker} (pid {proc.pid}) died with {how} while computing "
                f"elements [{task.start}, {task.stop}) of {self._dataset!r}. The iterator's "
                "state is still exact: restore it (it.set_state(it.get_state())) to start new "
                "workers and continue."
            )
        )

    def _fail(self, error: BaseException) -> NoReturn:
        self._stop_workers(graceful=False)  # a worker is dead or stuck: don't wait for it
        self._error = error
        raise error

    # ------------------------------------------------------------- consumer
    def _advance(self) -> Any:
        while True:
            if self._error is not None:
                raise self._error
            self._chunk_start += len(self._elements)
            self._elements, self._pos = [], 0
            failure = self._failure
            if failure is not None:
                # As in iter(dataset): the element that raised counts as
                # consumed, so the state and the next next() are past it.
                self._failure = None
                self._chunk_start += 1
                raise failure
            if self._pieces:
                start, elements, self._failure = self._pieces.popleft()
            else:
                start, elements = self._fetch()
            self._chunk_start = start
            self._elements = elements
            if elements:
                self._pos = 1
                return elements[0]

    def _fetch(self) -> tuple[int, list[Any]]:
        """Reads the next chunk: ``(start, elements)`` up to its first failure, if any."""
        if not self._procs:
            self._start_workers()
        self._issue()
        if not self._pending:
            raise StopIteration
        task = self._pending.popleft()
        layout, created, elapsed, failures, fatal = self._receive(task)
        try:
            elements = _shm.unpack(layout, task.name if created else None)
        finally:
            self._blocks.release(task.name, exists=created)
        if task.stop > task.start and self._loader._chunk_size is None:
            self._adapt(elapsed / (task.stop - task.start))
        self._issue()
        where = f"pipestate Loader worker process {task.worker}, at element"
        if fatal is not None:
            # The chunk could not be sent: raised at its start until restored.
            self._stop_workers()
            self._error = surface(_decode_error(fatal), f"{where} {task.start}")
            return task.start, []
        start, taken = task.start, 0
        for failed, failure in failures:
            count = failed - start
            error = surface(_decode_error(failure), f"{where} {failed}")
            self._pieces.append((start, elements[taken : taken + count], error))
            start, taken = failed + 1, taken + count
        if not self._pieces:
            return start, elements
        self._pieces.append((start, elements[taken:], None))
        start, elements, self._failure = self._pieces.popleft()
        return start, elements

    def _adapt(self, per_element: float) -> None:
        estimate = self._per_element
        estimate = per_element if estimate is None else 0.5 * (estimate + per_element)
        self._per_element = estimate
        wanted = int(TARGET_CHUNK_SECONDS / max(estimate, 1e-9))
        self._chunk = max(1, min(wanted, MAX_CHUNK, 4 * self._chunk))

    def _set_state(self, state: State) -> None:
        super()._set_state(state)
        self._pending.clear()  # their results are dropped as they arrive (see _receive)
        self._failure = None
        self._pieces.clear()
        self._cursor = self._chunk_start
        self._tasks = 0
        if self._error is not None:
            self._error = None
            self._stop_workers()

    def _close(self) -> None:
        self._stop_workers()
        self._elements = []
        self._failure = None
        self._pieces.clear()


def _shutdown(
    procs: list[Any], conns: list[Any], blocks: _shm.Blocks, graceful: bool = True
) -> None:
    """Stops worker processes, then removes every block handed out and not yet read.

    Gracefully, each worker finishes its chunk in hand and exits; otherwise
    (or past a deadline) they are terminated.
    """
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


# ----------------------------------------------------------------- workers
def _worker_main(conn: Any, dataset: Dataset, worker: int) -> None:
    """A worker process: computes the index ranges it is sent, until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the consumer handles Ctrl-C and stops us
    resolved: dict[int | None, Dataset] = {}
    try:
        conn.send(None)  # started
    except (BrokenPipeError, OSError):
        return
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return  # the consumer is gone
        if task is None:
            return
        name, entropy, epoch, start, stop = task
        source = resolved.get(entropy)
        if source is None:
            source = (
                dataset if entropy is None else dataset._resolve_seeds(entropy, itertools.count())
            )
            resolved.clear()
            resolved[entropy] = source
        began = time.perf_counter()
        elements, failures = _compute(source, epoch, start, stop)
        elapsed = time.perf_counter() - began
        fatal = None
        try:
            layout, created = _shm.pack(elements, name)
        except Exception as err:
            layout, created = _shm.pack([], name)
            fatal = _encode_error(err)
        try:
            conn.send((layout, created, elapsed, failures, fatal))
        except (BrokenPipeError, OSError):
            return  # the consumer is gone; the block is its (or its resource tracker's) to remove


def _compute(
    source: Dataset, epoch: int, start: int, stop: int
) -> tuple[list[Any], list[tuple[int, tuple[bytes | None, str, str]]]]:
    """Elements ``[start, stop)`` that could be computed, and ``(index, error)`` for the others."""
    elements: list[Any] = []
    failures: list[tuple[int, tuple[bytes | None, str, str]]] = []
    position = start
    while position < stop:
        got, error = read_range(source, epoch, position, stop)
        elements.extend(got)
        position += len(got)
        if error is None:
            break
        failures.append((position, _encode_error(error)))
        position += 1
    return elements, failures


def _encode_error(error: BaseException) -> tuple[bytes | None, str, str]:
    """An exception as (pickle if it round-trips, description, traceback text)."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    data: bytes | None
    try:
        data = pickle.dumps(error)
        pickle.loads(data)  # what the consumer will do: check it works
    except Exception:
        data = None
    return data, f"{type(error).__name__}: {error}", text


def _decode_error(failure: tuple[bytes | None, str, str]) -> BaseException:
    data, description, text = failure
    error: BaseException | None = None
    if data is not None:
        try:
            error = pickle.loads(data)  # sent by our own worker process
        except Exception:
            error = None
    if not isinstance(error, BaseException):
        error = RuntimeError(f"a loader worker raised {description}")
    error.__cause__ = _RemoteTracebackError(f'\n"""\n{text}"""')
    return error
