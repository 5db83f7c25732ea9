"""``DataLoader``: torchdata's ``StatefulDataLoader`` API over pipestate's exact, O(1) positions.

The batches a loader yields are computed from a pipestate index pipeline,
``range(len(dataset))``, ``global_shuffle`` for ``shuffle=True`` and
``batch``, so the position in an epoch is one integer, and the shuffle is a
function of ``(seed, epoch)``. Workers are a :class:`pipestate.data.Loader`'s
processes; each computes whole batches (``collate_fn([dataset[i] for i in
indices])``) and sends their tensors through shared memory.
"""

from __future__ import annotations

import copy
import hashlib
import math
import multiprocessing
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    default_collate,
    default_convert,
)
from torch.utils.data._utils import worker as _torch_worker

from pipestate._validate import brief, check_bool, check_function, check_int
from pipestate.data._launch import check_context
from pipestate.data.dataset import Dataset
from pipestate.data.loader import Loader, LoaderIterator, can_pin_memory
from pipestate.errors import StateMismatchError

__all__ = ["DataLoader", "DataLoaderIterator"]

STATE_FORMAT = 1
_FORMAT = "pipestate_dataloader"
_EPOCH = "epoch"
_SEED = "seed"
_POSITION = "position"
_FINISHED = "finished"
_SAMPLER = "sampler"
_STATE_KEYS = (_FORMAT, _EPOCH, _SEED, _POSITION, _FINISHED, _SAMPLER)
_SAMPLER_STATE = "state"
_SAMPLER_CHECK = "crc32"
_SAMPLER_KEYS = (_SAMPLER_STATE, _SAMPLER_CHECK)


class _Fetch:
    """In a worker: one element of the index pipeline to a collated batch (picklable)."""

    def __init__(
        self,
        dataset: Any,
        collate_fn: Callable[[Any], Any],
        batched: bool,
        table: tuple[np.ndarray, np.ndarray | None] | None = None,
    ) -> None:
        self.dataset = dataset
        self.collate_fn = collate_fn
        self.batched = batched
        self.table = table  # a sampler's indices (flat, batch offsets) for one epoch

    def __call__(self, element: Any) -> Any:
        dataset = self.dataset
        if self.table is not None:
            flat, offsets = self.table
            position = int(element)
            if offsets is None:
                element = flat[position]
            else:
                element = flat[offsets[position] : offsets[position + 1]]
        if self.batched:
            samples = [dataset[index] for index in element.tolist()]
        else:
            samples = dataset[int(element)]
        # In a worker, torch's default_collate stacks into torch shared memory when
        # torch.utils.data.get_worker_info() answers: a second copy here (the batch goes
        # through pipestate's blocks), and an error for tensors that require grad.
        info = _torch_worker._worker_info
        _torch_worker._worker_info = None
        try:
            return self.collate_fn(samples)
        finally:
            _torch_worker._worker_info = info


class DataLoader:
    """A drop-in for torchdata's ``StatefulDataLoader`` whose state is a few integers.

    Same constructor, iteration, ``state_dict()`` / ``load_state_dict()``, and
    ``set_epoch()``. The state saved anywhere in an epoch restores in O(1)
    under any ``num_workers``; every ``iter()`` starts the next epoch, with a
    new shuffle that depends only on the seed and the epoch. Workers never
    import the main script (see ``docs/torch.md``).

    Example:
      >>> loader = DataLoader(dataset, batch_size=32, shuffle=True, num_workers=2)  # doctest: +SKIP
      >>> for step, batch in enumerate(loader):
      ...     if step == 100:
      ...         torch.save(loader.state_dict(), "loader.pt")
      >>> resumed = DataLoader(dataset, batch_size=32, shuffle=True, num_workers=3)
      >>> resumed.load_state_dict(torch.load("loader.pt"))   # continues at batch 101

    Args:
      dataset: a map-style dataset (``__len__`` and ``__getitem__`` taking an
        int: a ``torch.utils.data.Dataset``, a list, a random-access
        ``pipestate.data.Dataset``). An ``IterableDataset`` is refused.
      batch_size: samples per batch; ``None`` turns batching off.
      shuffle: a new order each epoch, from ``generator`` (or torch's global
        generator, drawn once) and the epoch number.
      sampler: the indices of an epoch. ``SequentialSampler`` and
        ``RandomSampler`` (without replacement) become pipestate's own
        positions; any other sampler is read once per epoch into a list of
        indices (see ``docs/torch.md`` for what its state can restore).
      batch_sampler: the batches of indices of an epoch (exclusive with
        ``batch_size``, ``shuffle``, ``sampler`` and ``drop_last``).
      num_workers: worker processes; ``0`` loads in this process.
      collate_fn: turns a list of samples into a batch;
        ``torch.utils.data.default_collate`` (``default_convert`` without
        batching) by default. It runs in the workers.
      pin_memory: pin the batches' tensors (when an accelerator is available).
      drop_last: drop the last, incomplete batch.
      timeout: seconds to wait for a batch from a worker; ``0``: no limit.
      worker_init_fn: called as ``worker_init_fn(worker_id)`` in each worker.
      multiprocessing_context: ``'fork'``, ``'forkserver'``, ``'spawn'``, a
        ``multiprocessing`` context, or ``None``: the process's default start
        method, as in torch (``'fork'`` on Linux before Python 3.14).
      generator: the ``torch.Generator`` the shuffle seed is drawn from.
      prefetch_factor: work each worker may compute ahead, in chunks of
        batches (about 20 ms of work each); ``None``: 2.
      persistent_workers: keep the workers across epochs and restores.
      pin_memory_device: accepted for compatibility; pinning uses the
        default accelerator.
      in_order: accepted; batches are always delivered in order.
      snapshot_every_n_steps: accepted for compatibility; every state is exact.

    Raises:
      TypeError: an argument of the wrong kind (an ``IterableDataset``, a
        non-callable ``collate_fn``, ...).
      ValueError: a value out of range, or arguments that exclude each other.
    """

    # Each rank's loader has its own position: saved per rank, restored on the same world size.
    _pipestate_per_rank = True

    def __init__(
        self,
        dataset: Any,
        batch_size: int | None = 1,
        shuffle: bool | None = None,
        sampler: Iterable[Any] | None = None,
        batch_sampler: Iterable[Any] | None = None,
        num_workers: int = 0,
        collate_fn: Callable[[Any], Any] | None = None,
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn: Callable[[int], Any] | None = None,
        multiprocessing_context: Any = None,
        generator: torch.Generator | None = None,
        *,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        pin_memory_device: str = "",
        in_order: bool = True,
        snapshot_every_n_steps: int | None = 1,
    ) -> None:
        _check_dataset(dataset)
        num_workers = check_int("num_workers", num_workers, minimum=0, op="DataLoader")
        if batch_size is not None:
            batch_size = check_int("batch_size", batch_size, minimum=1, op="DataLoader")
        for name, flag in (
            ("pin_memory", pin_memory),
            ("drop_last", drop_last),
            ("persistent_workers", persistent_workers),
            ("in_order", in_order),
        ):
            check_bool(name, flag, op="DataLoader")
        if shuffle is not None:
            check_bool("shuffle", shuffle, op="DataLoader")
        wait = _check_timeout(timeout)
        _check_callables_and_generator(collate_fn, worker_init_fn, generator, pin_memory_device)
        if snapshot_every_n_steps is not None:
            check_int("snapshot_every_n_steps", snapshot_every_n_steps, minimum=1, op="DataLoader")
        prefetch_factor, multiprocessing_context = _check_workers(
            num_workers, prefetch_factor, multiprocessing_context, persistent_workers
        )
        batch_size, drop_last = _check_sampling(
            batch_size, shuffle, sampler, batch_sampler, drop_last
        )

        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = bool(drop_last)
        self.num_workers = num_workers
        self.pin_memory = bool(pin_memory)
        self._pin = self.pin_memory and can_pin_memory(stacklevel=3)
        self.timeout = timeout
        self._wait = wait
        self.worker_init_fn = worker_init_fn
        self.generator = generator
        self.prefetch_factor = prefetch_factor
        self.persistent_workers = bool(persistent_workers)
        self.in_order = bool(in_order)
        self.multiprocessing_context = multiprocessing_context
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        batched = batch_sampler is not None or batch_size is not None
        if collate_fn is None:
            collate_fn = default_collate if batched else default_convert
        self.collate_fn = collate_fn
        self._batched = batched

        # The plan: pipestate's own positions (range, shuffle, batch), or a sampler's
        # indices read once per epoch.
        self._shuffle = bool(shuffle)
        self._custom: Any = None  # the sampler or batch sampler read per epoch
        self._seed_generator = generator
        plan = _plan(sampler, batch_sampler, dataset)
        if plan is None:
            self._custom = batch_sampler if batch_sampler is not None else sampler
        else:
            shuffled, plan_generator, plan_batch, plan_drop = plan
            self._shuffle = self._shuffle or shuffled
            if plan_generator is not None:
                self._seed_generator = plan_generator
            if batch_sampler is not None:
                self.batch_size, self.drop_last = plan_batch, plan_drop
                self._batched = True
        self._seed: int | None = None
        self._next_epoch = 0
        self._resume: dict[str, Any] | None = None  # a loaded state, used by the next iter()
        self._pinned = False  # set_epoch() named the loaded state's epoch
        self._current: _Epoch | None = None  # the epoch the last iter() reads
        self._loader: Loader | None = None  # pipestate's own positions: one for all epochs

    # ------------------------------------------------------------- public
    def __iter__(self) -> DataLoaderIterator:
        if self._current is not None:
            self._current.retire()
        resume, self._resume = self._resume, None
        pinned, self._pinned = self._pinned, False
        if resume is not None and resume[_FINISHED] and not pinned:
            # As StatefulDataLoader: a state taken at the end of an epoch resumes with the next.
            self._next_epoch = resume[_EPOCH] + 1
            resume = None
        epoch = self._next_epoch if resume is None else resume[_EPOCH]
        self._next_epoch = epoch + 1
        self._current = None
        self._current = _Epoch(self, epoch, resume)
        return DataLoaderIterator(self, self._current)

    def __len__(self) -> int:
        if self._custom is not None:
            if self.batch_sampler is not None:
                return len(self.batch_sampler)  # type: ignore[arg-type]
            count = len(self._custom)
        else:
            count = len(self.dataset)
        if self.batch_size is None:
            return count
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Makes the next ``iter()`` read epoch ``epoch`` (its shuffle is the epoch's).

        Forwarded to the sampler's ``set_epoch`` too, if it has one. After
        ``load_state_dict()``, setting the saved epoch continues it (with no
        more batches if the state was taken at its end); the epoch after a
        finished one starts it; any other epoch drops the loaded position,
        with a warning.
        """
        epoch = check_int("epoch", epoch, minimum=0, op="DataLoader")
        for sampler in (self.sampler, self.batch_sampler):
            if sampler is not None and hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
        resume = self._resume
        if resume is not None:
            if resume[_EPOCH] == epoch:
                # The saved epoch: continue it (a state taken at its end gives no more batches).
                self._pinned = True
            else:
                self._resume = None
                if not (resume[_FINISHED] and resume[_EPOCH] + 1 == epoch):
                    warnings.warn(
                        f"DataLoader.set_epoch({epoch}) after load_state_dict() of a state in "
                        f"epoch {resume[_EPOCH]}: the loaded position is dropped and epoch "
                        f"{epoch} starts at its beginning",
                        UserWarning,
                        stacklevel=2,
                    )
        self._next_epoch = epoch

    def state_dict(self) -> dict[str, Any]:
        """The position: of the current iterator, or where the next ``iter()`` starts.

        Returns:
          ``{"pipestate_dataloader": 1, "epoch": ..., "seed": ..., "position":
          ..., "finished": ..., "sampler": ...}``: plain ints, bools, None and
          pipestate's iterator state (a small dict); ``torch.save`` and
          ``pipestate.Checkpoint`` both take it.
        """
        if self._resume is not None:
            return copy.deepcopy(self._resume)
        if self._current is not None:
            return self._current.state_dict()
        return self._initial_state(self._next_epoch)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Makes the next ``iter()`` continue where ``state_dict`` was taken.

        The state restores whatever ``num_workers``, ``prefetch_factor`` or
        start method this loader has; the dataset length, batch size,
        ``drop_last`` and ``shuffle`` must be the saved loader's.

        Raises:
          StateMismatchError: the state is not a ``pipestate.torch.DataLoader``
            state or was saved by a loader reading other batches.
        """
        state = _read_state(state_dict)
        if self._current is not None:
            self._current.retire()
            self._current = None
        # A state at the start of an epoch has no sampler check to hold.
        started = state[_POSITION] is not None or state[_FINISHED]
        if (self._custom is None) != (state[_SAMPLER] is None) and (
            self._custom is None or started
        ):
            raise StateMismatchError(
                "DataLoader.load_state_dict: the state was saved by a loader "
                f"{'without' if state[_SAMPLER] is None else 'with'} a custom sampler, but this "
                f"one has {'one' if self._custom is not None else 'none'}"
            )
        if self._shuffle and state[_SEED] is None:
            raise StateMismatchError(
                "DataLoader.load_state_dict: the state was saved by a loader without shuffle, "
                "but this one shuffles"
            )
        if not self._shuffle and state[_SEED] is not None:
            raise StateMismatchError(
                "DataLoader.load_state_dict: the state was saved by a shuffling loader, but "
                "this one does not shuffle"
            )
        self._seed = state[_SEED]
        self._resume = state
        self._next_epoch = state[_EPOCH]

    def close(self) -> None:
        """Stops the workers (persistent ones included)."""
        if self._current is not None:
            self._current.retire()
            self._current = None
        if self._loader is not None:
            self._loader.close()

    def __repr__(self) -> str:
        return (
            f"DataLoader({brief(self.dataset)}, batch_size={self.batch_size}, "
            f"shuffle={self._shuffle}, drop_last={self.drop_last}, "
            f"num_workers={self.num_workers}, persistent_workers={self.persistent_workers})"
        )

    # ----------------------------------------------------------- internal
    def _base_seed(self) -> int | None:
        """The shuffle's seed, drawn once from ``generator`` (or torch's global generator)."""
        if not self._shuffle:
            return None
        if self._seed is None:
            draw = torch.empty((), dtype=torch.int64)
            self._seed = int(draw.random_(generator=self._seed_generator).item())
        return self._seed

    def _initial_state(self, epoch: int) -> dict[str, Any]:
        return {
            _FORMAT: STATE_FORMAT,
            _EPOCH: epoch,
            _SEED: self._base_seed(),
            _POSITION: None,
            _FINISHED: False,
            _SAMPLER: None,
        }

    def _make_loader(self, fetch: _Fetch, positions: Dataset) -> Loader:
        prefetch = self.prefetch_factor if self.prefetch_factor is not None else 2
        loader = Loader(
            positions,
            self.num_workers,
            prefetch_factor=prefetch,
            # As torch: the process's default start method (fork on Linux before Python
            # 3.14), whatever threads run; pipestate.data.Loader's own default avoids fork
            # once threads run.
            multiprocessing_context=self.multiprocessing_context
            or multiprocessing.get_start_method(),
            timeout=self._wait,
            collate_fn=fetch,
            pin_memory=self._pin,
            persistent_workers=self.persistent_workers,
            worker_init_fn=self.worker_init_fn,
        )
        loader._info_dataset = self.dataset
        return loader

    def _own_loader(self) -> Loader:
        """The loader of pipestate's own positions, the same for every epoch."""
        if self._loader is None:
            positions = Dataset.range(len(self.dataset))
            if self._shuffle:
                positions = positions.global_shuffle(seed=None)
            if self.batch_size is not None:
                positions = positions.batch(self.batch_size, drop_remainder=self.drop_last)
            fetch = _Fetch(self.dataset, self.collate_fn, self._batched)
            self._loader = self._make_loader(fetch, positions)
        return self._loader

    def _sampler_loader(self, epoch: int, saved: dict[str, Any] | None) -> tuple[Loader, Any, int]:
        """A loader over the indices a custom sampler gives for ``epoch``; its state and check."""
        sampler = self._custom
        if saved is not None and saved[_SAMPLER_STATE] is not None:
            if not hasattr(sampler, "load_state_dict"):
                raise StateMismatchError(
                    "DataLoader.load_state_dict: the state holds the sampler's state_dict(), "
                    f"but {type(sampler).__name__} has no load_state_dict()"
                )
            sampler.load_state_dict(copy.deepcopy(saved[_SAMPLER_STATE]))
        sampler_state = (
            copy.deepcopy(sampler.state_dict()) if hasattr(sampler, "state_dict") else None
        )
        flat, offsets = _read_sampler(
            sampler, self.batch_size, self.drop_last, self.batch_sampler is not None
        )
        check = zlib.crc32(flat.tobytes())
        if offsets is not None:
            check = zlib.crc32(offsets.tobytes(), check)
        if saved is not None and saved[_SAMPLER_CHECK] != check:
            raise StateMismatchError(
                f"DataLoader.load_state_dict: {type(sampler).__name__} gives other indices for "
                f"epoch {epoch} than when the state was saved (crc32 {check} != "
                f"{saved[_SAMPLER_CHECK]}), so the saved position would point at other samples. "
                "If its order depends on set_epoch() (DistributedSampler), call "
                "loader.set_epoch(saved epoch) before iter(); otherwise give the sampler a "
                "state_dict() / load_state_dict(), or make its order a function of its seed"
            )
        count = len(flat) if offsets is None else len(offsets) - 1
        fetch = _Fetch(self.dataset, self.collate_fn, self._batched, (flat, offsets))
        return self._make_loader(fetch, Dataset.range(count)), sampler_state, check


class _Epoch:
    """The reading of one epoch: its pipestate iterator, epoch number and sampler check.

    The loader (for ``state_dict()``) and the iterator ``iter()`` returned
    both hold it; it holds neither, so dropping a loader stops its workers at
    once, with no reference cycle left for the garbage collector.
    """

    def __init__(self, owner: DataLoader, epoch: int, resume: dict[str, Any] | None) -> None:
        self.epoch = epoch
        self.finished = False
        self.sampler: dict[str, Any] | None = None
        self.inner: LoaderIterator | None = None
        self.length = len(owner)
        self.seed = owner._base_seed()
        self.persistent = owner.persistent_workers
        if resume is not None and resume[_FINISHED]:
            self.finished = True  # set_epoch() asked for an epoch the state had finished
            self.sampler = copy.deepcopy(resume[_SAMPLER])
            return
        if owner._custom is None:
            loader = owner._own_loader()
        else:
            saved = None if resume is None else resume[_SAMPLER]
            loader, sampler_state, check = owner._sampler_loader(epoch, saved)
            self.sampler = {_SAMPLER_STATE: sampler_state, _SAMPLER_CHECK: check}
        seed = self.seed
        loader._worker_seed = _mix(seed if seed is not None else _fresh_seed(), epoch, 1)
        entropy = None if seed is None else _mix(seed, epoch, 0)
        self.inner = loader._iterator(entropy)
        self.length = len(loader)
        if resume is not None and resume[_POSITION] is not None:
            try:
                self.inner.set_state(resume[_POSITION])
            except StateMismatchError as err:
                raise StateMismatchError(
                    f"DataLoader.load_state_dict: the saved position does not fit this loader "
                    f"({owner!r}): {err}"
                ) from err

    def next(self) -> Any:
        inner = self.inner
        if inner is None:
            raise StopIteration
        try:
            return next(inner)
        except StopIteration:
            self.finished = True
            if not self.persistent:
                inner.close()
            raise

    def state_dict(self) -> dict[str, Any]:
        position = None
        if self.inner is not None and not self.inner._closed:
            position = self.inner.get_state()
        return {
            _FORMAT: STATE_FORMAT,
            _EPOCH: self.epoch,
            _SEED: self.seed,
            _POSITION: position,
            _FINISHED: self.finished,
            _SAMPLER: copy.deepcopy(self.sampler),
        }

    def retire(self) -> None:
        """A newer epoch or a loaded state replaces this one: its workers stop (or go back)."""
        inner, self.inner = self.inner, None
        if inner is not None:
            inner.close()


class DataLoaderIterator(Iterator[Any]):
    """One epoch of a :class:`DataLoader`; ``iter(loader)`` makes it.

    Its ``state_dict()`` is the loader's (the position after the last batch
    it returned).
    """

    # Each rank's loader has its own position: saved per rank, restored on the same world size.
    _pipestate_per_rank = True

    def __init__(self, owner: DataLoader, reading: _Epoch) -> None:
        self._owner = owner
        self._reading = reading

    def __iter__(self) -> DataLoaderIterator:
        return self

    def __next__(self) -> Any:
        return self._reading.next()

    def __len__(self) -> int:
        return self._reading.length

    def state_dict(self) -> dict[str, Any]:
        """The position after the last batch returned (see :meth:`DataLoader.state_dict`)."""
        return self._reading.state_dict()

    def __repr__(self) -> str:
        reading = self._reading
        return f"DataLoaderIterator(epoch={reading.epoch}, finished={reading.finished})"


# ------------------------------------------------------------- helpers
def _check_dataset(dataset: Any) -> None:
    if isinstance(dataset, IterableDataset):
        raise TypeError(
            f"DataLoader: {type(dataset).__name__} is an IterableDataset; pipestate.torch."
            "DataLoader reads map-style datasets by index (that is what makes its state a "
            "position). Give it a dataset with __len__ and __getitem__, or express the stream "
            "as a pipestate.data pipeline"
        )
    if isinstance(dataset, Dataset):
        if not dataset._random_access or dataset._cardinality() < 0:
            raise TypeError(
                f"DataLoader: a pipestate Dataset must be random access and finite to be read "
                f"by index, got {dataset!r}; iterate it directly or use pipestate.data.Loader"
            )
        return
    if not (hasattr(dataset, "__getitem__") and isinstance(dataset, Sized)):
        raise TypeError(
            f"DataLoader: dataset must be map-style (__len__ and __getitem__), got "
            f"{type(dataset).__name__} {brief(dataset)}"
        )


def _check_callables_and_generator(
    collate_fn: Any, worker_init_fn: Any, generator: Any, pin_memory_device: Any
) -> None:
    """The function, generator and device arguments, each of its kind or ``None``."""
    check_function("collate_fn", collate_fn, "DataLoader", allow_none=True)
    check_function("worker_init_fn", worker_init_fn, "DataLoader", allow_none=True)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"DataLoader: generator must be a torch.Generator or None, got "
            f"{type(generator).__name__} {brief(generator)}"
        )
    if not isinstance(pin_memory_device, str):
        raise TypeError(
            f"DataLoader: pin_memory_device must be a str, got {brief(pin_memory_device)}"
        )


def _check_workers(
    num_workers: int, prefetch_factor: Any, multiprocessing_context: Any, persistent_workers: bool
) -> tuple[int | None, str | None]:
    """``prefetch_factor`` and the start method, checked against ``num_workers``."""
    if prefetch_factor is not None:
        prefetch_factor = check_int("prefetch_factor", prefetch_factor, minimum=1, op="DataLoader")
        if num_workers == 0:
            raise ValueError(
                "DataLoader: prefetch_factor can only be given with num_workers > 0 "
                f"(got prefetch_factor={prefetch_factor}, num_workers=0); leave it None"
            )
    if multiprocessing_context is not None:
        if num_workers == 0:
            raise ValueError(
                "DataLoader: multiprocessing_context can only be given with num_workers > 0 "
                f"(got {multiprocessing_context!r} with num_workers=0)"
            )
        multiprocessing_context = check_context(multiprocessing_context)
    if persistent_workers and num_workers == 0:
        raise ValueError(
            "DataLoader: persistent_workers=True needs num_workers > 0; there are no "
            "workers to keep with num_workers=0"
        )
    return prefetch_factor, multiprocessing_context


def _check_sampling(
    batch_size: int | None, shuffle: Any, sampler: Any, batch_sampler: Any, drop_last: bool
) -> tuple[int | None, bool]:
    """``(batch_size, drop_last)`` after the sampler arguments are checked against each other."""
    if sampler is not None and shuffle:
        raise ValueError(
            "DataLoader: sampler is mutually exclusive with shuffle=True: the sampler "
            "chooses the order (use RandomSampler for a shuffled one)"
        )
    if batch_sampler is not None:
        if batch_size != 1 or shuffle or sampler is not None or drop_last:
            raise ValueError(
                "DataLoader: batch_sampler is mutually exclusive with batch_size, shuffle, "
                "sampler and drop_last (got batch_size="
                f"{batch_size}, shuffle={shuffle}, sampler={brief(sampler)}, "
                f"drop_last={drop_last}); the batch sampler decides all of them"
            )
        batch_size, drop_last = None, False
    elif batch_size is None and drop_last:
        raise ValueError(
            "DataLoader: drop_last=True needs a batch_size (got batch_size=None, "
            "which turns batching off)"
        )
    for name, value in (("sampler", sampler), ("batch_sampler", batch_sampler)):
        if value is not None and not hasattr(value, "__iter__"):
            raise TypeError(
                f"DataLoader: {name} must be an iterable of indices, got "
                f"{type(value).__name__} {brief(value)}"
            )
    return batch_size, drop_last


def _check_timeout(value: Any) -> float | None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"DataLoader: timeout must be a number of seconds, got {brief(value)}")
    if not value >= 0 or math.isinf(value):
        raise ValueError(f"DataLoader: timeout must be a finite number >= 0, got {value!r}")
    return None if value == 0 else float(value)


def _plan(
    sampler: Any, batch_sampler: Any, dataset: Any
) -> tuple[bool, torch.Generator | None, int | None, bool] | None:
    """``(shuffle, generator, batch_size, drop_last)`` when pipestate's positions can replace
    the samplers (torch's sequential and random samplers over the whole dataset), else ``None``.
    """
    batch, drop = None, False
    if batch_sampler is not None:
        if type(batch_sampler) is not BatchSampler:
            return None
        sampler, batch, drop = (
            batch_sampler.sampler,
            batch_sampler.batch_size,
            bool(batch_sampler.drop_last),
        )
    if sampler is None:
        return False, None, batch, drop
    kind = type(sampler)
    if kind is SequentialSampler and len(sampler) == len(dataset):
        return False, None, batch, drop
    if (
        kind is RandomSampler
        and not sampler.replacement
        and sampler._num_samples is None
        and len(sampler.data_source) == len(dataset)
    ):
        return True, sampler.generator, batch, drop
    return None


def _read_sampler(
    sampler: Any, batch_size: int | None, drop_last: bool, batches: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """One epoch of a sampler: the indices, and the offsets of the batches (``None``: unbatched)."""
    if batches:
        groups = [list(batch) for batch in sampler]
        sizes = [len(group) for group in groups]
        flat = np.fromiter((int(i) for group in groups for i in group), np.int64)
        return flat, np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
    flat = np.fromiter((int(i) for i in sampler), np.int64)
    if batch_size is None:
        return flat, None
    count = len(flat) // batch_size if drop_last else math.ceil(len(flat) / batch_size)
    offsets = np.minimum(np.arange(count + 1, dtype=np.int64) * batch_size, len(flat))
    return flat, offsets


def _mix(seed: int, epoch: int, purpose: int) -> int:
    """A 63-bit seed for ``purpose`` in ``epoch`` (0: the shuffle, 1: the workers)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{purpose}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _fresh_seed() -> int:
    return int(torch.empty((), dtype=torch.int64).random_().item())


def _read_state(state: Any) -> dict[str, Any]:
    """A DataLoader state, checked key by key."""
    where = "DataLoader.load_state_dict"
    if not isinstance(state, dict) or state.get(_FORMAT) != STATE_FORMAT:
        hint = ""
        if isinstance(state, dict) and "_sampler_iter_state" in state:
            hint = (
                " (it looks like a torchdata StatefulDataLoader state: positions don't carry "
                "over between the two; restart the epoch)"
            )
        raise StateMismatchError(
            f"{where}: not a pipestate.torch.DataLoader state of format {STATE_FORMAT}: "
            f"{brief(state)}{hint}"
        )
    missing = [key for key in _STATE_KEYS if key not in state]
    extra = [key for key in state if key not in _STATE_KEYS]
    if missing or extra:
        raise StateMismatchError(f"{where}: state keys missing {missing} or unknown {extra}")
    epoch, seed = state[_EPOCH], state[_SEED]
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise StateMismatchError(f"{where}: epoch must be an int >= 0, got {brief(epoch)}")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0
    ):
        raise StateMismatchError(f"{where}: seed must be an int >= 0 or None, got {brief(seed)}")
    if not isinstance(state[_FINISHED], (bool, np.bool_)):
        raise StateMismatchError(f"{where}: finished must be a bool, got {state[_FINISHED]!r}")
    position = state[_POSITION]
    if position is not None and not isinstance(position, dict):
        raise StateMismatchError(f"{where}: position must be a dict or None, got {brief(position)}")
    sampler = state[_SAMPLER]
    if sampler is not None and (
        not isinstance(sampler, dict) or sorted(sampler) != sorted(_SAMPLER_KEYS)
    ):
        raise StateMismatchError(
            f"{where}: sampler must be None or a dict with keys {list(_SAMPLER_KEYS)}, got "
            f"{brief(sampler)}"
        )
    out = copy.deepcopy(dict(state))
    out[_EPOCH] = int(epoch)
    out[_SEED] = None if seed is None else int(seed)
    out[_FINISHED] = bool(state[_FINISHED])
    return out
