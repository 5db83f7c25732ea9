"""An Estimator with CheckpointInputPipelineHook under torchrun (gloo): one training call.

Every rank trains ``--steps`` steps on its shard of one global stream; the
runner's model saver makes one distributed checkpoint per save, the hook one
input checkpoint per task. Each rank appends what it consumed to ``--record``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

import pipestate as ps


class Model(ps.checkpoint.AutoTrackable):
    def __init__(self) -> None:
        self.total = ps.Variable(np.zeros((), np.int64))
        self._seen: list[int] = []


def train_step(model: Model, features: Any, labels: Any) -> float:
    summed = torch.tensor([int(features)], dtype=torch.int64)
    dist.all_reduce(summed)  # a data-parallel step: every rank in lockstep
    model.total.assign_add(int(summed.item()))
    model._seen.append(int(features))
    return float(features)


def global_stream() -> ps.Dataset:
    return ps.Dataset.range(5_000).global_shuffle(seed=11)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--steps", type=int, required=True)
    args = parser.parse_args()
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    config = ps.training.RunConfig(args.model_dir, save_checkpoints_steps=3)
    world, task = config.num_worker_replicas, config.global_id_in_cluster or 0
    model = Model()
    est = ps.training.Estimator(model, train_step, config=config)
    est.train(
        lambda: global_stream().shard(world, task),
        hooks=[ps.data.CheckpointInputPipelineHook(est)],
        steps=args.steps,
    )
    with open(args.record, "a") as f:
        record = {
            "rank": task,
            "world": world,
            "seen": model._seen,
            "total": int(model.total.numpy()),
            "step": est.global_step,
        }
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
