"""PyTorch support: ``DataLoader``, a drop-in for torchdata's ``StatefulDataLoader``.

Needs torch (``pip install pipestate[torch]``). See ``docs/torch.md``.
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised without torch installed
    raise ImportError(
        "pipestate.torch needs PyTorch, which is not installed: pip install pipestate[torch] "
        f"({err})"
    ) from err

from pipestate.data.loader import WorkerInfo, get_worker_info
from pipestate.torch._dataloader import DataLoader, DataLoaderIterator

__all__ = ["DataLoader", "DataLoaderIterator", "WorkerInfo", "get_worker_info"]
