"""JAX support: checkpoints of a ``jax.distributed`` job.

Needs jax (``pip install pipestate[jax]``). See ``docs/jax.md``.
"""

from __future__ import annotations

try:
    import jax  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised without jax installed
    raise ImportError(
        f"pipestate.jax needs JAX, which is not installed: pip install pipestate[jax] ({err})"
    ) from err

from pipestate.jax._distributed import JaxCoordinator

__all__ = ["JaxCoordinator"]
