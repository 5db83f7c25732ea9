"""Pipelines for the verifier and profiler tests, importable by the processes they start
(``tests.testing._pipelines:broken_counter``).

The ``broken_*`` ones each hide a classic reason a resumed run differs from an
uninterrupted one; the others resume exactly.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

import pipestate as ps

FRUIT = [
    "apple", "banana", "cherry", "damson", "elder", "fig", "grape", "hawthorn", "kiwi",
    "lemon", "mango", "nectarine", "olive", "peach", "quince", "rowan",
]  # fmt: skip


def _scale(x: Any) -> Any:
    return x * np.int64(3)


def _add_noise(x: Any) -> Any:
    rng = np.random.default_rng([7, int(x)])
    return np.float32(rng.random())


def good_shuffle() -> ps.Dataset:
    """A streaming pipeline: buffer shuffle, a pure map, batches; it resumes exactly."""
    return ps.Dataset.range(23).shuffle(6, seed=3).map(_scale).batch(4)


def good_repeat() -> ps.Dataset:
    """A random-access pipeline: a seedless global shuffle repeated, with pure randomness."""
    return ps.Dataset.range(9).global_shuffle().repeat(3).map(_add_noise)


def broken_counter() -> ps.Dataset:
    """A map with a hidden counter: a closure incremented per call, not declared stateful."""
    calls = [0]

    def add_calls(x: Any) -> Any:
        calls[0] += 1
        return x + calls[0]

    return ps.Dataset.range(30).map(add_calls)


def broken_generator() -> ps.Dataset:
    """A generator source whose elements can't be replayed: unseeded randomness."""

    def generate() -> Any:
        rng = np.random.default_rng()
        for _ in range(30):
            yield rng.integers(0, 1000)

    return ps.Dataset.from_generator(generate).with_options(
        ps.data.Options(external_state_policy="ignore")
    )


def broken_global_rng() -> ps.Dataset:
    """An augmentation that draws from NumPy's global generator."""
    return ps.Dataset.range(30).map(lambda x: x + np.random.random())


def broken_order() -> ps.Dataset:
    """A source whose order changes between processes: a list built from a set of strings."""
    return ps.Dataset.from_tensor_slices(sorted(set(FRUIT), key=hash)).map(lambda s: s + b"!")


def slow_map() -> ps.Dataset:
    """A pipeline bound by a slow per-element function."""
    return ps.Dataset.range(40).map(_sleepy).batch(4)


def _sleepy(x: Any) -> Any:
    time.sleep(0.004)
    return x


def not_a_dataset() -> Any:
    """Returns a list: the verifier must refuse it."""
    return [1, 2, 3]


HANG_UNLESS_PID = "PIPESTATE_TEST_HANG_UNLESS_PID"


def hangs_when_restored() -> ps.Dataset:
    """Hangs in any process but the one named by ``$PIPESTATE_TEST_HANG_UNLESS_PID`` (the
    test's): the verifier must stop its checking process."""
    if os.environ.get(HANG_UNLESS_PID, str(os.getpid())) != str(os.getpid()):
        time.sleep(60)
    return ps.Dataset.range(5)
