"""A module's state dict out of a checkpoint, as the plain safetensors file torch users load.

``pipestate export CKPT --torch model.safetensors [--key model]`` writes the
saved state dict of one object of the checkpoint under torch's own names
(``fc.weight``), so that ``model.load_state_dict(safetensors.torch.load_file(
"model.safetensors"))`` accepts it. The way back needs no export: a plain
safetensors state dict restores with ``Checkpoint(model=model).restore(path)``.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np
import torch

from pipestate.checkpoint._graph import format_path
from pipestate.checkpoint._index import Node
from pipestate.checkpoint._locate import locate
from pipestate.checkpoint._reader import CheckpointReader
from pipestate.errors import CheckpointKeyError, CheckpointMismatchError, NotFoundError

__all__ = ["export_state_dict"]


def _find(nodes: list[Node], key: str | None, display: str) -> tuple[int, tuple[str, ...]]:
    """The node named by ``key`` (``a/b``), or the one object holding a state dict."""
    if key is not None:
        node, path = 0, tuple(part for part in key.split("/") if part)
        for i, name in enumerate(path):
            child = nodes[node].children.get(name)
            if child is None:
                known = ", ".join(sorted(nodes[node].children)) or "none"
                raise CheckpointKeyError(
                    f"checkpoint {display!r} has no object {'/'.join(path[: i + 1])!r}; "
                    f"the objects under {format_path(path[:i])!r} are: {known}"
                )
            node = child
        return node, path
    if _has_tensors(nodes[0]):
        return 0, ()
    children = {
        n: c for n, c in nodes[0].children.items() if n != "save_counter" and _has_tensors(nodes[c])
    }
    if len(children) == 1:
        ((name, child),) = children.items()
        return child, (name,)
    raise CheckpointKeyError(
        f"checkpoint {display!r} holds tensors in {len(children)} objects "
        f"({', '.join(sorted(children)) or 'none'}); name the one to export with --key"
    )


def _has_tensors(node: Node) -> bool:
    return any(
        isinstance(v, dict) and ("torch" in v or "array" in v) for v in node.attributes.values()
    )


def export_state_dict(
    checkpoint: Any, out: str | os.PathLike[str], *, key: str | None = None
) -> list[str]:
    """Write the state dict saved for one object of ``checkpoint`` as a plain safetensors file.

    Tensors keep their dtype (bfloat16 and float8 included). Tensors saved
    once because they share storage (tied weights) are written under each of
    their names, as ``load_state_dict`` needs them.

    Args:
        checkpoint: A checkpoint prefix (``ckpt/ckpt-3``), local or a URL.
        out: The local safetensors file to write (replaced atomically).
        key: The object's path in the checkpoint (``model``, ``trainer/model``);
            by default the root when it holds tensors, else the only child
            of the root that does.

    Returns:
        The state dict's keys, in the order written.

    Raises:
        NotFoundError: When there is no checkpoint at ``checkpoint``, or it is a flat file.
        CheckpointKeyError: When ``key`` names no object, or is needed and missing.
        CheckpointMismatchError: When the object's values are not a flat
            mapping of names to tensors (an optimizer, say).
        CorruptCheckpointError: When the checkpoint is damaged.

    Example:
        >>> export_state_dict("ckpt/ckpt-3", "model.safetensors", key="model")  # doctest: +SKIP
        ['fc.weight', 'fc.bias']
    """
    from safetensors.torch import save_file

    found = locate(checkpoint, "checkpoint")
    if found.kind != "object":
        raise NotFoundError(
            f"{found.display!r} is a flat safetensors file, not a checkpoint: it needs no export"
        )
    with CheckpointReader(found.storage, found.path, display=found.display) as reader:
        node_id, path = _find(reader.nodes, key, found.display)
        node = reader.nodes[node_id]
        tensors: dict[str, Any] = {}
        storages: set[tuple[int, int]] = set()
        for name, encoded in node.attributes.items():
            value = reader.decode(encoded, where=f"{format_path(path)}/{name}")
            if isinstance(value, np.ndarray):
                value = torch.from_numpy(value)
            if not isinstance(value, torch.Tensor):
                raise CheckpointMismatchError(
                    f"{format_path(path)!r} in {found.display!r} ({node.kind:.100}) is not a state "
                    f"dict of tensors: {name!r:.100} is a {type(value).__name__}; pass the "
                    "--key of a module"
                )
            value = value.cpu().contiguous()
            storage = (value.untyped_storage().data_ptr(), value.untyped_storage().nbytes())
            if storage in storages or value.untyped_storage().nbytes() != value.nbytes:
                value = value.clone()  # safetensors refuses tensors that share memory
            storages.add(storage)
            tensors[name] = value
    target = os.fspath(out)
    temporary = f"{target}.tmp-{os.getpid()}"
    try:
        save_file(tensors, temporary, metadata={"format": "pt"})
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
    return list(tensors)
