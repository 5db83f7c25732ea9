"""Shared helpers for checkpoint tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipestate.checkpoint import AutoTrackable, Checkpoint, Variable
from pipestate.checkpoint._index import body_crc as _body_crc


class Model(AutoTrackable):
    """A small two-layer model."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.dense = AutoTrackable()
        self.dense.kernel = Variable(rng.standard_normal((3, 4)).astype(np.float32))
        self.dense.bias = Variable(np.zeros(4, dtype=np.float32))
        self.out = Variable(rng.standard_normal(4))


def saved_model(tmp_path: Path, seed: int = 0) -> tuple[str, Model]:
    """Save ``Checkpoint(model=Model(seed))`` once and return its path and the model."""
    model = Model(seed)
    path = Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    return path, model


def read_index(prefix: str) -> dict[str, Any]:
    """The parsed index document of a checkpoint."""
    return json.loads(Path(prefix + ".index").read_text())  # type: ignore[no-any-return]


def rewrite_index(prefix: str, mutate: Callable[[dict[str, Any]], object]) -> None:
    """Change the index body with ``mutate`` and store it with a matching checksum."""
    document = read_index(prefix)
    mutate(document["checkpoint"])
    document["crc32c"] = _body_crc(document["checkpoint"])
    Path(prefix + ".index").write_text(json.dumps(document))


def shard(prefix: str, i: int = 0, n: int = 1) -> Path:
    """The path of data shard ``i`` of ``n``."""
    return Path(f"{prefix}.data-{i:05d}-of-{n:05d}")
