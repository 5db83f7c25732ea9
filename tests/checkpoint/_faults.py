"""Storage that fails on purpose: an fsspec filesystem that raises or hangs at the n-th call,
and a TCP proxy in front of an S3 server that can be cut at the n-th request.

The filesystem raises an exception that is *not* an ``OSError`` (as s3fs lets
botocore's ``EndpointConnectionError`` through), so that a test sees whether
every storage call is guarded.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Callable
from typing import Any

import fsspec
from fsspec.implementations.memory import MemoryFileSystem

PROTOCOL = "faulty"


class EndpointGone(Exception):  # noqa: N818 - named like botocore's errors
    """What a failing object-store client raises: not an OSError."""


class Faults:
    """When the calls of :class:`FaultyFileSystem` fail: counted from :meth:`arm`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls = 0
        self.fail_at: int | None = None  # the call that raises (1-based), then every later one
        self.once = False  # only the call ``fail_at`` raises
        self.hang_at: int | None = None  # from this call on, calls block until :attr:`release`
        self.release = threading.Event()
        self.log: list[str] = []

    def arm(
        self, *, fail_at: int | None = None, hang_at: int | None = None, once: bool = False
    ) -> None:
        with self.lock:
            self.calls = 0
            self.fail_at, self.hang_at, self.once = fail_at, hang_at, once
            self.log = []

    def disarm(self) -> None:
        with self.lock:
            self.fail_at = self.hang_at = None

    def check(self, what: str) -> None:
        with self.lock:
            self.calls += 1
            self.log.append(what)
            n, fail_at, hang_at = self.calls, self.fail_at, self.hang_at
        if hang_at is not None and n >= hang_at:
            self.release.wait()
        if fail_at is not None and (n == fail_at or (n > fail_at and not self.once)):
            raise EndpointGone(f"Could not connect to the endpoint URL (call {n}: {what})")


FAULTS = Faults()


def _guard(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        FAULTS.check(f"{name} {args[0] if args else ''}")
        return method(*args, **kwargs)

    return call


class FaultyFileSystem(MemoryFileSystem):
    """fsspec's in-memory filesystem whose every call goes through :data:`FAULTS` first."""

    protocol = PROTOCOL
    store: dict[str, Any] = {}  # noqa: RUF012 - shared by all instances, as in MemoryFileSystem
    pseudo_dirs = [""]  # noqa: RUF012

    _GUARDED = (
        "ls",
        "info",
        "cat_file",
        "pipe_file",
        "rm_file",
        "makedirs",
        "mkdir",
        "cp_file",
        "exists",
        "isfile",
        "isdir",
        "size",
        "invalidate_cache",
    )

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if name in FaultyFileSystem._GUARDED:
            return _guard(name, value)
        return value

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        FAULTS.check(f"open {path} {mode}")
        f = super()._open(path, mode, **kwargs)
        if "w" in mode or "x" in mode:
            f.write = _guard("write", f.write)
        return f


fsspec.register_implementation(PROTOCOL, FaultyFileSystem, clobber=True)


class CuttableProxy:
    """A TCP proxy to ``target``; :meth:`cut_at` makes it drop everything at the n-th request.

    Requests are counted by their HTTP request line at the start of a chunk
    from the client; once cut, every connection is closed and new ones are
    refused until :meth:`restore`.
    """

    _REQUEST = re.compile(rb"^(GET|PUT|POST|DELETE|HEAD) /")

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        self.lock = threading.Lock()
        self.requests = 0
        self.cut_after: int | None = None
        self.cut = False
        self.sockets: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut_at(self, n: int | None) -> None:
        """Cut at the ``n``-th request from now (1-based); ``None``: never."""
        with self.lock:
            self.requests = 0
            self.cut_after = n
            self.cut = False

    def restore(self) -> None:
        self.cut_at(None)

    def close(self) -> None:
        self.closed = True
        self._drop()
        with contextlib.suppress(OSError):
            self.listener.close()

    def _drop(self) -> None:
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut:
                client.close()
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while True:
                data = source.recv(1 << 16)
                if not data:
                    break
                if from_client and self._REQUEST.match(data):
                    with self.lock:
                        self.requests += 1
                        if self.cut_after is not None and self.requests >= self.cut_after:
                            self.cut = True
                if self.cut:
                    break
                sink.sendall(data)
        except OSError:
            pass
        if self.cut:
            self._drop()
        else:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
