"""tf.data's ``random_test.py`` against pipestate and TensorFlow.

The values differ (pipestate's generator is NumPy's Philox, keyed by the seed
and the pass of ``repeat``); what tf.data's tests state holds in both: int64
scalars, determinism with a seed, a new stream without one, and which passes
repeat their values.

Left out of tf.data's tests:
- testDeterminism with a global seed (``tf.random.set_seed``): pipestate has no
  global seed.
- testRerandomizeEachIterationIgnored: TF1 graph mode only.
- testRerandomizeInsideFunction: ``tf.function`` tracing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ._base import Backend, pipestate_differs, verify_fns
from ._base_b import verify

PER_ITERATOR = pipestate_differs(
    "docs/ops.md#epochs-outside-repeat: iter(ds) always starts at epoch 0, so two iterations "
    "of a seeded random dataset give the same values; rerandomize with repeat()"
)


@pytest.mark.parametrize("local_seed", [None, 20])
def test_determinism(backend: Backend, local_seed: int | None) -> None:
    output_1 = backend.outputs(backend.Dataset.random(seed=local_seed).take(10))
    output_2 = backend.outputs(backend.Dataset.random(seed=local_seed).take(10))
    assert (output_1 == output_2) == (local_seed is not None)


@pytest.mark.parametrize("rerandomize", [None, pytest.param(True, marks=PER_ITERATOR), False])
def test_rerandomize_each_iteration_epochs(backend: Backend, rerandomize: bool | None) -> None:
    dataset = backend.Dataset.random(
        seed=42, rerandomize_each_iteration=rerandomize, name="random"
    ).take(10)
    first_epoch = backend.outputs(dataset)
    second_epoch = backend.outputs(dataset)
    assert (first_epoch == second_epoch) == (not rerandomize)


@pytest.mark.parametrize("rerandomize", [None, True, False])
def test_rerandomize_repeat_epochs(backend: Backend, rerandomize: bool | None) -> None:
    dataset = backend.Dataset.random(
        seed=42, rerandomize_each_iteration=rerandomize, name="random"
    ).take(10)
    it = backend.iterate(dataset.repeat(2))
    first_epoch = [int(next(it)) for _ in range(10)]
    second_epoch = [int(next(it)) for _ in range(10)]
    assert (first_epoch == second_epoch) == (not rerandomize)


def test_name(backend: Backend) -> None:
    dataset = backend.Dataset.random(seed=42, name="random").take(1).map(lambda _: 42)
    backend.assert_produces(dataset, [42])


def test_element_spec_and_range(backend: Backend) -> None:
    dataset = backend.Dataset.random(seed=7)
    assert backend.cardinality(dataset) == backend.INFINITE
    spec = dataset.element_spec
    assert tuple(spec.shape) == ()
    assert np.dtype(getattr(spec.dtype, "as_numpy_dtype", spec.dtype)) == np.int64
    values = np.array(backend.outputs(dataset.take(200)))
    assert values.dtype == np.int64
    assert values.min() >= 0
    assert values.max() < 2**32


# RandomCheckpointTest


@verify_fns
@pytest.mark.parametrize("rerandomize_each_iteration", [True, False])
def test_checkpoint(backend: Backend, verify_fn: str, rerandomize_each_iteration: bool) -> None:
    def build() -> Any:
        return backend.Dataset.random(
            seed=55, rerandomize_each_iteration=rerandomize_each_iteration
        ).take(10)

    verify(backend, verify_fn, build, 10)
