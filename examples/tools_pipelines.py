"""Pipelines used in docs/tools.md: run the commands there from the repository root.

pipestate verify-pipeline examples/tools_pipelines.py:train_input
pipestate profile examples/tools_pipelines.py:slow_decode -n 200
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

import pipestate as ps


def _augment(index: Any, x: Any) -> Any:
    # Randomness from a seed and the element's index: the same in every process.
    rng = np.random.default_rng([1234, int(index)])
    return x + rng.normal(size=x.shape).astype(np.float32)


def train_input() -> ps.Dataset:
    """A correct pipeline: a seeded global shuffle, an index-keyed augmentation, batches."""
    features = np.arange(64 * 8, dtype=np.float32).reshape(64, 8)
    return (
        ps.Dataset.from_tensor_slices(features)
        .global_shuffle(seed=7)
        .enumerate()
        .map(_augment)
        .batch(8)
        .repeat(2)
    )


def train_input_global_rng() -> ps.Dataset:
    """The same pipeline with a classic mistake: the augmentation uses NumPy's global RNG."""
    features = np.arange(64 * 8, dtype=np.float32).reshape(64, 8)
    return (
        ps.Dataset.from_tensor_slices(features)
        .global_shuffle(seed=7)
        .map(lambda x: x + np.random.normal(size=x.shape).astype(np.float32))
        .batch(8)
        .repeat(2)
    )


def _decode(x: Any) -> Any:
    time.sleep(0.001)  # stands for JPEG decoding
    return np.full((4, 4), x, np.float32)


def slow_decode() -> ps.Dataset:
    """A pipeline bound by a slow per-element decode."""
    return ps.Dataset.range(10_000).shuffle(100, seed=1).map(_decode).batch(16)


def _tokens(x: Any) -> Any:
    return x * 3 + 1


def _keep(x: Any) -> bool:
    return bool(x % 4 != 0)


def cheap_stream() -> ps.Dataset:
    """Sub-microsecond streaming ops: profiled on a sample of their calls."""
    return ps.Dataset.range(200_000).map(_tokens).filter(_keep).shuffle(1000, seed=2).batch(32)
