"""JAX support: batches fed to devices ahead of the training step, resumably.

Needs JAX (``pip install pipestate[jax]``). See ``docs/jax.md``.
"""

from __future__ import annotations

try:
    import jax  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised without jax installed
    raise ImportError(
        f"pipestate.jax needs JAX, which is not installed: pip install pipestate[jax] ({err})"
    ) from err

from pipestate.jax._feed import DeviceIterator, device_prefetch

__all__ = ["DeviceIterator", "device_prefetch"]
