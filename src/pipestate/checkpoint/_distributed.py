"""One checkpoint from many processes: every rank writes its own shards, rank 0 commits.

A save called on every rank of a job (``torch.distributed`` or
``jax.distributed`` initialized, or torchrun's store reachable) runs in rounds
over the job's key-value store:

1. **plan** — every rank serializes its objects (rank 0 the replicated ones,
   every rank its per-rank ones) and publishes how many shards it will write,
   the path it saves to and a digest of its object graph;
2. **go** — rank 0 waits for every plan, prepares the directory (removes what
   interrupted saves left, picks the name to write under) and tells every
   rank where its shards go;
3. **written** — every rank writes its shards and publishes where each array
   landed and the values of its per-rank objects;
4. **done** — rank 0 waits for every rank, writes the index that covers all
   of them (the commit), records the state file, and publishes the outcome;
   the other ranks wait for it and return.

A rank that does not arrive within the timeout, or reports an error, makes
the save fail on every rank with :class:`~pipestate.errors.DistributedSaveError`
naming it; nothing is committed and the previous checkpoint stays the latest.
See ``docs/distributed.md``.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import itertools
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipestate.errors import DistributedSaveError

__all__ = [
    "DEFAULT_TIMEOUT",
    "Coordinator",
    "Placement",
    "SaveRound",
    "StoreCoordinator",
    "current_coordinator",
    "graph_digest",
    "is_per_rank",
    "placement",
    "use_coordinator",
]

DEFAULT_TIMEOUT = 600.0
"""Seconds a distributed save waits for the slowest rank (``CheckpointOptions.timeout``)."""

_POLL_FIRST = 0.0005
_POLL_MAX = 0.05


@dataclass(frozen=True)
class Placement:
    """Which process of how many is saving or restoring."""

    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


class Coordinator(abc.ABC):
    """A job-wide key-value store with this process's rank: all a distributed save needs.

    Implementations wrap ``torch.distributed``'s store (``StoreCoordinator``),
    ``jax.distributed``'s (``pipestate.jax.JaxCoordinator``) or another
    framework's; ``set`` publishes bytes under a key, ``get``
    returns them, or ``None`` while no process has set the key.
    """

    rank: int
    world_size: int

    @abc.abstractmethod
    def set(self, key: str, value: bytes) -> None:
        """Publish ``value`` under ``key`` for every process."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes | None:
        """The value under ``key``, or ``None`` if no process has set it yet (never blocks long)."""

    def delete(self, key: str) -> None:  # noqa: B027 - optional: stores that can't delete keep keys
        """Forget ``key`` (a store that can't is left as it is)."""

    def next_round(self) -> int:
        """The number of this process's next save with this coordinator (0, 1, ...)."""
        counter = self.__dict__.setdefault("_pipestate_rounds", itertools.count())
        return int(next(counter))

    def namespace(self) -> str:
        """What makes this job's keys distinct from an earlier attempt's on the same store."""
        return os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")

    @property
    def placement(self) -> Placement:
        return Placement(self.rank, self.world_size)


class StoreCoordinator(Coordinator):
    """A ``torch.distributed`` store (``TCPStore``, ``FileStore``, ...) and this process's rank."""

    def __init__(self, store: Any, rank: int, world_size: int) -> None:
        self._store = store
        self.rank = rank
        self.world_size = world_size

    def __repr__(self) -> str:
        return f"StoreCoordinator(rank={self.rank}, world_size={self.world_size})"

    def set(self, key: str, value: bytes) -> None:
        self._store.set(key, value)

    def get(self, key: str) -> bytes | None:
        if not self._store.check([key]):
            return None
        value = self._store.get(key)
        return bytes(value)

    def delete(self, key: str) -> None:
        # A store without delete_key keeps the (small) key.
        with contextlib.suppress(RuntimeError, NotImplementedError):
            self._store.delete_key(key)


class _Override(threading.local):
    def __init__(self) -> None:
        self.stack: list[Coordinator | None] = []


_override = _Override()
_agent_store: dict[tuple[str, int, int, int], StoreCoordinator] = {}
# The coordinator of torch's default process group (kept with the group: its id is the key).
_group_stores: dict[int, tuple[Any, StoreCoordinator]] = {}
# The coordinator of jax.distributed's client (kept with the client: its id is the key).
_jax_clients: dict[int, tuple[Any, Coordinator]] = {}
_lock = threading.Lock()


class use_coordinator:  # noqa: N801 - used as a function and a context manager
    """Make ``coordinator`` the one checkpoints use in this thread (``None``: save alone).

    Other frameworks' stores and tests plug in here; without it, a save finds
    ``torch.distributed``'s or ``jax.distributed``'s by itself. The
    setting holds for saves and restores started in the calling thread until
    the ``with`` block ends (or for good, called as a function).

    Example:
        >>> with use_coordinator(None):  # save from this rank alone
        ...     pass
    """

    def __init__(self, coordinator: Coordinator | None) -> None:
        if coordinator is not None and not isinstance(coordinator, Coordinator):
            raise TypeError(
                "use_coordinator expects a pipestate.checkpoint.Coordinator or None, got "
                f"{type(coordinator).__name__}"
            )
        _override.stack.append(coordinator)
        self._coordinator = coordinator

    def __repr__(self) -> str:
        return f"use_coordinator({self._coordinator!r})"

    def __enter__(self) -> Coordinator | None:
        return self._coordinator

    def __exit__(self, *exc: object) -> None:
        stack = _override.stack
        if stack and stack[-1] is self._coordinator:
            stack.pop()


def current_coordinator() -> Coordinator | None:
    """The coordinator of the job this process belongs to, or ``None`` when it saves alone.

    That is the one set with :class:`use_coordinator`, else the store of
    ``torch.distributed``'s default process group when it is initialized with
    more than one rank, else the key-value store of ``jax.distributed`` when
    it is initialized with more than one process
    (:class:`pipestate.jax.JaxCoordinator`), else torchrun's agent store when
    the process runs under torchrun with more than one rank. A process that
    initialized both torch.distributed and jax.distributed saves with torch's
    ranks. Neither torch nor jax is imported here: a program that has not
    imported them saves alone.

    Raises:
        DistributedSaveError: Under a launcher that says the job has several
            ranks, when no store can be reached.
    """
    if _override.stack:
        return _override.stack[-1]
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        world_size = int(dist.get_world_size())
        if world_size <= 1:
            return None
        from torch.distributed import distributed_c10d

        group = distributed_c10d._get_default_group()
        with _lock:
            found = _group_stores.get(id(group))
            if found is None or found[0] is not group:
                store = distributed_c10d._get_default_store()
                found = (group, StoreCoordinator(store, int(dist.get_rank()), world_size))
                _group_stores.clear()  # a process has one default group at a time
                _group_stores[id(group)] = found
        return found[1]
    jax_job = _jax_coordinator()
    if jax_job is not None:
        return jax_job
    return _torchrun_store()


def _jax_coordinator() -> Coordinator | None:
    """The coordinator of ``jax.distributed``'s job of several processes (never imports jax)."""
    if "jax" not in sys.modules:
        return None
    # jax.distributed's state, read without side effects (jax.process_count() would start
    # the backends).
    state = getattr(sys.modules.get("jax._src.distributed"), "global_state", None)
    client = getattr(state, "client", None)
    if client is None or int(getattr(state, "num_processes", 1) or 1) <= 1:
        return None
    with _lock:
        found = _jax_clients.get(id(client))
        if found is None or found[0] is not client:
            from pipestate.jax._distributed import JaxCoordinator

            found = (client, JaxCoordinator())
            _jax_clients.clear()  # a process has one jax.distributed client at a time
            _jax_clients[id(client)] = found
    return found[1]


def _torchrun_store() -> StoreCoordinator | None:
    """torchrun's agent store, for a job that runs under torchrun without a process group."""
    env = os.environ
    world_size = int(env.get("WORLD_SIZE", "1") or 1)
    if world_size <= 1 or "TORCHELASTIC_RUN_ID" not in env:
        return None
    rank = int(env.get("RANK", "0"))
    if env.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() != "true":
        raise DistributedSaveError(
            f"this process is rank {rank} of {world_size} under torchrun, but torch.distributed "
            "is not initialized and torchrun's store is not shared with workers: call "
            "torch.distributed.init_process_group() before saving, so that the ranks save one "
            "checkpoint together"
        )
    host, port = env["MASTER_ADDR"], int(env["MASTER_PORT"])
    key = (host, port, rank, world_size)
    with _lock:
        found = _agent_store.get(key)
        if found is None:
            import datetime

            from torch._C._distributed_c10d import TCPStore

            store = TCPStore(host, port, world_size, False, timeout=datetime.timedelta(seconds=60))
            found = _agent_store[key] = StoreCoordinator(store, rank, world_size)
    return found


def placement() -> Placement:
    """This process's rank and the job's world size (``Placement()`` when it runs alone)."""
    coordinator = current_coordinator()
    return coordinator.placement if coordinator is not None else Placement()


def graph_digest(nodes: Sequence[dict[str, Any]]) -> str:
    """A digest of a graph's shape (each object's kind and children), the same on every rank."""
    shape = [(node["kind"], sorted(node["children"].items())) for node in nodes]
    return hashlib.sha256(json.dumps(shape).encode("utf-8")).hexdigest()[:16]


PER_RANK = "_pipestate_per_rank"
"""Attribute (class or instance) that marks an object as per-rank in a distributed checkpoint."""
RESHARDS = "_pipestate_reshards"
"""Attribute that marks a per-rank object that restores from another rank's state.

Data iterators set it: their own re-sharding rule (the elastic rule) adapts
rank 0's state to any rank of any world size, or refuses it with an error.
"""

# Types whose objects hold one process's state, for objects that can't carry the marker.
_PER_RANK_MODULES = ("torchdata.", "torch.utils.data.")


def _marker(obj: object, name: str) -> bool | None:
    for candidate in (obj, getattr(obj, "wrapped", None)):
        if candidate is None:
            continue
        flag = getattr(candidate, name, None)
        if isinstance(flag, bool):
            return flag
    return None


def is_per_rank(obj: object) -> bool:
    """Whether each rank keeps its own value of ``obj`` (iterators, random generators).

    The others are replicated: every rank holds the same value, and rank 0's is saved.
    """
    flag = _marker(obj, PER_RANK)
    if flag is not None:
        return flag
    wrapped = getattr(obj, "wrapped", None)
    module = type(wrapped).__module__ + "." if wrapped is not None else ""
    return module.startswith(_PER_RANK_MODULES)


def reshards(obj: object) -> bool:
    """Whether a per-rank ``obj`` restores from rank 0's state on another world size."""
    return _marker(obj, RESHARDS) is True


class SaveRound:
    """One distributed save seen from one rank: the messages of its four steps.

    Every rank makes its rounds in the same order (one per save), so round
    ``n`` of every rank is the same save.
    """

    def __init__(self, coordinator: Coordinator, what: str, timeout: float) -> None:
        self.coordinator = coordinator
        self.rank = coordinator.rank
        self.world_size = coordinator.world_size
        self.what = what
        self.timeout = timeout
        self._prefix = f"pipestate/save/{coordinator.namespace()}/{coordinator.next_round()}"
        # The keys this process published in this round and earlier ones, kept until every
        # rank has read them (see forget_earlier): shared by the coordinator's rounds.
        self._published: list[str] = coordinator.__dict__.setdefault("_pipestate_published", [])
        # The step whose message the other ranks wait for now (rank 0's "go", then "done").
        self.leader_step = "go"
        # Whether rank 0 wrote the index: the ranks' shards then belong to a checkpoint
        # (that a failure afterwards may still leave committed), and are never removed.
        self.committed = False

    def __repr__(self) -> str:
        return f"SaveRound({self.what!r}, rank={self.rank}, world_size={self.world_size})"

    @property
    def leader(self) -> bool:
        return self.rank == 0

    # -- messages ------------------------------------------------------------------
    def publish(self, step: str, message: dict[str, Any]) -> None:
        key = f"{self._prefix}/{step}/{self.rank}"
        self.coordinator.set(key, json.dumps(message).encode("utf-8"))
        self._published.append(key)

    def gather(self, step: str, ranks: Sequence[int] | None = None) -> dict[int, dict[str, Any]]:
        """The messages of ``step`` from ``ranks`` (default: every rank), by rank.

        Raises:
            DistributedSaveError: When a rank reports an error, or ranks are
                still missing after the timeout.
        """
        wanted = list(range(self.world_size)) if ranks is None else list(ranks)
        found: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + self.timeout
        delay = _POLL_FIRST
        while True:
            for rank in wanted:
                if rank in found:
                    continue
                raw = self.coordinator.get(f"{self._prefix}/{step}/{rank}")
                if raw is None:
                    continue
                message = _decode(raw, rank, step)
                if "error" in message:
                    raise self.error(
                        f"rank {rank} failed: {message['error']}", failed_ranks=(rank,)
                    )
                found[rank] = message
            if len(found) == len(wanted):
                return found
            if time.monotonic() > deadline:
                missing = tuple(r for r in wanted if r not in found)
                arrived = ", ".join(map(str, sorted({*found, self.rank}))) or "none"
                raise self.error(
                    f"rank{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} did "
                    f"not arrive within {self.timeout:g} s (arrived: {arrived}; every rank "
                    "must make the save, or pass CheckpointOptions(distributed=False) to save "
                    "from one rank alone)",
                    missing_ranks=missing,
                )
            time.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)

    def wait_leader(self, step: str) -> dict[str, Any]:
        """Rank 0's message of ``step`` (the other ranks wait for it).

        Rank 0 gives up on missing ranks after the timeout and says so; a rank
        waits longer than that for it, so that its error names the missing ranks.

        Raises:
            DistributedSaveError: Rank 0's error, or rank 0 missing.
        """
        deadline = time.monotonic() + self.timeout * 1.5 + 5.0
        delay = _POLL_FIRST
        key = f"{self._prefix}/{step}/0"
        while True:
            raw = self.coordinator.get(key)
            if raw is not None:
                message = _decode(raw, 0, step)
                if "error" in message:
                    self.committed = message.get("committed") is True
                    raise DistributedSaveError(
                        str(message["error"]),
                        missing_ranks=tuple(message.get("missing_ranks", ())),
                        failed_ranks=tuple(message.get("failed_ranks", ())),
                    )
                return message
            if time.monotonic() > deadline:
                raise self.error(
                    f"rank 0 did not arrive within {self.timeout * 1.5 + 5.0:g} s",
                    missing_ranks=(0,),
                )
            time.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)

    def fail(self, step: str, err: BaseException) -> None:
        """Tell the others that this rank failed at ``step`` (best effort)."""
        message: dict[str, Any] = {"error": _describe(err), "committed": self.committed}
        if isinstance(err, DistributedSaveError):
            message["missing_ranks"] = list(err.missing_ranks)
            message["failed_ranks"] = list(err.failed_ranks)
        # The store may be gone; the error being reported is the one that matters.
        with contextlib.suppress(Exception):
            self.publish(step, message)

    def error(
        self,
        reason: str,
        *,
        missing_ranks: tuple[int, ...] = (),
        failed_ranks: tuple[int, ...] = (),
    ) -> DistributedSaveError:
        return DistributedSaveError(
            f"distributed save of checkpoint {self.what!r} failed on rank {self.rank} of "
            f"{self.world_size}: {reason}. Nothing was committed; the previous checkpoint stays "
            "the latest",
            missing_ranks=missing_ranks,
            failed_ranks=failed_ranks,
        )

    def forget_earlier(self) -> None:
        """Delete the keys this process published so far; call once this round's ``go`` is out.

        Rank 0 publishes ``go`` only after reading every rank's plan, which each rank
        publishes only after the round before has ended for it: by then every message
        of the earlier rounds (a failure's too) has been read, and so have the plans of
        this one. The store keeps one round's keys, however many saves a job makes.
        """
        keys = list(self._published)
        self._published.clear()
        for key in keys:
            with contextlib.suppress(Exception):  # a key left behind is harmless
                self.coordinator.delete(key)


def _decode(raw: bytes, rank: int, step: str) -> dict[str, Any]:
    try:
        message = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        message = None
    if not isinstance(message, dict):
        raise DistributedSaveError(
            f"rank {rank}'s {step!r} message of a distributed save is not pipestate's: another "
            "program uses the same store keys"
        )
    return message


def _describe(err: BaseException) -> str:
    text = str(err)
    if isinstance(err, DistributedSaveError):
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def lead(round_: SaveRound, body: Callable[[], str]) -> str:
    """Run rank 0's part of a save, then tell the other ranks how it ended (``done``).

    If ``body`` fails, the other ranks get its error at the step they wait
    for, and raise it too.
    """
    try:
        result = body()
    except BaseException as err:
        round_.fail(round_.leader_step, err)
        raise
    round_.publish("done", {"path": result})
    return result
