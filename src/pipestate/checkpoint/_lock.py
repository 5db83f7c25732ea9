"""The writer lock of a checkpoint directory: one process saves under a state file at a time.

Two processes saving into one directory would delete each other's
checkpoints and overwrite each other's state file. A manager therefore takes
a lock before its first save, on ``<directory>/.<state file>.lock``:

- On local files, the operating system's own lock (``flock``): the kernel
  releases it when the holder exits or is killed, so a lock is never stale.
- Elsewhere (object stores, ``memory://``), a lease: a small JSON file
  created with the filesystem's exclusive create (``If-None-Match: *`` on
  S3), naming its owner (host, pid, a random id) and renewed by a heartbeat
  thread. A lease whose heartbeat is older than its time to live, or whose
  owner is a dead process on this host, is stale and may be taken over. A
  holder that finds its lease taken over stops saving.

Managers of one process share the lock of a directory: the lock keeps other
processes out, not other managers of the same program.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from pipestate.checkpoint._storage import Storage
from pipestate.errors import CheckpointLockedError, NotFoundError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: leases everywhere
    fcntl = None  # type: ignore[assignment]

__all__ = ["LEASE_TTL_S", "WriterLock", "lock_filename"]

#: Seconds after its last heartbeat that a lease on an object store counts as abandoned.
LEASE_TTL_S = 60.0

_HOST = socket.gethostname()
_OWNER = uuid.uuid4().hex  # this process; renewed in a forked child (see _after_fork)
_REGISTRY_LOCK = threading.Lock()
_HELD: dict[tuple[str, str], _Held] = {}


def _after_fork() -> None:
    """A forked child holds none of its parent's locks (their leases name the parent)."""
    global _OWNER, _REGISTRY_LOCK
    _OWNER = uuid.uuid4().hex
    _REGISTRY_LOCK = threading.Lock()
    for held in _HELD.values():
        if held.fd is not None:
            with contextlib.suppress(OSError):
                os.close(held.fd)
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _key(storage: Storage, fs_path: str) -> tuple[str, str]:
    """One key per lock file, however many filesystem objects reach it."""
    if storage.local:
        return "local", os.path.realpath(fs_path)
    protocol = storage.fs.protocol
    return (protocol if isinstance(protocol, str) else protocol[0]), fs_path


def lock_filename(state_filename: str) -> str:
    """The lock file's name for a state file's name."""
    return f".{state_filename}.lock"


def _owner_record(ttl: float) -> dict[str, Any]:
    return {
        "host": _HOST,
        "pid": os.getpid(),
        "owner": _OWNER,
        "heartbeat": time.time(),
        "ttl": ttl,
    }


def _describe(record: dict[str, Any] | None) -> str:
    if not record:
        return "an unknown process"
    age = time.time() - float(record.get("heartbeat", 0.0))
    return (
        f"process {record.get('pid')} on host {record.get('host')!r} "
        f"(owner {record.get('owner')}, heartbeat {age:.0f} s ago)"
    )


def _parse(data: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("heartbeat"), (int, float)):
        return None
    return record


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, owned by someone else
    return True


def _stale(record: dict[str, Any] | None) -> bool:
    """Whether a lease may be taken over: unreadable, expired, or of a dead process here."""
    if record is None:
        return True
    ttl = float(record.get("ttl", LEASE_TTL_S))
    if time.time() - float(record["heartbeat"]) > ttl:
        return True
    return record.get("host") == _HOST and not _pid_alive(record.get("pid"))


@dataclass
class _Held:
    """One lock this process holds, shared by its managers."""

    storage: Storage
    path: str
    display: str
    ttl: float
    users: int = 0
    fd: int | None = None  # the flock'ed file, locally
    lost: str | None = None  # why the lease is no longer ours
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class WriterLock:
    """A manager's handle on the writer lock of its directory; released by :meth:`release`."""

    def __init__(self, storage: Storage, fs_path: str, display: str, ttl: float = LEASE_TTL_S):
        self._key = _key(storage, fs_path)
        self._storage = storage
        self._path = fs_path
        self._display = display
        self._ttl = ttl
        self._held: _Held | None = None

    def __repr__(self) -> str:
        return f"WriterLock({self._display!r}, held={self._held is not None})"

    @property
    def held(self) -> bool:
        """Whether this handle holds the lock."""
        return self._held is not None

    @property
    def lost(self) -> str | None:
        """Why the lock was lost (a lease taken over or not renewed), or ``None``."""
        return self._held.lost if self._held is not None else None

    def acquire(self) -> None:
        """Take the lock (or share this process's hold on it).

        Raises:
            CheckpointLockedError: When another process holds it.
        """
        if self._held is not None:
            return
        with _REGISTRY_LOCK:
            held = _HELD.get(self._key)
            if held is None or held.lost is not None:
                held = _Held(self._storage, self._path, self._display, self._ttl)
                self._storage.makedirs(self._storage.split(self._path)[0])
                if self._storage.local and fcntl is not None:
                    _flock(held)
                else:
                    _lease(held)
                _HELD[self._key] = held
            held.users += 1
            self._held = held

    def check(self) -> None:
        """Raise when the lock was lost (a lease taken over after missed heartbeats)."""
        held = self._held
        if held is not None and held.lost is not None:
            raise CheckpointLockedError(
                f"the writer lock {held.display!r} is no longer held by this process: "
                f"{held.lost}. Another process may be saving into the directory; this manager "
                "stops saving. Make sure one process saves at a time, then create a new manager"
            )

    def release_soon(self) -> None:
        """:meth:`release` on a new thread: for finalizers, which may run on any thread
        (even fsspec's event loop, whose calls a release must wait for)."""
        if self._held is not None:
            threading.Thread(
                target=self.release, name="pipestate-lock-release", daemon=True
            ).start()

    def release(self) -> None:
        """Give the lock back when no other manager of this process uses it."""
        held, self._held = self._held, None
        if held is None:
            return
        with _REGISTRY_LOCK:
            held.users -= 1
            if held.users > 0:
                return
            if _HELD.get(self._key) is held:
                del _HELD[self._key]
            # Under the registry lock: a manager of this process taking the lock meanwhile
            # would find it still held by the operating system (or the lease still ours).
            _unlock(held)


def _flock(held: _Held) -> None:
    """Take the operating system's lock on a local lock file, or raise naming its holder."""
    assert fcntl is not None
    fd = held.storage.call("open", held.path, os.open, held.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            record = _parse(os.pread(fd, 4096, 0))
            raise CheckpointLockedError(
                f"another process is saving into this directory: the writer lock "
                f"{held.display!r} is held by {_describe(record)}. Only one process may save "
                "under one state file at a time; stop the other one (the lock is released as "
                "soon as it exits, even when killed) or save into another directory"
            ) from None
        data = json.dumps(_owner_record(held.ttl)).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    except BaseException:
        os.close(fd)
        raise
    held.fd = fd


def _lease(held: _Held) -> None:
    """Create the lease file, taking over a stale one; raise naming a live holder."""
    storage, path = held.storage, held.path
    for _ in range(5):
        mine = json.dumps(_owner_record(held.ttl)).encode()
        if storage.create_exclusive(path, mine):
            break
        try:
            record = _parse(storage.read_bytes(path, what="writer lock"))
        except NotFoundError:
            continue  # released meanwhile: try again
        # A lease of this very process that no manager holds (its release failed) is stale too.
        if not _stale(record) and (record or {}).get("owner") != _OWNER:
            raise CheckpointLockedError(
                f"another process is saving into this directory: the writer lock "
                f"{held.display!r} is held by {_describe(record)}. Only one process may save "
                f"under one state file at a time; stop the other one, or, if it is gone, wait "
                f"until its lease expires ({held.ttl:g} s after its last heartbeat) or delete "
                "the lock file"
            )
        # Stale: delete it only if it is still the very lease judged stale, then race
        # for the exclusive create with whoever else saw it.
        try:
            again = _parse(storage.read_bytes(path, what="writer lock"))
        except NotFoundError:
            continue
        if again == record:
            storage.remove(path)
    else:
        raise CheckpointLockedError(
            f"could not take the writer lock {held.display!r}: other processes keep taking it"
        )
    held.thread = threading.Thread(
        target=_heartbeat, args=(held,), name=f"pipestate-lease({held.display})", daemon=True
    )
    held.thread.start()


def _heartbeat(held: _Held) -> None:
    """Renew the lease until released; notice when another process took it over."""
    storage, path = held.storage, held.path
    last_renewal = time.time()
    while not held.stop.wait(held.ttl / 4):
        try:
            record = _parse(storage.read_bytes(path, what="writer lock"))
            if record is None or record.get("owner") != _OWNER:
                held.lost = f"its lease was taken over by {_describe(record)}"
                return
            storage.write_atomic(path, json.dumps(_owner_record(held.ttl)).encode(), fsync=False)
            last_renewal = time.time()
        except OSError as err:
            if time.time() - last_renewal > held.ttl:
                held.lost = f"its lease could not be renewed for {held.ttl:g} s ({err})"
                return


def _unlock(held: _Held) -> None:
    if held.fd is not None:
        # The file stays: removing it would let two processes lock two different files.
        with contextlib.suppress(OSError):
            os.close(held.fd)
        held.fd = None
        return
    held.stop.set()
    if held.lost is not None:
        return
    with contextlib.suppress(OSError):
        record = _parse(held.storage.read_bytes(held.path, what="writer lock"))
        if record is not None and record.get("owner") == _OWNER:
            held.storage.remove(held.path)


def release_all() -> None:
    """Release every lock of this process (at exit)."""
    with _REGISTRY_LOCK:
        helds = list(_HELD.values())
        _HELD.clear()
    for held in helds:
        _unlock(held)


atexit.register(release_all)
