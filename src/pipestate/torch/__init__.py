"""PyTorch support: ``DataLoader`` (a drop-in for torchdata's ``StatefulDataLoader``) and
torch state in checkpoints (``map_location``, ``export_state_dict``).

Needs torch (``pip install pipestate[torch]``). See ``docs/torch.md`` and
``docs/torch_checkpoints.md``.
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
from pipestate.torch._export import export_state_dict
from pipestate.torch._state import map_location

__all__ = [
    "DataLoader",
    "DataLoaderIterator",
    "WorkerInfo",
    "export_state_dict",
    "get_worker_info",
    "map_location",
]
