"""JAX support: pytrees and sharded ``jax.Array`` values in checkpoints, saved by one process
or by every process of a ``jax.distributed`` job, and batches fed to devices ahead of the
training step, resumably.

Needs JAX (``pip install pipestate[jax]``). See ``docs/jax.md``.
"""

from __future__ import annotations

try:
    import jax  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised without jax installed
    raise ImportError(
        f"pipestate.jax needs JAX, which is not installed: pip install pipestate[jax] ({err})"
    ) from err

from pipestate.jax._distributed import JaxCoordinator
from pipestate.jax._feed import DeviceIterator, device_prefetch
from pipestate.jax._load import restore_pytree
from pipestate.jax._pytree import PyTreeSlot

__all__ = [
    "DeviceIterator",
    "JaxCoordinator",
    "PyTreeSlot",
    "device_prefetch",
    "restore_pytree",
]
