"""Fixtures for the checkpoint tests: storage backends, an S3-compatible server on loopback."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import pytest

from tests._s3 import AWS_ENV, BUCKET, S3Server

__all__ = ["AWS_ENV", "BUCKET", "Backend", "S3Server"]


@dataclass
class Backend:
    """A place to save checkpoints: a directory URL and the fsspec options to reach it."""

    name: str
    directory: str
    storage_options: dict[str, Any] | None = None

    def fs(self) -> fsspec.AbstractFileSystem:
        fs, _ = fsspec.core.url_to_fs(self.directory, **(self.storage_options or {}))
        return fs

    def path(self, name: str = "") -> str:
        """The filesystem path of ``name`` in the directory."""
        _, path = fsspec.core.url_to_fs(self.directory, **(self.storage_options or {}))
        return f"{path.rstrip('/')}/{name}" if name else path

    def listdir(self) -> list[str]:
        """File names in the directory (fresh, not from a cached listing)."""
        fs = self.fs()
        fs.invalidate_cache()
        try:
            return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(self.path(), False))
        except FileNotFoundError:
            return []

    def write(self, name: str, data: bytes) -> None:
        self.fs().pipe_file(self.path(name), data)

    def read(self, name: str) -> bytes:
        data: bytes = self.fs().cat_file(self.path(name))
        return data


@pytest.fixture(params=["local", "memory", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The same test on a local directory, fsspec's in-memory filesystem and S3 (moto)."""
    if request.param == "local":
        yield Backend("local", str(tmp_path / "run"))
    elif request.param == "memory":
        directory = f"memory://pipestate-{uuid.uuid4().hex}/run"
        yield Backend("memory", directory)
        with contextlib.suppress(FileNotFoundError):
            fsspec.filesystem("memory").rm(directory.removeprefix("memory://"), recursive=True)
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        yield Backend("s3", f"s3://{BUCKET}/{uuid.uuid4().hex}/run", server.storage_options)
