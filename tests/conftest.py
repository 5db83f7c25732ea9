"""Fixtures shared by every test package."""

from __future__ import annotations

import os

# JAX reads this when it is first imported: eight CPU devices let the sharding tests
# run on one CPU (tests/jax). Set before anything imports jax.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

from hypothesis import settings

from tests._s3 import s3_server

# In CI the property tests draw the same examples on every run (derandomized), so that a
# run's outcome does not depend on its luck; locally they draw new ones each time.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

__all__ = ["s3_server"]
