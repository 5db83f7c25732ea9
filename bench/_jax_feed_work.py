"""The per-record work of ``bench_jax_feed.py``, in a module that does not import JAX.

Worker processes started by forkserver or spawn import the module of the
function they run; keeping it here spares every worker (pipestate's and
Grain's alike) the import of JAX.
"""

from __future__ import annotations

import numpy as np

try:
    import grain.python as grain
except ImportError:  # the Grain rows are skipped
    grain = None


def standardise(record: np.ndarray) -> np.ndarray:
    """The per-record work: a record scaled to mean 0, deviation 1."""
    return ((record - record.mean()) / (record.std() + 1e-6)).astype(np.float32)


if grain is not None:

    class Standardise(grain.MapTransform):  # type: ignore[misc]
        """``standardise`` as a Grain transform."""

        def map(self, element: np.ndarray) -> np.ndarray:
            return standardise(element)
