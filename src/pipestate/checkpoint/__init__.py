"""Object-graph checkpoints: trackables, the format, saving, restoring, managing, inspecting.

Example:
    >>> import numpy as np
    >>> from pipestate.checkpoint import Checkpoint, Variable
    >>> ckpt = Checkpoint(step=0, weights=Variable(np.zeros(3)))
    >>> path = ckpt.save("/tmp/doc-pkg/ckpt")
    >>> status = ckpt.restore(path).assert_consumed()
"""

from __future__ import annotations

from typing import Any

from pipestate.checkpoint._auto import AutoTrackable, TrackableDict, TrackableList
from pipestate.checkpoint._checkpoint import (
    Checkpoint,
    CheckpointableSaver,
    CheckpointOptions,
    TrackableSaver,
)
from pipestate.checkpoint._distributed import (
    Coordinator,
    StoreCoordinator,
    current_coordinator,
    use_coordinator,
)
from pipestate.checkpoint._inspect import list_variables, load_variable
from pipestate.checkpoint._manager import CheckpointManager
from pipestate.checkpoint._names import NameBasedSaverStatus
from pipestate.checkpoint._restore import (
    CheckpointLoadStatus,
    InitializationOnlyStatus,
    LoadStatus,
)
from pipestate.checkpoint._rng import RNGState
from pipestate.checkpoint._state_api import (
    get_checkpoint_state,
    latest_checkpoint,
    update_checkpoint_state,
)
from pipestate.checkpoint._state_file import CheckpointState
from pipestate.checkpoint._trackable import Trackable, TrackableProtocol
from pipestate.checkpoint._values import Value
from pipestate.checkpoint._variable import Variable
from pipestate.checkpoint._writer import DEFAULT_MAX_SHARD_BYTES

__all__ = [
    "DEFAULT_MAX_SHARD_BYTES",
    "AutoTrackable",
    "Checkpoint",
    "CheckpointLoadStatus",
    "CheckpointManager",
    "CheckpointOptions",
    "CheckpointState",
    "CheckpointableSaver",
    "Coordinator",
    "InitializationOnlyStatus",
    "LoadStatus",
    "NameBasedSaverStatus",
    "RNGState",
    "StoreCoordinator",
    "Trackable",
    "TrackableDict",
    "TrackableList",
    "TrackableProtocol",
    "TrackableSaver",
    "Value",
    "Variable",
    "current_coordinator",
    "get_checkpoint_state",
    "latest_checkpoint",
    "list_variables",
    "load_variable",
    "update_checkpoint_state",
    "use_coordinator",
]


def __getattr__(name: str) -> Any:
    # restore_pytree needs JAX: imported on first use, so this package never imports it
    # (and left out of __all__, so that a star import works without JAX).
    if name == "restore_pytree":
        from pipestate.jax import restore_pytree

        return restore_pytree
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
