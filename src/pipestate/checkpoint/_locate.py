"""Finding what a user's path names: an object-graph checkpoint, a name-based file, or nothing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pipestate.checkpoint._paths import index_path
from pipestate.checkpoint._reader import missing_checkpoint_error
from pipestate.checkpoint._state_file import read_state
from pipestate.checkpoint._storage import Storage, as_path
from pipestate.errors import CorruptCheckpointError, NotFoundError

__all__ = ["Located", "locate"]


class Located:
    """A resolved checkpoint path."""

    def __init__(
        self, kind: Literal["object", "names"], storage: Storage, path: str, display: str
    ) -> None:
        self.kind = kind
        self.storage = storage
        self.path = path
        self.display = display

    def __repr__(self) -> str:
        return f"Located({self.kind!r}, {self.display!r})"


def locate(
    save_path: object, what: str = "save_path", storage_options: Mapping[str, Any] | None = None
) -> Located:
    """Resolve ``save_path``: a checkpoint prefix (or its ``.index`` file), or a safetensors file.

    Raises:
        TypeError, ValueError: When ``save_path`` is not a usable path.
        NotFoundError: When nothing is there; the message suggests numbered
            checkpoints (``ckpt-1``) that do exist, or the state file's latest.
    """
    display = as_path(save_path, what)
    storage, path = Storage.for_path(display, storage_options)
    storage.refresh(storage.split(path)[0])
    if path.endswith(".index") and display.endswith(".index") and storage.isfile(path):
        path, display = path[: -len(".index")], display[: -len(".index")]
    if storage.isfile(index_path(path)):
        return Located("object", storage, path, display)
    if storage.isfile(path):
        return Located("names", storage, path, display)
    if storage.isdir(path):
        hint = "a checkpoint prefix such as 'ckpt/model-1'"
        try:
            state = read_state(storage, path)
        except CorruptCheckpointError:
            state = None
        if state is not None:
            hint = (
                "the prefix of a checkpoint in it; its state file names "
                f"{state.model_checkpoint_path!r} as the latest"
            )
        raise NotFoundError(f"{display!r} is a directory, not a checkpoint; pass {hint}")
    raise missing_checkpoint_error(storage, path, display)
