"""What runs in a loader worker process: start-up, seeding, computing chunks, errors.

Kept apart from ``loader`` (the consumer's side), so a fork server imports
only this module (and what it needs) for its workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import pickle
import random
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from pipestate.data import _shm
from pipestate.data._engine import read_range
from pipestate.data.dataset import Dataset

__all__ = [
    "WorkerInfo",
    "compute",
    "decode_error",
    "encode_error",
    "get_worker_info",
    "worker_main",
]


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


def worker_main(conn: Any, payload: Any, worker: int, num_workers: int, seed: int) -> None:
    """A worker process: computes the index ranges it is sent, until told to stop."""
    global _worker_info
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the consumer handles Ctrl-C and stops us
    try:
        content = pickle.loads(payload) if isinstance(payload, bytes) else payload
        dataset, collate_fn, worker_init_fn, info_dataset = content
        _worker_info = WorkerInfo(worker, num_workers, seed, info_dataset)
        seed_worker(_worker_info)
        if worker_init_fn is not None:
            worker_init_fn(worker)
    except Exception as err:
        with contextlib.suppress(BrokenPipeError, OSError):
            conn.send(encode_error(err))
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
        elements, errors = compute(source, epoch, start, stop, collate_fn)
        elapsed = time.perf_counter() - began
        failures = [(index, encode_error(error)) for index, error in errors]
        fatal = None
        try:
            layout, created = _shm.pack(elements, name, collate_fn is not None)
        except Exception as err:
            layout, created = _shm.pack([], name)
            fatal = encode_error(err)
        try:
            conn.send((layout, created, elapsed, failures, fatal))
        except (BrokenPipeError, OSError):
            return  # the consumer is gone; the block is its (or its resource tracker's) to remove


def seed_worker(info: WorkerInfo) -> None:
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


def compute(
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


def encode_error(error: BaseException) -> tuple[bytes | None, str, str]:
    """An exception as (pickle if it round-trips, description, traceback text)."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    data: bytes | None
    try:
        data = pickle.dumps(error)
        pickle.loads(data)  # what the consumer will do: check it works
    except Exception:
        data = None
    return data, f"{type(error).__name__}: {error}", text


def decode_error(failure: tuple[bytes | None, str, str]) -> BaseException:
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
