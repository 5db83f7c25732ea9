"""An S3-compatible server (moto) on loopback, for every test that reads or writes ``s3://``.

The ``s3_server`` fixture is session-wide (``tests/conftest.py``); tests use
``server.storage_options`` with fsspec and the bucket ``BUCKET``.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

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
