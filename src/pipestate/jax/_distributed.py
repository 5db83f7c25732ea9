"""Distributed checkpoints of a JAX job: the key-value store of ``jax.distributed``.

After ``jax.distributed.initialize(...)`` every process of the job holds a
client of one coordination service (run by process 0). Its key-value store is
all a distributed save needs (see :mod:`pipestate.checkpoint._distributed`):
:class:`JaxCoordinator` wraps it, and ``current_coordinator()`` picks it up by
itself when the job has more than one process.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

from pipestate.checkpoint._distributed import Coordinator
from pipestate.errors import DistributedSaveError

__all__ = ["JaxCoordinator"]

# The key each process increments once per client: how many times a process of this
# rank joined the coordination service (1 for a fresh job).
_ATTEMPT_KEY = "pipestate/jax/attempt/{rank}"

_lock = threading.Lock()


class _Shared:
    """What every coordinator over one client shares: the process's attempt number on the
    service, the number of its next save, and the keys it published (a save's keys are
    those of its round: two coordinators counting rounds apart would read each other's)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.attempt: int | None = None
        self.rounds = itertools.count()
        self.published: list[str] = []


# The state shared over this process's client (a process has one jax.distributed client at
# a time: kept with it, its id the key, and dropped when another one appears).
_shared: dict[int, _Shared] = {}


def _shared_for(client: Any) -> _Shared:
    with _lock:
        found = _shared.get(id(client))
        if found is None or found.client is not client:
            found = _Shared(client)
            _shared.clear()
            _shared[id(client)] = found
        return found


def _state() -> Any:
    """``jax.distributed``'s state (the client, this process's id, the job's size)."""
    from jax._src import distributed

    return distributed.global_state


class JaxCoordinator(Coordinator):
    """The key-value store of ``jax.distributed``, with this process's rank.

    ``rank`` is the ``process_id`` the process passed to (or that was
    detected by) ``jax.distributed.initialize`` — what ``jax.process_index()``
    returns — and ``world_size`` the number of processes. Saves made on every
    process find it by themselves (``current_coordinator()``); create one to
    pass it to ``use_coordinator`` explicitly.

    The store keeps keys for the life of the coordination service, so a job
    whose processes restart while the service lives on (a recoverable
    service) must not read an earlier attempt's messages: each process counts,
    in the store, how many times a process of its rank joined the service, and
    its saves put that count in their keys (``namespace()``). A fresh job has
    1 on every process.

    Raises:
        RuntimeError: When ``jax.distributed`` is not initialized, or the
            installed jax's client has no non-blocking read.

    Example:
        On process 0 of a job of two (process 1 passes ``process_id=1``)::

            jax.distributed.initialize("10.0.0.1:1234", num_processes=2, process_id=0)
            coordinator = JaxCoordinator()  # rank 0, world_size 2
            with use_coordinator(coordinator):  # what a save finds by itself
                manager.save()
    """

    def __init__(self) -> None:
        state = _state()
        client = state.client
        if client is None:
            raise RuntimeError(
                "jax.distributed is not initialized: call jax.distributed.initialize(...) on "
                "every process of the job before creating a JaxCoordinator"
            )
        if not hasattr(client, "key_value_try_get_bytes"):
            import jax

            raise RuntimeError(
                f"the jax.distributed client of jax {jax.__version__} has no "
                "key_value_try_get_bytes, which a distributed save polls with: upgrade jax"
            )
        self._client = client
        self.rank = int(state.process_id)
        self.world_size = int(state.num_processes)
        self._shared = _shared_for(client)
        # Saves number their rounds per process, whichever coordinator makes them (the one
        # current_coordinator() finds, or one made for use_coordinator).
        self.__dict__["_pipestate_rounds"] = self._shared.rounds
        self.__dict__["_pipestate_published"] = self._shared.published

    def __repr__(self) -> str:
        return f"JaxCoordinator(rank={self.rank}, world_size={self.world_size})"

    def set(self, key: str, value: bytes) -> None:
        try:
            # A rank may report a failure under a key it published already.
            self._client.key_value_set_bytes(key, value, allow_overwrite=True)
        except Exception as err:
            raise _store_error("write", key, err) from err

    def get(self, key: str) -> bytes | None:
        try:
            value = self._client.key_value_try_get_bytes(key)
        except Exception as err:
            if _not_found(err):
                return None
            raise _store_error("read", key, err) from err
        return bytes(value)

    def delete(self, key: str) -> None:
        try:
            self._client.key_value_delete(key)
        except Exception as err:
            raise _store_error("delete", key, err) from err

    def namespace(self) -> str:
        """``jax<n>``: ``n`` counts how many times a process of this rank joined the service.

        Counted once per process and client: every coordinator over the same
        client has the same namespace.
        """
        shared = self._shared
        with _lock:
            if shared.attempt is None:
                shared.attempt = self._attempt()
            attempt = shared.attempt
        return f"jax{attempt}"

    def _attempt(self) -> int:
        increment = getattr(self._client, "key_value_increment", None)
        if increment is None:  # an older jax: keys of an earlier attempt can't be told apart
            return 0
        key = _ATTEMPT_KEY.format(rank=self.rank)
        try:
            return int(increment(key, 1))
        except Exception as err:
            raise _store_error("increment", key, err) from err


def _not_found(err: Exception) -> bool:
    """Whether the store says the key is not there (``NOT_FOUND``), not that it failed."""
    return str(err).lstrip().startswith("NOT_FOUND")


def _store_error(operation: str, key: str, err: Exception) -> DistributedSaveError:
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return DistributedSaveError(
        f"the key-value store of jax.distributed failed to {operation} {key!r} ({first_line}): "
        "the job's coordination service, which process 0 runs, is unreachable or failed; "
        "a process that died makes jax.distributed stop the job after its heartbeat timeout"
    )
