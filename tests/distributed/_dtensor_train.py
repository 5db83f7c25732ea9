"""A model sharded with FSDP2 (``fully_shard``: DTensor parameters) on gloo, run by the tests.

``--mode train`` trains ``--steps`` steps and saves through ``CheckpointManager``
after ``--save-at`` of them; ``--mode resume`` restores and trains on; ``--mode
plain`` restores into an unsharded model in one process; ``--mode reshard``
restores into a model whose weights are split by columns and biases
replicated (``distribute_module``); ``--mode mismatch`` restores
into a model of another width. Rank 0 writes what it saw as JSON to ``--out``
(floats as JSON floats: exact). The ranks are started by the tests
(``--rank``, ``--world-size``, ``--port``), or one process runs alone.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import (
    DTensor,
    Partial,
    Replicate,
    Shard,
    distribute_module,
    distribute_tensor,
    init_device_mesh,
)

import pipestate as ps

IN, HIDDEN, OUT = 8, 7, 4  # 7 rows over 2 ranks: an uneven split (4 + 3)


def build(hidden: int, mesh: Any, shard_dim: int) -> torch.nn.Module:
    """The model: FSDP2 over ``mesh`` (dimension 0), or tensor-parallel style on dimension 1."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(IN, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, OUT)
    )
    if mesh is None:
        return model
    if shard_dim == 0:
        for layer in (model[0], model[2]):
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model

    def partition(name: str, module: torch.nn.Module, mesh: Any) -> None:
        # Weights split by columns (unevenly for 7), biases replicated.
        for key, param in list(module.named_parameters(recurse=False)):
            placement = Shard(1) if param.ndim > 1 else Replicate()
            sharded = torch.nn.Parameter(distribute_tensor(param.data, mesh, [placement]))
            module.register_parameter(key, sharded)

    distribute_module(model, mesh, partition)
    return model


def extras(mesh: Any, world_size: int, initial: bool) -> dict[str, _Holder]:
    """Tensors replicated over the ranks, on a 1-D mesh and on a 2-D one (as HSDP shards).

    Only the first replica writes each chunk. Saved with ``initial`` values,
    restored into zeros.
    """
    value = torch.arange(12.0).reshape(6, 2) if initial else torch.zeros(6, 2)
    if mesh is None:
        return {"replicated": _Holder(value), "hybrid": _Holder(value.clone())}
    grid = init_device_mesh("cpu", (world_size, 1), mesh_dim_names=("replicate", "shard"))
    return {
        "replicated": _Holder(distribute_tensor(value, mesh, [Replicate()])),
        "hybrid": _Holder(distribute_tensor(value, grid, [Replicate(), Shard(0)])),
    }


def batch(step: int) -> torch.Tensor:
    return torch.randn(5, IN, generator=torch.Generator().manual_seed(100 + step))


def full(tensor: torch.Tensor) -> list[Any]:
    value = tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
    return [float(x) for x in value.detach().reshape(-1)]


def state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Every parameter and its Adam moments, whole (gathered: every rank must call it)."""
    out: dict[str, Any] = {}
    for name, param in model.named_parameters():
        out[name] = full(param)
        moments = optimizer.state.get(param, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in moments:
                out[f"{name}/{key}"] = full(moments[key])
        if "step" in moments:
            out[f"{name}/step"] = float(moments["step"])
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", required=True)
    parser.add_argument("--ckpt-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=0)
    parser.add_argument("--save-at", type=int, default=-1)
    parser.add_argument("--async-save", action="store_true")
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--world-size", type=int, default=1)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    record: dict[str, Any] = {"losses": []}
    mesh = None
    if args.world_size > 1:
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{args.port}",
            rank=args.rank,
            world_size=args.world_size,
            timeout=datetime.timedelta(seconds=60),
        )
        mesh = init_device_mesh("cpu", (args.world_size,))

    if args.mode == "mismatch":
        wide = build(HIDDEN + 2, mesh, 0)
        checkpoint = ps.Checkpoint(model=wide)
        try:
            ps.CheckpointManager(checkpoint, args.ckpt_dir, max_to_keep=2).restore_or_initialize()
        except ps.errors.CheckpointMismatchError as err:
            record["error"] = str(err)
        args.mode = "reshard"  # then the same job restores onto another sharding
    model = build(HIDDEN, mesh, 1 if args.mode == "reshard" else 0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    step = ps.checkpoint.Variable(np.zeros((), np.int64))
    held = extras(mesh, args.world_size, args.mode == "train")
    checkpoint = ps.Checkpoint(model=model, optimizer=optimizer, step=step, **held)
    manager = ps.CheckpointManager(
        checkpoint, args.ckpt_dir, max_to_keep=2, enable_async=args.async_save
    )
    record["restored"] = manager.restore_or_initialize()
    record["extras"] = {
        name: [str(getattr(h.tensor, "placements", None)), full(h.tensor)]
        for name, h in held.items()
    }
    record["start"] = int(step.numpy())
    record["placements"] = {
        name: str(getattr(p, "placements", None)) for name, p in model.named_parameters()
    }
    record["restored_state"] = state(model, optimizer)
    record["moment_placements"] = {
        name: str(getattr(optimizer.state.get(p, {}).get("exp_avg"), "placements", None))
        for name, p in model.named_parameters()
    }
    first = int(step.numpy())
    for s in range(first, first + args.steps):
        loss = (model(batch(s)) ** 2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        step.assign(s + 1)
        record["losses"].append(float(loss.detach()))
        if s + 1 == args.save_at:
            record["saved_path"] = manager.save()
            record["saved_state"] = state(model, optimizer)
            # An async save copies the values before it returns: the next steps change
            # the model while the chunks are written, and the checkpoint holds step 3.
            if mesh is not None:
                try:  # one rank alone can't save a tensor sharded over two: refused
                    ps.Checkpoint(model=model).save(
                        f"{args.ckpt_dir}-alone-{args.rank}/ckpt",
                        options=ps.checkpoint.CheckpointOptions(distributed=False),
                    )
                except ValueError as err:
                    record["alone_error"] = str(err)
                partial = DTensor.from_local(torch.ones(3), mesh, [Partial()])
                try:
                    ps.Checkpoint(x=_Holder(partial)).save(
                        f"{args.ckpt_dir}-partial-{args.rank}/ckpt",
                        options=ps.checkpoint.CheckpointOptions(distributed=False),
                    )
                except TypeError as err:
                    record["partial_error"] = str(err)
    record["final_state"] = state(model, optimizer)
    manager.close()  # waits for an async save in flight
    if args.rank == 0:
        with open(args.out, "w") as f:
            json.dump(record, f)
    if mesh is not None:
        # Rank 0 hosts the store: it leaves last, once every rank is done with it.
        dist.barrier()
        dist.destroy_process_group()
    return 0


class _Holder:
    """A Stateful object holding one tensor (saved as a plain value)."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    def state_dict(self) -> dict[str, Any]:
        return {"tensor": self.tensor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tensor = state["tensor"]


if __name__ == "__main__":
    sys.exit(main())
