"""An fsspec memory filesystem that fails on demand and counts what it serves.

Registered as ``faultymem://``; it shares ``memory://``'s store, so a file
written to ``memory://x`` reads as ``faultymem://x``. Its ranged reads
(``cat_file``, what pipestate's remote reader uses) raise ``failures`` errors
first, then succeed; every successful read is recorded.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem


class FaultyMemoryFileSystem(MemoryFileSystem):
    """``memory://`` whose ``cat_file`` fails ``failures`` times, then serves and counts."""

    protocol = "faultymem"
    lock: ClassVar[threading.Lock] = threading.Lock()
    failures: ClassVar[int] = 0
    error: ClassVar[type[BaseException]] = ConnectionError
    attempts: ClassVar[int] = 0
    reads: ClassVar[list[tuple[str, int, int]]] = []

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        if path.startswith("faultymem://"):
            path = path[len("faultymem://") :]
        return str(super()._strip_protocol(path))

    def cat_file(self, path: str, start: Any = None, end: Any = None, **kwargs: Any) -> bytes:
        cls = type(self)
        with cls.lock:
            cls.attempts += 1
            if cls.failures > 0:
                cls.failures -= 1
                raise cls.error(f"injected failure reading {path} [{start}:{end}]")
        data: bytes = super().cat_file(path, start=start, end=end, **kwargs)
        with cls.lock:
            cls.reads.append((self._strip_protocol(path), int(start or 0), len(data)))
        return data

    @classmethod
    def reset(cls, failures: int = 0, error: type[BaseException] = ConnectionError) -> None:
        with cls.lock:
            cls.failures, cls.error, cls.attempts, cls.reads = failures, error, 0, []

    @classmethod
    def bytes_read(cls, path_part: str = "") -> int:
        """Bytes served from files whose path contains ``path_part``."""
        with cls.lock:
            return sum(n for path, _, n in cls.reads if path_part in path)


fsspec.register_implementation("faultymem", FaultyMemoryFileSystem, clobber=True)


@pytest.fixture
def faulty() -> Iterator[type[FaultyMemoryFileSystem]]:
    """The faulty filesystem class, counters reset, failures off afterwards."""
    FaultyMemoryFileSystem.reset()
    yield FaultyMemoryFileSystem
    FaultyMemoryFileSystem.reset()
