"""Fixtures shared by every test package."""

from __future__ import annotations

import os

# JAX reads this when it is first imported: eight CPU devices let the sharding tests
# run on one CPU (tests/jax). Set before anything imports jax.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

from tests._s3 import s3_server

__all__ = ["s3_server"]
