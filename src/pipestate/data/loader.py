"""``Loader``: reads a random-access pipeline with worker processes, in order, with exact state."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import itertools
import multiprocessing
import os
import pickle
import random
import signal
import sys
import threading
import time
import traceback
import types
import warnings
import weakref
from collections.abc import Callable, Iterator
from multiprocessing import connection
from typing import Any, NoReturn

import numpy as np

from pipestate._validate import brief, check_parallelism
from pipestate.data import _shm
from pipestate.data._engine import read_range, resolve_parallelism, surface
from pipestate.data._threaded import ChunkIndexIterator
from pipestate.data.dataset import Dataset
from pipestate.data.iterator import DatasetIterator, State, draw_entropy
from pipestate.errors import PipestateError

__all__ = ["Loader", "LoaderWorkerError", "WorkerInfo", "get_worker_info"]

TARGET_CHUNK_SECONDS = 0.02
"""Work per task sent to a process: a process hand-off costs a few hundred microseconds."""
MAX_CHUNK = 1 << 16
_INLINE_BLOCK = 64
"""With ``num_workers=0``: the most elements of a pure pipeline read at once (collate_fn aside)."""
_INLINE_AHEAD_SECONDS = 0.001
_SHUTDOWN_SECONDS = 2.0
_STARTUP_SECONDS = 60.0
"""With ``timeout``, the longest a worker may take to start (import, unpickle the dataset)."""
_SEED_MASK = (1 << 64) - 1
_PRELOAD = ("pipestate.data.loader",)
"""What a fork server imports once for all its workers (plus ``torch`` when this process has it)."""


class LoaderWorkerError(PipestateError, RuntimeError):
    """A loader worker process died (killed, crashed, out of memory) or stopped answering."""


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """What a loader worker process knows about itself (as ``torch.utils.data.get_worker_info()``).

    Attributes:
      id: the worker's number, ``0 <= id < num_workers``.
      num_workers: the number of worker processes of the loader.
      seed: the seed this worker gave ``random``, NumPy's global generator and
        ``torch`` (when imported): the loader's base seed plus ``id``.
      dataset: this process's copy of the dataset the worker reads.
    """

    id: int
    num_workers: int
    seed: int
    dataset: Any


_worker_info: WorkerInfo | None = None


def get_worker_info() -> WorkerInfo | None:
    """The :class:`WorkerInfo` of this loader worker process; ``None`` outside a worker.

    In a worker, ``torch.utils.data.get_worker_info()`` answers the same (when
    torch is imported), so datasets written for PyTorch's ``DataLoader`` work
    unchanged.
    """
    return _worker_info


class _RemoteTracebackError(Exception):
    """The traceback of an exception raised in a worker process, as text."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


def default_context() -> str:
    """The start method a Loader uses when none is given.

    ``'fork'`` on Linux while this process runs a single Python thread (it
    starts workers in milliseconds and takes any function); otherwise
    ``'forkserver'`` where available, else ``'spawn'``. None of them imports
    the user's main module in the workers (see :class:`Loader`).
    """
    methods = multiprocessing.get_all_start_methods()
    if sys.platform.startswith("linux") and "fork" in methods and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


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
        self._prefetch_factor = _check_positive("prefetch_factor", prefetch_factor)
        self._chunk_size = None if chunk_size is None else _check_positive("chunk_size", chunk_size)
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
        self._collate_fn = _check_callable("collate_fn", collate_fn)
        self._worker_init_fn = _check_callable("worker_init_fn", worker_init_fn)
        self._pin_memory = _check_bool("pin_memory", pin_memory) and can_pin_memory()
        self._persistent = _check_bool("persistent_workers", persistent_workers)
        if worker_seed is not None:
            worker_seed = _check_positive("worker_seed", worker_seed, minimum=0)
        self._worker_seed = worker_seed
        # What get_worker_info().dataset shows in the workers (pipestate.torch sets its dataset).
        self._info_dataset: Any = dataset
        self._pool: _Pool | None = None

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


def _check_positive(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"Loader: {name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"Loader: {name} must be >= {minimum}, got {name}={value}")
    return int(value)


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"Loader: {name} must be a bool, got {type(value).__name__} {brief(value)}")
    return bool(value)


def _check_callable(name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise TypeError(
            f"Loader: {name} must be callable or None, got {type(value).__name__} {brief(value)}"
        )
    return value


def check_context(value: Any) -> str:
    """A start method name from a name, a ``multiprocessing`` context, or ``None``."""
    methods = multiprocessing.get_all_start_methods()
    if value is None:
        return default_context()
    if isinstance(value, multiprocessing.context.BaseContext):
        value = value.get_start_method()
    if not isinstance(value, str):
        raise TypeError(
            f"Loader: multiprocessing_context must be a start method name, a multiprocessing "
            f"context or None, got {type(value).__name__} {brief(value)}"
        )
    if value not in methods:
        raise ValueError(f"Loader: multiprocessing_context must be one of {methods}, got {value!r}")
    return value


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
_launch = threading.local()


def _without_main(name: str, original: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    data = original(name)
    if getattr(_launch, "without_main", False):
        # The child then imports only what unpickling its target needs.
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
    return data


def _install_launch_hook() -> None:
    """Lets this module start spawn / forkserver children that don't import ``__main__``.

    ``multiprocessing`` tells every such child to run the parent's main
    module (so that pickled references to it resolve): a script's top level,
    ``import torch`` included, or the whole training run of a script with no
    ``if __name__ == "__main__":`` guard. The hook drops that instruction for
    the children this module starts while ``_launch.without_main`` is set;
    every other process is started as before.
    """
    from multiprocessing import spawn

    current = spawn.get_preparation_data
    if getattr(current, "_pipestate_hook", False):
        return
    hooked = _HookedPreparation(current)
    spawn.get_preparation_data = hooked


class _HookedPreparation:
    """``multiprocessing.spawn.get_preparation_data``, minus the main module when asked."""

    _pipestate_hook = True

    def __init__(self, original: Callable[[str], dict[str, Any]]) -> None:
        self._original = original

    def __call__(self, name: str) -> dict[str, Any]:
        return _without_main(name, self._original)


@contextlib.contextmanager
def _started_without_main(active: bool) -> Iterator[None]:
    if not active:
        yield
        return
    _install_launch_hook()
    _launch.without_main = True
    try:
        yield
    finally:
        _launch.without_main = False


class _MainFinder(pickle.Pickler):
    """A pickler that notes references to functions and classes of ``__main__``."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.found_main = False

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (type, types.FunctionType)) and obj.__module__ == "__main__":
            self.found_main = True
        return NotImplemented


def _dumps(content: Any) -> tuple[bytes, bool]:
    """``content`` pickled, and whether unpickling it needs the main module."""
    buffer = io.BytesIO()
    pickler = _MainFinder(buffer)
    pickler.dump(content)
    return buffer.getvalue(), pickler.found_main


_lease_numbers = itertools.count(1)


class _Pool:
    """Worker processes, their pipes and their shared-memory names: one iterator's, or a loader's.

    The iterator holding the current lease sends tasks; each worker answers
    its tasks in order, so results of tasks sent under an earlier lease (or
    before a restore) are dropped as they arrive.
    """

    def __init__(self, loader: Loader, blocks: _shm.Blocks) -> None:
        self.procs: list[Any] = []
        self.conns: list[Any] = []
        self.blocks = blocks
        self.sent: list[collections.deque[_Task]] = []  # per worker: sent, result not read
        self.ready: list[bool] = []  # per worker: start-up done
        self.lease = next(_lease_numbers)
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
                self._payload, self.needs_main = _dumps(content)
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
            target=_worker_main,
            args=(theirs, self._payload, worker, count, (self._seed + worker) & _SEED_MASK),
            name=f"pipestate-loader-{worker}",
            daemon=True,
        )
        try:
            with _started_without_main(self.context != "fork" and not self.needs_main):
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
    With ``num_workers=0`` (and a ``collate_fn``) it computes one element at a
    time in this process.
    """

    def __init__(self, loader: Loader, entropy: int | None) -> None:
        super().__init__(loader._dataset, entropy, 0)
        self._loader = loader
        self._pool: _Pool | None = None
        self._lease = 0
        self._own_blocks = _shm.Blocks()  # of the workers this iterator starts for itself
        self._ahead: list[Any] = []  # num_workers=0: elements read ahead, before collate_fn
        self._ahead_start = 0
        # Elements to read ahead next; 0: never (an op with external state must be
        # called exactly when its element is consumed).
        self._ahead_block = 0 if loader._dataset._external_ops() else 1
        self._pending: collections.deque[_Task] = collections.deque()  # to read, in order
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
            pool = _Pool(loader, _shm.Blocks() if shared else self._own_blocks)
            if shared:
                loader._pool = pool
        else:
            pool.lease = next(_lease_numbers)  # taken from the iterator that had it
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
            task = _Task(worker, start, stop, pool.blocks.new())
            pool.sent[worker].append(task)
            self._pending.append(task)
            self._tasks += 1
            self._cursor = stop
            try:
                pool.conns[worker].send((task.name, self._entropy, self._epoch, start, stop))
            except (BrokenPipeError, OSError):
                self._dead(worker, task)

    def _receive(self, task: _Task) -> tuple[Any, ...]:
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

    def _recv(self, worker: int, task: _Task) -> Any:
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
                self._fail(surface(_decode_error(failure), where))
            pool.ready[worker] = True
        return self._wait(worker, task, timeout, "return elements")

    def _wait(self, worker: int, task: _Task, timeout: float | None, doing: str) -> Any:
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

    def _dead(self, worker: int, task: _Task) -> NoReturn:
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
        elements, failures = _compute(self._source, self._epoch, start, start + 1, collate)
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
            self._error = surface(_decode_error(fatal), f"{where} {task.start}")
            return task.start, [], []
        errors = [
            (failed, surface(_decode_error(failure), f"{where} {failed}"))
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


# ----------------------------------------------------------------- workers
def _worker_main(conn: Any, payload: Any, worker: int, num_workers: int, seed: int) -> None:
    """A worker process: computes the index ranges it is sent, until told to stop."""
    global _worker_info
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the consumer handles Ctrl-C and stops us
    try:
        content = pickle.loads(payload) if isinstance(payload, bytes) else payload
        dataset, collate_fn, worker_init_fn, info_dataset = content
        _worker_info = WorkerInfo(worker, num_workers, seed, info_dataset)
        _seed_worker(_worker_info)
        if worker_init_fn is not None:
            worker_init_fn(worker)
    except Exception as err:
        with contextlib.suppress(BrokenPipeError, OSError):
            conn.send(_encode_error(err))
        return
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
        elements, errors = _compute(source, epoch, start, stop, collate_fn)
        elapsed = time.perf_counter() - began
        failures = [(index, _encode_error(error)) for index, error in errors]
        fatal = None
        try:
            layout, created = _shm.pack(elements, name, collate_fn is not None)
        except Exception as err:
            layout, created = _shm.pack([], name)
            fatal = _encode_error(err)
        try:
            conn.send((layout, created, elapsed, failures, fatal))
        except (BrokenPipeError, OSError):
            return  # the consumer is gone; the block is its (or its resource tracker's) to remove


def _seed_worker(info: WorkerInfo) -> None:
    """Seeds the global generators and sets up torch in a worker, as torch's DataLoader does."""
    random.seed(info.seed)
    if "numpy.random" in sys.modules:  # NumPy imports it lazily, in ~0.1 s: only if in use
        np.random.seed(info.seed & 0xFFFFFFFF)
    torch = sys.modules.get("torch")
    if torch is None:
        return
    torch.set_num_threads(1)
    # torch.manual_seed, minus the accelerators it would look for (milliseconds in a
    # fresh worker); CUDA is seeded (lazily, as torch does) only where there is one.
    torch.default_generator.manual_seed(info.seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(info.seed)
    with contextlib.suppress(
        Exception
    ):  # torch's private module: its get_worker_info() answers too
        from torch.utils.data._utils import worker as torch_worker

        torch_worker._worker_info = torch_worker.WorkerInfo(
            id=info.id, num_workers=info.num_workers, seed=info.seed, dataset=info.dataset
        )


def _compute(
    source: Dataset,
    epoch: int,
    start: int,
    stop: int,
    collate_fn: Callable[[Any], Any] | None = None,
) -> tuple[list[Any], list[tuple[int, BaseException]]]:
    """Elements ``[start, stop)`` that could be computed, and ``(index, error)`` for the others."""
    elements: list[Any] = []
    failures: list[tuple[int, BaseException]] = []
    position = start
    while position < stop:
        got, error = read_range(source, epoch, position, stop)
        if collate_fn is None:
            elements.extend(got)
        else:
            for offset, element in enumerate(got):
                try:
                    elements.append(collate_fn(element))
                except Exception as err:  # raised at the consumer, at this element
                    failures.append((position + offset, err))
        position += len(got)
        if error is None:
            break
        failures.append((position, error))
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
