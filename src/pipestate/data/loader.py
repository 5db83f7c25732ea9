"""``Loader``: reads a random-access pipeline with worker processes, in order, with exact state."""

from __future__ import annotations

import collections
import contextlib
import signal
import sys
import time
import warnings
from collections.abc import Callable
from multiprocessing import connection
from typing import Any, NoReturn

from pipestate._validate import check_bool, check_function, check_int, check_parallelism
from pipestate.data import _shm
from pipestate.data._engine import read_range, resolve_parallelism, surface
from pipestate.data._launch import (
    check_context,
)
from pipestate.data._loader_pool import Pool, Task, lease_numbers
from pipestate.data._loader_worker import (
    WorkerInfo,
    compute,
    decode_error,
    get_worker_info,
)
from pipestate.data._threaded import ChunkIndexIterator
from pipestate.data.dataset import Dataset
from pipestate.data.iterator import DatasetIterator, State
from pipestate.errors import PipestateError

__all__ = ["Loader", "LoaderIterator", "LoaderWorkerError", "WorkerInfo", "get_worker_info"]

TARGET_CHUNK_SECONDS = 0.02
"""Work per task sent to a process: a process hand-off costs a few hundred microseconds."""
MAX_CHUNK = 1 << 16
_INLINE_BLOCK = 64
"""With ``num_workers=0``: the most elements of a pure pipeline read at once (collate_fn aside)."""
_INLINE_AHEAD_SECONDS = 0.001
_STARTUP_SECONDS = 60.0
"""With ``timeout``, the longest a worker may take to start (import, unpickle the dataset)."""


class LoaderWorkerError(PipestateError, RuntimeError):
    """A loader worker process died (killed, crashed, out of memory) or stopped answering."""


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
    ``iter(dataset)``. Workers start on the first ``next()`` (one at once,
    the others one per chunk read after it, so the first element waits for
    a single start) and stop on ``close()``, when the iterator is garbage
    collected, or at exit; with
    ``persistent_workers`` they serve every iterator of the loader (epochs,
    restores) until :meth:`close` or exit.

    Workers never run the user's main module: ``fork`` workers inherit it,
    and ``forkserver`` / ``spawn`` workers import only pipestate (a fork
    server also imports ``torch`` once, when this process has) and unpickle
    the dataset, unless the dataset refers to a function or class defined in
    the main script itself; only then do they import the script, as
    ``multiprocessing`` does. Each worker seeds ``random``, NumPy's global
    generator and torch with its :class:`WorkerInfo` seed, sets
    ``torch.set_num_threads(1)`` when torch is imported, then calls
    ``worker_init_fn(worker_id)``.

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
      multiprocessing_context: ``'fork'``, ``'forkserver'``, ``'spawn'`` (or
        a ``multiprocessing`` context); ``None``: ``'fork'`` on Linux while
        this process has one Python thread, else ``'forkserver'`` (``'spawn'``
        where there is none). With ``'forkserver'`` and ``'spawn'`` the
        dataset is pickled to the workers, so its functions must be defined at
        module level (not lambdas or local functions); ``'fork'`` also takes
        lambdas but is unsafe once threads are running.
      timeout: seconds to wait for one chunk before raising
        :class:`LoaderWorkerError`, counted once its worker has started (a
        worker may take ``max(timeout, 60)`` seconds to start); ``None``
        waits as long as the worker lives.
      collate_fn: called on each element the dataset yields (a batch, when
        the pipeline ends with ``batch``), in the worker; what it returns is
        what the iterator yields. It may hold NumPy arrays, torch tensors of
        any dtype (bf16 included; tensors arrive detached, see
        ``docs/torch.md``), and lists, dicts, tuples, strings or other
        picklable values.
      pin_memory: put the torch tensors of each element in pinned memory
        (ignored, with a warning, when no accelerator is available).
      persistent_workers: keep the workers across iterators of this loader
        (epochs, ``iter()`` after a restore) until :meth:`close` or exit.
      worker_init_fn: called as ``worker_init_fn(worker_id)`` in each worker
        once it has started, before it computes anything.
      worker_seed: the base seed of the workers (worker ``i`` uses
        ``worker_seed + i``); ``None`` draws one each time workers start.

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
        multiprocessing_context: Any = None,
        timeout: float | None = None,
        collate_fn: Callable[[Any], Any] | None = None,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        worker_init_fn: Callable[[int], Any] | None = None,
        worker_seed: int | None = None,
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
        self._prefetch_factor = check_int(
            "prefetch_factor", prefetch_factor, minimum=1, op="Loader"
        )
        self._chunk_size = (
            None
            if chunk_size is None
            else check_int("chunk_size", chunk_size, minimum=1, op="Loader")
        )
        self._context = check_context(multiprocessing_context)
        # Not 'fork' by default only because threads were running (see default_context()).
        self._context_chosen = (
            multiprocessing_context is None
            and self._context != "fork"
            and sys.platform.startswith("linux")
        )
        if timeout is not None and not (
            isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0
        ):
            raise ValueError(f"Loader: timeout must be a positive number or None, got {timeout!r}")
        self._timeout = timeout
        self._collate_fn = check_function("collate_fn", collate_fn, "Loader", allow_none=True)
        self._worker_init_fn = check_function(
            "worker_init_fn", worker_init_fn, "Loader", allow_none=True
        )
        self._pin_memory = (
            bool(check_bool("pin_memory", pin_memory, op="Loader")) and can_pin_memory()
        )
        self._persistent = bool(check_bool("persistent_workers", persistent_workers, op="Loader"))
        if worker_seed is not None:
            worker_seed = check_int("worker_seed", worker_seed, minimum=0, op="Loader")
        self._worker_seed = worker_seed
        # What get_worker_info().dataset shows in the workers (pipestate.torch sets its dataset).
        self._info_dataset: Any = dataset
        self._pool: Pool | None = None

    @property
    def dataset(self) -> Dataset:
        """The dataset this loader reads."""
        return self._dataset

    @property
    def num_workers(self) -> int:
        """The number of worker processes (``AUTOTUNE`` resolved)."""
        return self._num_workers

    @property
    def multiprocessing_context(self) -> str:
        """The start method of the workers (``None`` resolved when the loader was made)."""
        return self._context

    def __iter__(self) -> DatasetIterator:
        if self._num_workers == 0 and self._collate_fn is None and not self._pin_memory:
            return iter(self._dataset)
        return self._iterator(self._dataset._iterator_entropy())

    def _iterator(self, entropy: int | None) -> LoaderIterator:
        """An iterator whose ``seed=None`` ops are seeded from ``entropy``."""
        return LoaderIterator(self, entropy)

    def close(self) -> None:
        """Stops the persistent workers, if any; iterators started later start new ones."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()

    def __len__(self) -> int:
        return len(self._dataset)

    def __repr__(self) -> str:
        return (
            f"Loader({self._dataset!r}, num_workers={self._num_workers}, "
            f"prefetch_factor={self._prefetch_factor}, chunk_size={self._chunk_size}, "
            f"multiprocessing_context={self._context!r}, "
            f"persistent_workers={self._persistent})"
        )


def can_pin_memory(stacklevel: int = 3) -> bool:
    """Whether torch can pin memory here; warns when it can't."""
    torch = sys.modules.get("torch")
    available = False
    if torch is not None:
        accelerator = getattr(torch, "accelerator", None)
        with contextlib.suppress(Exception):
            available = bool(
                accelerator.is_available() if accelerator is not None else torch.cuda.is_available()
            )
    if not available:
        warnings.warn(
            "pin_memory=True, but no accelerator is available (or torch is not imported): "
            "memory will not be pinned",
            UserWarning,
            stacklevel=stacklevel,
        )
    return available


def _pin(value: Any) -> Any:
    """``value`` with every torch tensor in it moved to pinned memory."""
    torch = sys.modules["torch"]
    if isinstance(value, torch.Tensor):
        return value.pin_memory()
    if isinstance(value, dict):
        return type(value)((key, _pin(item)) for key, item in value.items())
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_pin(item) for item in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_pin(item) for item in value)
    return value


# ------------------------------------------------------------ start-up


class LoaderIterator(ChunkIndexIterator):
    """The iterator of a :class:`Loader`: chunks computed by processes, read in index order.

    Its state is the index iterator's (``{"index", "seed"}``, plus
    ``"global"`` for a pipeline topped by ``shard``). Chunks in flight when
    the state is restored are discarded as they arrive. An element whose
    computation raised is raised in its place, as by ``iter(dataset)``, and
    counts as consumed: the next ``next()`` returns the element after it.
    With ``num_workers=0`` (and a ``collate_fn``) it computes one element at a
    time in this process.
    """

    def __init__(self, loader: Loader, entropy: int | None) -> None:
        super().__init__(loader._dataset, entropy, 0)
        self._loader = loader
        self._pool: Pool | None = None
        self._lease = 0
        self._own_blocks = _shm.Blocks()  # of the workers this iterator starts for itself
        self._ahead: list[Any] = []  # num_workers=0: elements read ahead, before collate_fn
        self._ahead_start = 0
        # Elements to read ahead next; 0: never (an op with external state must be
        # called exactly when its element is consumed).
        self._ahead_block = 0 if loader._dataset._external_ops() else 1
        self._pending: collections.deque[Task] = collections.deque()  # to read, in order
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

    @property
    def _procs(self) -> list[Any]:
        return self._pool.procs if self._pool is not None else []

    @property
    def _blocks(self) -> _shm.Blocks:
        """The block names of the workers, or of the workers this iterator will start."""
        if self._pool is not None:
            return self._pool.blocks
        return self._own_blocks

    # ------------------------------------------------------------ processes
    def _start_workers(self, private: bool = False) -> None:
        loader = self._loader
        pool = None if private or not loader._persistent else loader._pool
        fresh = pool is None or not pool.alive
        if pool is None or fresh:
            shared = loader._persistent and not private
            pool = Pool(loader, _shm.Blocks() if shared else self._own_blocks)
            if shared:
                loader._pool = pool
        else:
            pool.lease = next(lease_numbers)  # taken from the iterator that had it
        self._pool, self._lease = pool, pool.lease
        self._tasks = 0
        if fresh:
            # One worker first: the first chunk needs no other, and each start is a
            # fork (milliseconds for a process that imported torch). The others start
            # one per chunk read after it (see _fetch_from_workers).
            self._add_worker()

    def _add_worker(self) -> None:
        pool = self._pool
        assert pool is not None
        try:
            pool.add()
        except BaseException:
            self._stop_workers(graceful=False)
            raise

    def _stop_workers(self, graceful: bool = True) -> None:
        pool, self._pool = self._pool, None
        self._pending.clear()
        if pool is not None:
            if self._loader._pool is pool:
                self._loader._pool = None
            pool.stop(graceful)

    def _detach(self) -> None:
        """Leaves persistent workers to the loader; its tasks in flight are dropped on arrival."""
        pool = self._pool
        if pool is not None and self._loader._pool is pool and pool.alive:
            self._pool = None
            self._pending.clear()
        else:
            self._stop_workers()

    def _check_lease(self) -> None:
        """A newer iterator of a loader with persistent workers took them: go on with new ones."""
        pool = self._pool
        if pool is not None and pool.lease != self._lease:
            self._cursor = self._pending[0].start if self._pending else self._cursor
            self._pending.clear()
            self._pool = None
            self._start_workers(private=True)

    def _issue(self) -> None:
        """Gives workers new chunks, up to ``prefetch_factor`` each ahead of the consumer."""
        pool = self._pool
        assert pool is not None
        workers = len(pool.procs)
        limit = self._loader._prefetch_factor * workers
        length = self._length
        while len(self._pending) < limit and (length < 0 or self._cursor < length):
            start = self._cursor
            stop = start + self._chunk
            if length >= 0:
                stop = min(stop, length)
            worker = self._tasks % workers
            # The consumer names the block before the worker creates it, so it
            # can remove it whatever becomes of the worker.
            task = Task(worker, start, stop, pool.blocks.new())
            pool.sent[worker].append(task)
            self._pending.append(task)
            self._tasks += 1
            self._cursor = stop
            try:
                pool.conns[worker].send((task.name, self._entropy, self._epoch, start, stop))
            except (BrokenPipeError, OSError):
                self._dead(worker, task)

    def _receive(self, task: Task) -> tuple[Any, ...]:
        """The result of ``task``, dropping first those of its worker's tasks a restore dropped."""
        pool = self._pool
        assert pool is not None
        worker = task.worker
        sent = pool.sent[worker]
        while True:
            result: tuple[Any, ...] = self._recv(worker, task)
            done = sent.popleft()
            if done is task:
                return result
            pool.blocks.release(done.name, exists=result[1])

    def _recv(self, worker: int, task: Task) -> Any:
        """The next message of ``worker``; the timeout counts from the end of its start-up."""
        pool = self._pool
        assert pool is not None
        timeout = self._loader._timeout
        if not pool.ready[worker]:
            # A worker says it is ready once started (its start-up, slow on a
            # busy machine, is not part of any chunk's time).
            startup = None if timeout is None else max(timeout, _STARTUP_SECONDS)
            failure = self._wait(worker, task, startup, "start")
            if failure is not None:
                where = f"pipestate Loader worker process {worker}, while starting"
                self._fail(surface(decode_error(failure), where))
            pool.ready[worker] = True
        return self._wait(worker, task, timeout, "return elements")

    def _wait(self, worker: int, task: Task, timeout: float | None, doing: str) -> Any:
        pool = self._pool
        assert pool is not None
        conn, proc = pool.conns[worker], pool.procs[worker]
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

    def _dead(self, worker: int, task: Task) -> NoReturn:
        pool = self._pool
        assert pool is not None
        proc = pool.procs[worker]
        proc.join(0.5)
        code = proc.exitcode
        how = f"exit code {code}"
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                how += f" ({signal.Signals(-code).name})"
        doing = f"while computing elements [{task.start}, {task.stop}) of {self._dataset!r}"
        hint = ""
        if not pool.ready[worker]:
            doing = f"while starting, before computing anything of {self._dataset!r}"
            if pool.needs_main:
                hint = (
                    f" Its start-up ran your main script: the dataset refers to functions or "
                    f"classes defined in it, which {pool.context!r} workers can only find by "
                    "importing it. Guard the script's work with `if __name__ == '__main__':`, "
                    "move those definitions to a module, or use multiprocessing_context='fork'."
                )
        self._fail(
            LoaderWorkerError(
                f"Loader worker {worker} (pid {proc.pid}) died with {how} {doing}. The "
                "iterator's state is still exact: restore it (it.set_state(it.get_state())) to "
                f"start new workers and continue.{hint}"
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
        loader = self._loader
        if loader._num_workers == 0:
            start, elements, failures = self._compute_here()
        else:
            start, elements, failures = self._fetch_from_workers()
        if loader._pin_memory:
            elements = [_pin(element) for element in elements]
        taken = 0
        for failed, error in failures:
            count = failed - start
            self._pieces.append((start, elements[taken : taken + count], error))
            start, taken = failed + 1, taken + count
        if not self._pieces:
            return start, elements
        self._pieces.append((start, elements[taken:], None))
        start, elements, self._failure = self._pieces.popleft()
        return start, elements

    def _compute_here(self) -> tuple[int, list[Any], list[tuple[int, BaseException]]]:
        """One element computed in this process (``num_workers=0``).

        A pure pipeline is read ahead in blocks that take up to about a
        millisecond (up to ``_INLINE_BLOCK`` elements: the index pipeline of
        ``pipestate.torch.DataLoader`` is read 64 batches of indices at a
        time); reading ahead can't be observed. ``collate_fn`` runs on one
        element per call, when it is asked for.
        """
        start = self._cursor
        if 0 <= self._length <= start:
            raise StopIteration
        offset = start - self._ahead_start
        if not 0 <= offset < len(self._ahead) and self._ahead_block:
            stop = start + self._ahead_block
            if self._length >= 0:
                stop = min(stop, self._length)
            began = time.perf_counter()
            got, error = read_range(self._source, self._epoch, start, stop)
            if error is None and got:
                self._ahead, self._ahead_start, offset = got, start, 0
                per_element = (time.perf_counter() - began) / len(got)
                wanted = int(_INLINE_AHEAD_SECONDS / max(per_element, 1e-9))
                self._ahead_block = max(1, min(wanted, _INLINE_BLOCK, 4 * len(got)))
            else:  # computed one by one below, so the error is raised at its element
                self._ahead, offset = [], -1
        collate = self._loader._collate_fn
        if 0 <= offset < len(self._ahead):
            self._cursor = start + 1
            element = self._ahead[offset]
            if collate is None:
                return start, [element], []
            try:
                return start, [collate(element)], []
            except Exception as err:  # raised in its place, as from a worker
                return start, [], [(start, err)]
        elements, failures = compute(self._source, self._epoch, start, start + 1, collate)
        if not elements and not failures:
            raise StopIteration
        self._cursor = start + 1
        return start, elements, failures

    def _fetch_from_workers(self) -> tuple[int, list[Any], list[tuple[int, BaseException]]]:
        self._check_lease()
        pool = self._pool
        if pool is None:
            self._start_workers()
        elif len(pool.procs) < pool.count:
            self._add_worker()
        self._issue()
        if not self._pending:
            raise StopIteration
        task = self._pending.popleft()
        layout, created, elapsed, failures, fatal = self._receive(task)
        blocks = self._blocks
        try:
            elements = _shm.unpack(layout, task.name if created else None)
        finally:
            blocks.release(task.name, exists=created)
        if task.stop > task.start and self._loader._chunk_size is None:
            self._adapt(elapsed / (task.stop - task.start))
        self._issue()
        where = f"pipestate Loader worker process {task.worker}, at element"
        if fatal is not None:
            # The chunk could not be sent: raised at its start until restored.
            self._stop_workers()
            self._error = surface(decode_error(fatal), f"{where} {task.start}")
            return task.start, [], []
        errors = [
            (failed, surface(decode_error(failure), f"{where} {failed}"))
            for failed, failure in failures
        ]
        return task.start, elements, errors

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
        self._ahead = []  # the restored seed may differ
        if self._error is not None:
            self._error = None
            self._stop_workers()

    def _close(self) -> None:
        self._detach()
        self._elements = []
        self._failure = None
        self._pieces.clear()


# ----------------------------------------------------------------- workers
