"""Fixtures for the training tests: a clean cluster environment and a tiny NumPy model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import pipestate as ps

CLUSTER_VARIABLES = ("TF_CONFIG", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


@pytest.fixture(autouse=True)
def _local_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts as a single local worker, whatever the shell exported."""
    for name in CLUSTER_VARIABLES:
        monkeypatch.delenv(name, raising=False)


class Recorder(ps.checkpoint.AutoTrackable):
    """A model that remembers what it was trained on: the sum and count of its inputs (saved)."""

    def __init__(self) -> None:
        self.total = ps.Variable(np.zeros((), np.int64))
        self.count = ps.Variable(np.zeros((), np.int64))
        self._seen: list[int] = []  # not saved: what this Python object saw

    @property
    def seen(self) -> list[int]:
        return self._seen


def record_step(model: Recorder, features: Any, labels: Any) -> float:
    """A train_step that records its input."""
    model.total.assign_add(int(features))
    model.count.assign_add(1)
    model.seen.append(int(features))
    return float(features)


def recorder_estimator(model_dir: Any, **config: Any) -> tuple[ps.training.Estimator, Recorder]:
    """An Estimator over a fresh Recorder, saving every 100 steps unless told otherwise."""
    model = Recorder()
    settings: dict[str, Any] = {"save_checkpoints_steps": 100, **config}
    est = ps.training.Estimator(
        model, record_step, config=ps.training.RunConfig(str(model_dir), **settings)
    )
    return est, model
