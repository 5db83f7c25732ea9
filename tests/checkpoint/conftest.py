"""Fixtures for the checkpoint tests: storage backends, an S3-compatible server on loopback."""

from __future__ import annotations

import contextlib
import logging
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import pytest

BUCKET = "pipestate-test"
# Dummy credentials: requests only ever go to the local server.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent/pipestate-test-aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/pipestate-test-aws-credentials",
}


@dataclass
class S3Server:
    """A moto S3 server on 127.0.0.1 with one bucket."""

    endpoint_url: str
    storage_options: dict[str, Any] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """Start ``moto`` in server mode on a free loopback port and create the test bucket."""
    try:
        import boto3
        import s3fs  # noqa: F401
        from moto.server import ThreadedMotoServer
    except ImportError as err:
        pytest.fail(f"the S3 tests need s3fs and moto[server]: pip install -e '.[test]' ({err})")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in AWS_ENV.items():
            mp.setenv(key, value)
        port = _free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            endpoint = f"http://127.0.0.1:{port}"
            boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
                Bucket=BUCKET
            )
            options = {
                "key": "testing",
                "secret": "testing",
                "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
            }
            yield S3Server(endpoint, options)
        finally:
            server.stop()


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
