"""Sharded torch tensors (``DTensor``) in checkpoints: saved in chunks, restored onto any sharding.

Saving never gathers: each rank writes the local chunk of every DTensor it
owns (for a ``Replicate`` mesh dimension, only the replica at coordinate 0),
and the index records the global shape, the dtype and each chunk's box (see
:mod:`pipestate.checkpoint._values`). Restoring into a DTensor reads only the
chunks that overlap the local chunk the target's mesh and placements give
this rank, and builds a DTensor of the target's sharding from it; restoring
into anything else assembles the whole tensor.

Imported by the checkpoint core only when a DTensor is met (to save) or a
sharded value is read with torch installed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

from pipestate.checkpoint._values import MAX_DEPTH, Chunk, SavedSharding, Value, box_overlap
from pipestate.errors import CheckpointMismatchError, CorruptCheckpointError
from pipestate.torch._state import (
    _DTYPE_NAMES,
    AddRaw,
    ReadRaw,
    _carrier,
    _check_saveable,
    _target_device,
    _tensor_from_raw,
    storage_dtype_code,
)

__all__ = [
    "DTensorEncoder",
    "SavedDTensor",
    "ShardedReader",
    "Template",
    "local_box",
    "optimizer_template",
    "resolve",
]


def _placements_text(tensor: DTensor) -> str:
    return "(" + ", ".join(map(str, tensor.placements)) + ")"


def _check_placements(tensor: DTensor, key: str) -> None:
    for p in tensor.placements:
        # Exact types: Partial holds unreduced sums, _StridedShard interleaved rows.
        if type(p) not in (Shard, Replicate):
            raise TypeError(
                f"cannot save the DTensor at {key!r}: placement {p} of "
                f"{_placements_text(tensor)} is not supported (only Shard and Replicate are); "
                "reduce it first, e.g. tensor.redistribute(placements=[Replicate()] * "
                "tensor.device_mesh.ndim)"
            )


def local_box(tensor: DTensor) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """This rank's chunk of ``tensor``: its global offsets and shape (``None`` off the mesh)."""
    if tensor.device_mesh.get_coordinate() is None:
        return None
    shape, offsets = compute_local_shape_and_global_offset(
        tensor.shape, tensor.device_mesh, tensor.placements
    )
    return tuple(offsets), tuple(shape)


class DTensorEncoder:
    """Turns DTensors into ``"dtensor"`` value bodies, writing the chunks this rank owns.

    Args:
        add_raw: As for :class:`~pipestate.torch._state.TensorEncoder`.
        distributed: Whether every rank of the job takes part in the save.
            Alone, a process saves all it holds and refuses a DTensor whose
            other chunks live on other ranks (they would be lost).
        on_body: Called with ``(key, body)`` for every DTensor encoded (the
            distributed save merges the ranks' chunk lists through it).
    """

    def __init__(
        self,
        add_raw: AddRaw,
        *,
        distributed: bool,
        on_body: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self._add_raw = add_raw
        self._distributed = distributed
        self._on_body = on_body

    def __repr__(self) -> str:
        return f"DTensorEncoder(distributed={self._distributed})"

    def __call__(self, key: str, tensor: DTensor) -> dict[str, Any]:
        _check_placements(tensor, key)
        local = tensor.to_local().detach()
        _check_saveable(local, key)
        box = local_box(tensor)
        replica = box is not None and any(
            c != 0
            for c, p in zip(tensor.device_mesh.get_coordinate() or (), tensor.placements)
            if isinstance(p, Replicate)
        )
        chunks: list[dict[str, Any]] = []
        # In a distributed save only the first replica writes a chunk; alone, a process
        # writes what it holds (and below refuses if that is not all of the tensor).
        if box is not None and not (self._distributed and replica):
            offsets, shape = box
            if tuple(local.shape) != shape:
                raise TypeError(
                    f"cannot save the DTensor at {key!r}: its local tensor has shape "
                    f"{list(local.shape)}, but {_placements_text(tensor)} over mesh "
                    f"{list(tensor.device_mesh.shape)} gives this rank {list(shape)}"
                )
            if local.numel():
                chunks.append(self._write(key, local, offsets, shape))
        if not self._distributed:
            covered = sum(math.prod(c["shape"]) for c in chunks)
            if covered != tensor.numel():
                raise ValueError(
                    f"cannot save the DTensor at {key!r} from this process alone: it is sharded "
                    f"{_placements_text(tensor)} over {tensor.device_mesh.size()} ranks and this "
                    f"process holds {covered} of its {tensor.numel()} elements. Save from every "
                    "rank (a distributed save: no CheckpointOptions(distributed=False)), or save "
                    "tensor.full_tensor()"
                )
        body: dict[str, Any] = {
            "shape": list(tensor.shape),
            "dtype": storage_dtype_code(tensor.dtype),
            "chunks": chunks,
        }
        if self._on_body is not None:
            self._on_body(key, body)
        return body

    def _write(
        self, key: str, local: torch.Tensor, offsets: tuple[int, ...], shape: tuple[int, ...]
    ) -> dict[str, Any]:
        cpu = local.cpu() if local.device.type != "cpu" else local
        if cpu.is_conj() or cpu.is_neg():
            cpu = cpu.resolve_conj().resolve_neg()
        array, code = _carrier(cpu.contiguous())
        # The offsets make the key unique across ranks: each box is written by one rank.
        written = self._add_raw(f"{key}@[{','.join(map(str, offsets))}]", array, code)
        return {"offsets": list(offsets), "shape": list(shape), "of": written}


class SavedDTensor:
    """A sharded tensor as saved, not read yet: any box of it can be read from its chunks."""

    def __init__(self, saved: SavedSharding, read_raw: ReadRaw, *, copy: bool = True) -> None:
        dtype = _DTYPE_NAMES.get(saved.dtype)
        if dtype is None:
            raise CorruptCheckpointError(
                f"sharded tensor at {saved.where!r:.200} has unknown dtype {saved.dtype!r:.60}"
            )
        self.saved = saved
        self.dtype = dtype
        self._read_raw = read_raw
        self._copy = copy

    def __repr__(self) -> str:
        return (
            f"SavedDTensor({self.saved.where!r}, shape={list(self.saved.shape)}, "
            f"dtype={self.saved.dtype}, chunks={len(self.saved.chunks)})"
        )

    @property
    def shape(self) -> tuple[int, ...]:
        return self.saved.shape

    def read(self, offsets: tuple[int, ...], shape: tuple[int, ...]) -> torch.Tensor:
        """The box of the tensor at ``offsets`` of ``shape``, from the chunks that overlap it.

        Raises:
            CorruptCheckpointError: When a chunk's array is not what the index says.
        """
        if not self._copy:
            # The same sharding: this box is one saved chunk, returned as read (a view of
            # the memory map that its reader copies from).
            same = [c for c in self.saved.chunks if c.offsets == offsets and c.shape == shape]
            if same:
                return self._chunk(same[0])
        out = torch.empty(shape, dtype=self.dtype)
        if out.numel() == 0:
            return out
        for chunk in self.saved.chunks:
            common = box_overlap(offsets, shape, chunk)
            if common is not None:
                out[common[0]] = self._chunk(chunk)[common[1]]
        return out

    def _chunk(self, chunk: Chunk) -> torch.Tensor:
        data = _tensor_from_raw(*self._read_raw(chunk.key), chunk.key)
        if data.dtype != self.dtype or tuple(data.shape) != chunk.shape:
            raise CorruptCheckpointError(
                f"chunk {chunk.key!r:.200} of the sharded tensor at {self.saved.where!r:.200} "
                f"holds {data.dtype}{list(data.shape)}, the index says "
                f"{self.dtype}{list(chunk.shape)}"
            )
        return data

    def full(self) -> torch.Tensor:
        """The whole tensor (on the CPU, or where ``map_location`` says)."""
        tensor = self.read((0,) * len(self.shape), self.shape)
        device = _target_device("cpu", f"sharded tensor {self.saved.where!r:.200}")
        return tensor if device.type == "cpu" else tensor.to(device)

    def like(self, target: object, *, strict: bool = True) -> torch.Tensor:
        """The value to restore in place of ``target``: a DTensor of its sharding, or the whole.

        With ``strict``, a DTensor target of another global shape is refused;
        without, the whole tensor is returned for it.

        Raises:
            CheckpointMismatchError: For a DTensor target of another global
                shape, or one with a placement other than Shard and Replicate.
        """
        if not isinstance(target, DTensor):
            return self.full()
        if tuple(target.shape) != self.shape:
            if not strict:
                return self.full()
            raise CheckpointMismatchError(
                f"cannot restore the sharded tensor at {self.saved.where!r:.200}: it was saved "
                f"with global shape {list(self.shape)}, and the DTensor it restores into has "
                f"global shape {list(target.shape)}"
            )
        if any(type(p) not in (Shard, Replicate) for p in target.placements):
            raise CheckpointMismatchError(
                f"cannot restore the sharded tensor at {self.saved.where!r:.200} into a DTensor "
                f"placed {_placements_text(target)}: only Shard and Replicate placements are "
                "restored into"
            )
        box = local_box(target)
        if box is None:
            local = torch.empty((0,) * len(self.shape), dtype=self.dtype)
        else:
            local = self.read(*box)
        local = local.to(target.to_local().device)
        return DTensor.from_local(
            local,
            target.device_mesh,
            target.placements,
            run_check=False,
            shape=target.shape,
            stride=target.stride(),
        )


class ShardedReader:
    """The ``read_dtensor`` of a checkpoint reader with torch: placeholders, or whole tensors.

    Args:
        read_raw: As for :class:`~pipestate.torch._state.TensorDecoder`, but
            reading without a copy (chunks are copied where they are assembled).
        placeholders: Where given, each value is returned as a
            :class:`SavedDTensor` (resolved by :func:`resolve` against the
            object restored into) and appended to it, not read whole.
        copy: Whether values must own their memory; without, a value (or a
            box) that is one saved chunk may be a read-only view of it.
    """

    def __init__(
        self, read_raw: ReadRaw, placeholders: list[Any] | None = None, *, copy: bool = True
    ) -> None:
        self._read_raw = read_raw
        self._placeholders = placeholders
        self._copy = copy

    def __repr__(self) -> str:
        return f"ShardedReader(lazy={self._placeholders is not None})"

    def __call__(self, saved: SavedSharding) -> SavedDTensor | torch.Tensor:
        placeholder = SavedDTensor(saved, self._read_raw, copy=self._copy)
        if self._placeholders is None:
            return placeholder.full()
        self._placeholders.append(placeholder)
        return placeholder


class Template:
    """A leaf of a restore template that stands for a parameter, not a value held now.

    An optimizer without state yet has none to restore into: its state is
    restored like its parameters (sharded as they are, when shapes agree).
    """

    __slots__ = ("tensor",)

    def __init__(self, tensor: object) -> None:
        self.tensor = tensor

    def __repr__(self) -> str:
        return f"Template({type(self.tensor).__name__})"


def resolve(value: Value, template: object, depth: int = 0) -> Value:
    """``value`` with every :class:`SavedDTensor` read for what ``template`` holds in its place.

    ``template`` is the restored object's current values (the same structure:
    a dict by key, a list by position). Where it holds a DTensor, the saved
    tensor becomes a DTensor of that sharding; anywhere else, the whole tensor.
    """
    if isinstance(value, SavedDTensor):
        if isinstance(template, Template):
            return value.like(template.tensor, strict=False)
        return value.like(template)
    if isinstance(template, Template):
        template = _AnyKey(template)
    if depth > MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {k: resolve(v, _child(template, k), depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [resolve(v, _child(template, i), depth + 1) for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    return value


class _AnyKey:
    """A template whose every entry is one template (a parameter for all its optimizer state)."""

    __slots__ = ("leaf",)

    def __init__(self, leaf: Template) -> None:
        self.leaf = leaf


def _child(template: object, key: object) -> object:
    if isinstance(template, _AnyKey):
        return template.leaf
    if isinstance(template, Mapping):
        return template.get(key)
    if isinstance(template, (list, tuple)) and isinstance(key, int) and key < len(template):
        return template[key]
    return None


def optimizer_template(optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> Any:
    """An optimizer's ``state_dict()`` with each parameter standing in for state it lacks yet."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    held = state.get("state")
    per_param = dict(held) if isinstance(held, Mapping) else {}
    for i, param in enumerate(params):
        if i not in per_param:
            per_param[i] = Template(param)
    return {**state, "state": per_param}
