"""``device_prefetch``: batches put on devices ahead of the step, with the pipeline's state.

Each batch travels with the wrapped iterator's state just after it, taken when
the batch was read, so ``get_state()`` describes what the caller received and
never what was read ahead. Batches on the devices are dropped on
``set_state()`` and never saved.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Sharding, SingleDeviceSharding

from pipestate._validate import brief
from pipestate.data._feed import _copy_state
from pipestate.data.dataset import Dataset
from pipestate.data.iterator import DatasetIterator, State
from pipestate.data.loader import Loader
from pipestate.data.options import ExternalStatePolicy

__all__ = ["DeviceIterator", "device_prefetch"]

_OP = "device_prefetch"
# Leaves of these dtype kinds have no device representation: objects, strings, dates.
_NO_DEVICE_KINDS = frozenset("OSUVMm")
# Without jax_enable_x64 JAX stores these in 32 bits: integers wrap, floats beyond
# float32's range become infinite.
_WIDE_INTEGERS = frozenset({np.dtype(np.int64), np.dtype(np.uint64)})
_WIDE_INEXACT = frozenset({np.dtype(np.float64), np.dtype(np.complex128)})
_WIDE = _WIDE_INTEGERS | _WIDE_INEXACT


class _Behind(NamedTuple):
    """A state not taken: ``batches`` batches after the state ``anchor``."""

    anchor: Any
    batches: int


class _Source:
    """The wrapped iterator: its batches, the state after each, and restore.

    The state is taken after every batch while that costs at most
    ``STATE_SHARE`` of reading the batch. A pipestate pipeline whose state is
    dearer (a shuffle buffer of elements saves them) and that can be read again
    (no external state) takes it every ``every`` batches instead; the state
    after a batch in between is found, only when ``get_state()`` asks for it,
    by reading the pipeline again from the state before, in a scratch iterator.
    """

    def __init__(self, iterator: Any) -> None:
        self.iterator = iterator
        self.read: Callable[[], Any] = iterator.__next__
        self.replayable = False
        if isinstance(iterator, DatasetIterator):
            # The inner state never applies the external state policy, which
            # get_state() applies when the caller asks.
            self.snapshot: Callable[[], Any] = iterator._get_state
            self.restore: Callable[[State], None] = iterator.set_state
            self.replayable = _replayable(iterator.dataset)
        elif callable(getattr(iterator, "get_state", None)):
            self.snapshot = iterator.get_state
            self.restore = iterator.set_state
        else:
            self.snapshot = iterator.state_dict
            self.restore = iterator.load_state_dict
        self.every = 1  # batches between states taken
        self.anchor: Any = None  # the last state taken
        self.since = 0  # batches read since

    def start(self) -> Any:
        """Takes the state now (at the start, after a restore, an error or the end)."""
        self.anchor, self.since = None, 0
        self.anchor = self.snapshot()
        return self.anchor

    def after(self, seconds: float) -> Any:
        """The token of the state after a batch just read in ``seconds``.

        If the state can't be taken, the next state is taken anew by ``start()``.
        """
        self.since += 1
        if self.since < self.every and self.anchor is not None:
            return _Behind(self.anchor, self.since)
        clock = time.perf_counter
        began = clock()
        self.anchor = None
        token = self.anchor = self.snapshot()
        cost = clock() - began
        self.since = 0
        if self.replayable:
            wanted = math.ceil(cost / (STATE_SHARE * max(seconds, 1e-6)))
            self.every = max(1, min(wanted, _MAX_EVERY))
        return token

    def state(self, token: Any, policy: ExternalStatePolicy | str | None) -> State:
        """The public state for a token of ``after()`` (a copy: callers may change it)."""
        iterator = self.iterator
        if isinstance(iterator, DatasetIterator):
            iterator._check_external(policy)
            return iterator._wrap_state(_copy_state(token))
        if policy is not None:
            raise ValueError(
                f"{_OP}: external_state_policy applies to pipestate dataset iterators only; "
                f"{type(iterator).__name__} has its own rules: pass external_state_policy=None"
            )
        return _copy_state(token)  # type: ignore[no-any-return]

    def resolve(self, token: Any) -> Any:
        """The state a token stands for, read again from its anchor when it was not taken."""
        if not isinstance(token, _Behind):
            return token
        iterator = self.iterator
        scratch = iter(iterator.dataset)
        try:
            scratch.set_state(iterator._wrap_state(_copy_state(token.anchor)))
            for _ in range(token.batches):
                next(scratch)
            return scratch._get_state()
        finally:
            scratch.close()


def _replayable(dataset: Dataset) -> bool:
    """Whether reading ``dataset`` again from a state gives the same batches.

    Not with external state (a generator, a stateful function), nor where an
    op may deliver elements in the order they complete (``deterministic=False``).
    """
    if dataset._external_ops():
        return False
    pending = [dataset]
    while pending:
        ds = pending.pop()
        background = ds._background()
        if background is not None and background.reorder:
            return False
        if hasattr(ds, "_deterministic") and ds._out_of_order(ds._deterministic):
            return False
        pending.extend(ds._parents)
    return True


STATE_SHARE = 0.05
"""Take the state after every batch while that costs at most this share of reading it."""
_MAX_EVERY = 256
"""The most batches between states taken: ``get_state()`` reads at most this many again."""


class _Held(NamedTuple):
    """An element read whose batch was not made: its state or its transfer failed."""

    element: Any
    token: Any  # the wrapped iterator's state just after it (None: not taken yet)


class _Item(NamedTuple):
    """One read of the wrapped iterator: a batch on the devices, an error or the end."""

    batch: Any
    token: Any  # the wrapped iterator's state just after this read (None: could not be taken)
    error: BaseException | None
    end: bool
    held: _Held | None = None  # made into the next batch after ``error`` is raised


class _Placer:
    """Puts a NumPy pytree on devices with a sharding (or a pytree prefix of shardings)."""

    def __init__(self, sharding: Any) -> None:
        self.sharding = sharding
        self._prefix: tuple[list[Sharding], Any] | None = None
        if sharding is not None:
            leaves, treedef = jax.tree_util.tree_flatten(sharding, is_leaf=_is_sharding_leaf)
            self._prefix = ([_as_sharding(leaf) for leaf in leaves], treedef)
        self._treedef: Any = None  # the structure the plan below was made for
        self._targets: list[Sharding] | None = None  # one sharding per leaf
        self._spans: list[bool] = []  # per leaf: whether its sharding spans processes
        self._global = False

    def __call__(self, element: Any) -> Any:
        leaves, treedef = jax.tree_util.tree_flatten(element)
        if self._treedef is None or treedef != self._treedef:
            self._plan(element, treedef)
        if not all(map(_has_device_type, leaves)):
            self._refuse(element)
        for leaf in leaves:
            dtype = _wide_dtype(leaf)
            if dtype is not None and _narrowed(dtype):
                _check_narrowing(element)
                break
        targets = self._targets
        try:
            if targets is None:
                arrays = jax.device_put(leaves)
            elif not self._global:
                arrays = jax.device_put(leaves, targets)
            else:
                arrays = [
                    _assemble(target, leaf) if spans else jax.device_put(leaf, target)
                    for leaf, target, spans in zip(leaves, targets, self._spans)
                ]
        except Exception as err:
            self._explain(element, err)
            raise
        return jax.tree_util.tree_unflatten(treedef, arrays)

    def _plan(self, element: Any, treedef: Any) -> None:
        """One sharding per leaf of batches with structure ``treedef``."""
        if self._prefix is None:
            self._targets, self._spans, self._global = None, [], False
        else:
            shardings, prefix = self._prefix
            try:
                subtrees = prefix.flatten_up_to(element)
            except (ValueError, TypeError) as err:
                raise ValueError(
                    f"{_OP}: the sharding pytree {prefix} is not a prefix of the batch's "
                    f"structure {treedef}; give one sharding, or a pytree of shardings whose "
                    f"structure matches the batch down to where one sharding covers a "
                    f"subtree: {err}"
                ) from None
            targets: list[Sharding] = []
            for sharding, subtree in zip(shardings, subtrees):
                targets.extend([sharding] * len(jax.tree_util.tree_leaves(subtree)))
            self._targets = targets
            self._spans = [_spans_processes(target) for target in targets]
            self._global = any(self._spans)
        self._treedef = treedef

    def _refuse(self, element: Any) -> None:
        """Raises a TypeError naming the first leaf that can't go on a device."""
        for path, leaf in jax.tree_util.tree_flatten_with_path(element)[0]:
            if _has_device_type(leaf):
                continue
            dtype = getattr(leaf, "dtype", None)
            what = (
                f"a {type(leaf).__name__} {brief(leaf, 60)}"
                if dtype is None
                else f"an array of dtype {dtype}"
            )
            raise TypeError(
                f"{_OP}: leaf {_path(path)} is {what}, which can't be put on a device; "
                "turn it into a numeric array in the pipeline (e.g. encode strings to token "
                "ids with a map) or drop it before device_prefetch"
            )

    def _explain(self, element: Any, err: Exception) -> None:
        """Re-raises ``err`` naming the leaf it came from, with its shape and sharding."""
        flat = jax.tree_util.tree_flatten_with_path(element)[0]
        targets = self._targets
        for i, (path, leaf) in enumerate(flat):
            target = None if targets is None else targets[i]
            try:
                if target is not None and self._spans[i]:
                    _assemble(target, leaf)
                else:
                    jax.device_put(leaf, target)
            except Exception:
                shape = getattr(leaf, "shape", ())
                detail = (
                    f"{_OP}: could not put leaf {_path(path)} of shape {tuple(shape)} "
                    f"and dtype {getattr(leaf, 'dtype', type(leaf).__name__)} on "
                    f"{'the default device' if target is None else target}: "
                    f"{type(err).__name__}: {err}"
                )
                raise _retyped(err, detail) from err


def _retyped(err: Exception, detail: str) -> Exception:
    """``err``'s type with the message ``detail``, or ``err`` if that type can't be made so."""
    try:
        made = type(err)(detail)
    except Exception:
        return err
    return made if type(made) is type(err) else err


_X64 = "Enable 64-bit mode (jax.config.update('jax_enable_x64', True)) or "


def _check_narrowing(element: Any) -> None:
    """Raises OverflowError for a leaf JAX would store in 32 bits out of range.

    Without 64-bit mode, 64-bit integers (and Python ints) would wrap, and
    finite 64-bit floats (and Python floats) beyond float32's range would
    become infinite. One min / max pass over each such leaf.
    """
    for path, leaf in jax.tree_util.tree_flatten_with_path(element)[0]:
        dtype = _wide_dtype(leaf)
        if dtype is None or not _narrowed(dtype) or np.size(leaf) == 0:
            continue
        stored = np.dtype(jax.dtypes.canonicalize_dtype(dtype))
        python = not hasattr(leaf, "dtype")
        kind = f"a Python {type(leaf).__name__}" if python else f"dtype {dtype}"
        if dtype in _WIDE_INTEGERS:
            info = np.iinfo(stored)
            low, high = (leaf, leaf) if python else (np.min(leaf), np.max(leaf))
            if low < info.min or high > info.max:
                holds = f"the value {low}" if np.size(leaf) == 1 else f"values in [{low}, {high}]"
                raise OverflowError(
                    f"{_OP}: leaf {_path(path)} of {kind} holds {holds}, outside "
                    f"{stored}'s range; JAX without 64-bit mode stores it as {stored} and "
                    f"would wrap it. {_X64}map the values into range in the pipeline"
                )
            continue
        beyond = _beyond_range(np.asarray(leaf), stored)
        if beyond is not None:
            count, first = beyond
            raise OverflowError(
                f"{_OP}: leaf {_path(path)} of {kind} holds {count} finite "
                f"value{'s' if count > 1 else ''} beyond {stored}'s range (first: {first}); "
                f"JAX without 64-bit mode stores it as {stored}, where "
                f"{'they' if count > 1 else 'it'} would become infinite. "
                f"{_X64}scale the values into range in the pipeline"
            )


def _beyond_range(leaf: np.ndarray[Any, Any], stored: np.dtype[Any]) -> tuple[int, Any] | None:
    """How many finite values of a float leaf become infinite as ``stored``, and the first."""
    largest = float(np.finfo(stored).max)
    parts = (leaf.real, leaf.imag) if leaf.dtype.kind == "c" else (leaf,)
    # NaN is ignored by fmin / fmax; infinities already infinite are ruled out below.
    if all(
        np.fmax.reduce(part, axis=None) <= largest and np.fmin.reduce(part, axis=None) >= -largest
        for part in parts
    ):
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        bad = np.isfinite(leaf) & ~np.isfinite(leaf.astype(stored))
    count = int(np.count_nonzero(bad))
    if count == 0:  # values that round to the largest float, or infinities already
        return None
    return count, np.reshape(leaf, -1)[np.argmax(np.reshape(bad, -1))].item()


_PYTHON_NUMBERS = (int, float, complex)
_PYTHON_DTYPES = {
    int: np.dtype(np.int64),
    float: np.dtype(np.float64),
    complex: np.dtype(np.complex128),
}


def _wide_dtype(leaf: Any) -> np.dtype[Any] | None:
    """The 64-bit dtype of ``leaf`` (Python numbers' too), None for other leaves."""
    dtype = getattr(leaf, "dtype", None)
    if dtype is None:
        if isinstance(leaf, bool) or not isinstance(leaf, _PYTHON_NUMBERS):
            return None
        return next(d for t, d in _PYTHON_DTYPES.items() if isinstance(leaf, t))
    return dtype if dtype in _WIDE else None


def _narrowed(dtype: np.dtype[Any]) -> bool:
    """Whether JAX stores ``dtype`` narrower (64-bit numbers without 64-bit mode)."""
    return bool(jax.dtypes.canonicalize_dtype(dtype) != dtype)


def _has_device_type(leaf: Any) -> bool:
    """Whether JAX can hold ``leaf``: a number, or an array of numbers or bools."""
    dtype = getattr(leaf, "dtype", None)
    if dtype is None:
        return isinstance(leaf, (bool, int, float, complex))
    return getattr(dtype, "kind", "") not in _NO_DEVICE_KINDS


def _path(path: Any) -> str:
    """A pytree key path as text: ``batch['image']``, ``batch[0]``."""
    return "batch" + jax.tree_util.keystr(path)


def _spans_processes(sharding: Sharding) -> bool:
    """Whether ``sharding`` places data on devices of other processes too."""
    return not sharding.is_fully_addressable


def _assemble(sharding: Sharding, local: Any) -> jax.Array:
    """A global array from this process's part of it (a multi-process job)."""
    make = jax.make_array_from_process_local_data
    return make(sharding, np.asarray(local))  # type: ignore[no-untyped-call,no-any-return]


def _is_sharding_leaf(value: Any) -> bool:
    """Whether ``value`` ends a branch of a sharding pytree (``None`` too, to refuse it)."""
    return value is None or isinstance(value, (Sharding, jax.Device))


def _as_sharding(value: Any) -> Sharding:
    """A leaf of the ``sharding`` argument as a Sharding, or a TypeError naming it."""
    if isinstance(value, Sharding):
        return value
    if isinstance(value, jax.Device):
        return SingleDeviceSharding(value)
    raise TypeError(
        f"{_OP}: sharding must be None, a jax.Device, a jax.sharding.Sharding or a pytree of "
        f"them, got a leaf {brief(value, 80)} of type {type(value).__name__}; inside a pytree "
        "give every leaf a device or sharding (jax.devices()[0] for the default device)"
    )


class _Producer:
    """Reads the wrapped iterator and puts its batches on devices, inline or on a thread.

    Holds no reference to its :class:`DeviceIterator`, so an iterator dropped
    without ``close()`` is collected and its finalizer stops the thread.
    """

    def __init__(self, source: _Source, placer: _Placer, size: int, thread: bool) -> None:
        self.source = source
        self.placer = placer
        self.size = size
        self.thread = thread
        self.ready: deque[_Item] = deque()  # read and put on devices, oldest first
        # An element read whose state or transfer failed: the next batch, made from it
        # by the next produce() instead of reading the wrapped iterator.
        self.held: _Held | None = None
        self.cond = threading.Condition()
        self.worker: threading.Thread | None = None
        self.stopping = False

    def produce(self) -> _Item:
        """Reads one batch and starts its transfer (JAX returns before the copy is done).

        Raises nothing: an error becomes an item, raised by the ``next()`` whose
        batch it is. An element read whose state or transfer failed (JAX's error
        types aside) is held, and made into the batch after the error.
        """
        source = self.source
        held, self.held = self.held, None
        if held is None:
            began = time.perf_counter()
            try:
                element = source.read()
            except StopIteration:
                return _Item(None, _try(source.start), None, True)
            except BaseException as err:
                # The failing batch counts as consumed, as in the wrapped iterator.
                return _Item(None, _try(source.start), err, False)
            seconds = time.perf_counter() - began
            token = None
        else:
            element, token = held
            seconds = 0.0
        if token is None:
            try:
                # After a failure the wrapped iterator is still just after the element.
                token = source.after(seconds) if held is None else source.start()
            except BaseException as err:
                return _Item(None, None, err, False, _Held(element, None))
        try:
            batch = self.placer(element)
        except Exception as err:
            return _Item(None, token, err, False)
        except BaseException as err:  # KeyboardInterrupt: the batch is made again
            return _Item(None, None, err, False, _Held(element, token))
        return _Item(batch, token, None, False)

    def take(self) -> _Item:
        """The next item, reading ahead so that ``size`` batches stay in flight after it.

        A ``KeyboardInterrupt`` (or other exception that is no ``Exception``)
        in the caller's thread is raised at once; what was read is kept.
        """
        ready = self.ready
        if not self.thread:
            while len(ready) <= self.size and not (ready and _stops(ready[-1])):
                item = self.produce()
                if _interrupts(item):
                    self.held = item.held
                    raise _error(item)
                ready.append(item)
            return self._taken(ready.popleft())
        with self.cond:
            idle = not ready and self.worker is None
        if idle:
            # Nothing read ahead (the start, a restore, after an error): this batch is
            # read here, then the thread reads ahead. A Loader starts its worker
            # processes from this thread, by fork while it is the only Python thread.
            item = self.produce()
            if not _stops(item):
                with self.cond:
                    self._start()
            return self._taken(item)
        with self.cond:
            while not ready:
                if self.worker is None:
                    self._start()
                self.cond.wait()
            item = ready.popleft()
            self.cond.notify_all()
            return self._taken(item)

    def _taken(self, item: _Item) -> _Item:
        """``item``, once what it holds is kept for the next batch (reading stopped at it)."""
        if item.held is not None:
            self.held = item.held
        return item

    def drop(self) -> None:
        """Drops what was read ahead (the thread stopped)."""
        self.ready.clear()
        self.held = None

    def _start(self) -> None:
        """Starts the thread (under the condition's lock)."""
        self.worker = threading.Thread(
            target=self._run, name="pipestate-device-prefetch", daemon=True
        )
        self.worker.start()

    def _run(self) -> None:
        ready, cond = self.ready, self.cond
        failure: BaseException | None = None
        try:
            while True:
                with cond:
                    while len(ready) >= self.size and not self.stopping:
                        cond.wait()
                    if self.stopping:
                        return
                item = self.produce()
                with cond:
                    # Even when stopping: the wrapped iterator has moved past this batch.
                    ready.append(item)
                    if _stops(item):
                        self.worker = None
                    cond.notify_all()
                    if _stops(item):
                        return
        except BaseException as err:  # never left without waking the caller
            failure = err
        finally:
            with cond:
                if failure is not None:
                    ready.append(_Item(None, None, failure, False))
                if self.worker is threading.current_thread():
                    self.worker = None
                cond.notify_all()

    def halt(self, timeout: float | None = None) -> None:
        """Stops the thread (keeping what it read) and waits for it.

        Args:
          timeout: the most seconds to wait for the read in progress; past it
            the thread is left to stop after that read (the producer can't
            be used again then: for the finalizer).
        """
        with self.cond:
            worker = self.worker
            if worker is None:
                return
            self.stopping = True
            self.cond.notify_all()
        if worker is not threading.current_thread():
            worker.join(timeout)
            if worker.is_alive():
                return
        with self.cond:
            self.stopping = False
            self.worker = None


_FINAL_WAIT = 1.0
"""Seconds an iterator dropped without ``close()`` (or open at exit) waits for its thread."""


def _stops(item: _Item) -> bool:
    """Whether reading ahead stops after ``item`` (the end, or an error to raise first)."""
    return item.end or item.error is not None


def _interrupts(item: _Item) -> bool:
    """Whether ``item`` holds a ``KeyboardInterrupt`` or the like, raised at once."""
    return item.error is not None and not isinstance(item.error, Exception)


def _error(item: _Item) -> BaseException:
    """The error ``item`` holds."""
    assert item.error is not None
    return item.error


def _try(snapshot: Callable[[], Any]) -> Any:
    """The wrapped iterator's state, or None when it can't be taken (after a failure)."""
    try:
        return snapshot()
    except Exception:
        return None


class DeviceIterator(Iterator[Any]):
    """Batches of a pipeline put on devices ahead of the caller; created by :func:`device_prefetch`.

    ``__next__`` returns the next batch as a pytree of ``jax.Array`` placed with
    the sharding, while the following ``size`` batches are already read and on
    their way to the devices. ``get_state()`` is the wrapped iterator's state
    just after the last batch returned; ``set_state()`` drops the batches read
    ahead and restores the wrapped iterator, so the next batch is the one after
    the last batch consumed when the state was saved: none is lost or repeated.
    ``state_dict()`` / ``load_state_dict()`` are aliases, so a
    ``pipestate.Checkpoint`` saves and restores it like a dataset iterator
    (per rank in a distributed checkpoint, re-sharded as the wrapped iterator is).
    """

    _pipestate_per_rank = True
    # make_saveable_from_iterator saves it through get_state / set_state.
    _pipestate_wraps_iterator = True
    # Checkpoints restore the state as NumPy values without asking for the current one.
    _state_dict_is_numpy = True

    def __init__(self, iterator: Any, sharding: Any, size: int, thread: bool) -> None:
        self._source = _Source(iterator)
        self._producer = _Producer(self._source, _Placer(sharding), size, thread)
        # Dropped without close(), or open at exit: the thread stops after its read in
        # progress; a read that blocks is not waited for past _FINAL_WAIT.
        self._finalizer = weakref.finalize(self, self._producer.halt, _FINAL_WAIT)
        self._token = self._source.start()  # the state after the last batch returned
        self._ended = False
        self._closed = False
        self._pipestate_reshards = getattr(iterator, "_pipestate_reshards", False) is True
        if not isinstance(iterator, DatasetIterator):
            self._state_dict_is_numpy = getattr(iterator, "_state_dict_is_numpy", False) is True

    @property
    def iterator(self) -> Any:
        """The wrapped iterator; reading it directly skips the batches read ahead."""
        return self._source.iterator

    @property
    def sharding(self) -> Any:
        """The sharding (or pytree of shardings) batches are placed with; None: default device."""
        return self._producer.placer.sharding

    @property
    def size(self) -> int:
        """Batches read and put on devices ahead of the one returned."""
        return self._producer.size

    def __iter__(self) -> DeviceIterator:
        return self

    def __next__(self) -> Any:
        if self._closed:
            self._raise_closed()
        if self._ended:
            raise StopIteration
        item = self._producer.take()
        if item.token is not None:
            self._token = item.token
        if item.error is not None:
            raise item.error
        if item.end:
            self._ended = True
            raise StopIteration
        return item.batch

    def get_state(self, *, external_state_policy: ExternalStatePolicy | str | None = None) -> State:
        """The wrapped iterator's state just after the last batch returned.

        Batches read ahead are not part of it: restoring it reads them again.

        Args:
          external_state_policy: for a pipestate dataset iterator, as its
            ``get_state()``; must be ``None`` for other iterators.

        Returns:
          The wrapped iterator's ``get_state()`` (or ``state_dict()``) as it
          was after that batch: for a pipestate pipeline, its usual state dict,
          which restores into ``iter(dataset)`` as well as into a
          ``DeviceIterator``.

        Raises:
          ExternalStateError: as the wrapped iterator's ``get_state()``.
          RuntimeError: the iterator is closed.
        """
        self._check_open()
        source = self._source
        self._token = token = source.resolve(self._token)
        return source.state(token, external_state_policy)

    def set_state(self, state: State) -> None:
        """Restores a state from ``get_state()``, dropping the batches read ahead.

        If the wrapped iterator refuses the state, nothing changes: the batches
        read ahead are kept and the next batch is the one it would have been.

        Raises:
          StateMismatchError: as the wrapped iterator's ``set_state()``.
          RuntimeError: the iterator is closed.
        """
        self._check_open()
        producer = self._producer
        producer.halt()
        self._source.restore(state)
        producer.drop()
        self._token = self._source.start()
        self._ended = False

    def state_dict(self) -> State:
        """Alias of :meth:`get_state` (PyTorch's Stateful protocol)."""
        return self.get_state()

    def load_state_dict(self, state_dict: State) -> None:
        """Alias of :meth:`set_state` (PyTorch's Stateful protocol)."""
        self.set_state(state_dict)

    def close(self) -> None:
        """Stops the thread, drops the batches read ahead and closes the wrapped iterator.

        Further use raises ``RuntimeError``; closing again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        self._producer.halt()
        self._producer.drop()
        close = getattr(self._source.iterator, "close", None)
        if callable(close):
            close()

    def _raise_closed(self) -> None:
        raise RuntimeError(f"{self!r} is closed; wrap a new iterator with device_prefetch")

    def _check_open(self) -> None:
        if self._closed:
            self._raise_closed()

    def __enter__(self) -> DeviceIterator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        producer = self._producer
        return (
            f"DeviceIterator({self._source.iterator!r}, sharding={producer.placer.sharding!r}, "
            f"size={producer.size}, thread={producer.thread})"
        )


def _has_state(iterable: Any) -> bool:
    """Whether ``iterable`` is an iterator whose position can be saved and restored."""

    def has(*names: str) -> bool:
        return all(callable(getattr(iterable, name, None)) for name in names)

    return has("__next__") and (
        has("get_state", "set_state") or has("state_dict", "load_state_dict")
    )


def device_prefetch(
    iterable: Any, sharding: Any = None, *, size: int = 2, thread: bool = True
) -> DeviceIterator:
    """Puts a pipeline's batches on devices, ``size`` batches ahead of the caller, resumably.

    Each batch (a NumPy pytree: an array, or tuples / lists / dicts of arrays)
    becomes a pytree of ``jax.Array`` placed with ``sharding``. Transfers are
    started ahead of time through JAX's asynchronous dispatch, and with
    ``thread=True`` the pipeline itself runs on a background thread, so the
    next batches are read while the training step runs. The iterator's state
    is the pipeline's state after the last batch returned: batches read ahead
    are never saved, and after a restore the next batch is exactly the one
    after the last consumed (see ``docs/jax.md#feeding-devices``).

    In a multi-process job each process passes its own part of the global
    batch; leaves whose sharding spans several processes are assembled with
    ``jax.make_array_from_process_local_data`` into one global array.

    Args:
      iterable: a ``pipestate.data.Dataset`` or ``Loader`` (iterated here),
        a pipestate dataset or ``Loader`` iterator, or any iterator with
        ``get_state()`` / ``set_state()`` (or ``state_dict()`` /
        ``load_state_dict()``). The returned iterator owns it: reading it
        directly would skip batches, and ``close()`` closes it.
      sharding: ``None`` (JAX's default device), a ``jax.Device``, a
        ``jax.sharding.Sharding`` (e.g. ``NamedSharding(mesh, P("batch"))``),
        or a pytree of those that is a prefix of the batch's structure, as
        ``jax.device_put`` accepts.
      size: batches to keep read and on their way to the devices beyond the
        one returned; at least 1.
      thread: read the pipeline on a background thread (``True``) or in the
        caller's thread when it asks for a batch (``False``).

    Returns:
      A :class:`DeviceIterator`.

    Raises:
      TypeError: ``iterable`` has no state to save, or ``sharding``, ``size``
        or ``thread`` has the wrong type. A batch leaf that can't go on a
        device (strings, objects) raises a TypeError naming it from the
        ``next()`` that would have returned the batch.
      ValueError: ``size`` < 1 or ``iterable`` is a closed iterator.

    Example:
      >>> import jax, numpy as np, pipestate as ps
      >>> from pipestate.jax import device_prefetch
      >>> ds = ps.Dataset.from_tensor_slices(np.arange(8, dtype=np.float32)).batch(4)
      >>> batches = device_prefetch(ds, jax.devices()[0], size=2)
      >>> first = next(batches)
      >>> state = batches.get_state()  # after the first batch, whatever was read ahead
      >>> second = next(batches)
      >>> batches.set_state(state)
      >>> bool((next(batches) == second).all())
      True
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise TypeError(f"{_OP}: size must be an int >= 1, got {type(size).__name__} {size!r}")
    if size < 1:
        raise ValueError(f"{_OP}: size must be >= 1 (batches read ahead), got size={int(size)}")
    if not isinstance(thread, (bool, np.bool_)):
        raise TypeError(f"{_OP}: thread must be a bool, got {type(thread).__name__} {thread!r}")
    _Placer(sharding)  # checks the sharding's type before anything is read
    if isinstance(iterable, DeviceIterator):
        raise TypeError(
            f"{_OP}: iterable is already a DeviceIterator ({iterable!r}); wrap its pipeline once"
        )
    if isinstance(iterable, (Dataset, Loader)):
        iterable = iter(iterable)
    elif isinstance(iterable, DatasetIterator):
        if iterable._closed:
            raise ValueError(f"{_OP}: iterable {iterable!r} is closed; pass an open iterator")
    elif not _has_state(iterable):
        raise TypeError(
            f"{_OP}: iterable must be a pipestate Dataset or an iterator with get_state() / "
            f"set_state() (or state_dict() / load_state_dict()), got {type(iterable).__name__} "
            f"{brief(iterable, 80)}, whose position can't be saved; build the input with "
            "pipestate.Dataset (e.g. Dataset.from_generator) or pass iter(dataset)"
        )
    return DeviceIterator(iterable, sharding, int(size), bool(thread))
