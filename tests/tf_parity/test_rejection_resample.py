"""tf.data's ``rejection_resample`` against pipestate and TensorFlow, where it is deterministic.

The random draws differ (pipestate's are NumPy Philox streams keyed by the
seed, the epoch and the draw's number), so only what does not depend on them
is compared: a target equal to the initial distribution passes every element
through, a class the target never wants is filtered out, a class always
wanted is always kept, and the resampled class frequencies approach the
target (tf.data's ``rejection_resample_test.py`` checks the same statistics).

Left out of tf.data's ``rejection_resample_test.py``:
- testDistribution's exact sample counts and testExhaustion's element order: random draws.
- testEdgeCasesSampleFromInitialDataset's empty-class warnings: TF's logging.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np
import pytest

from ._base import Backend


def _classes(backend: Backend, pairs: list[Any]) -> list[int]:
    return [int(c) for c, _ in pairs]


@pytest.mark.parametrize("initial", [[0.25, 0.25, 0.5], [0.5, 0.3, 0.2]])
def test_target_equal_to_initial_passes_every_element(
    backend: Backend, initial: list[float]
) -> None:
    dataset = backend.Dataset.range(12).rejection_resample(
        lambda x: x % 3, target_dist=initial, initial_dist=initial, seed=27
    )
    backend.assert_produces(dataset, [(i % 3, i) for i in range(12)])
    assert backend.cardinality(dataset) == 12


@pytest.mark.parametrize("initial", [[0.5, 0.5], None], ids=["known", "estimated"])
def test_a_class_never_wanted_is_filtered_out(backend: Backend, initial: Any) -> None:
    dataset = backend.Dataset.range(20).rejection_resample(
        lambda x: x % 2, target_dist=[0.0, 1.0], initial_dist=initial, seed=27
    )
    backend.assert_produces(dataset, [(1, i) for i in range(1, 20, 2)])


@pytest.mark.parametrize("initial", [[0.75, 0.25], None], ids=["known", "estimated"])
def test_resampled_class_frequencies_approach_the_target(backend: Backend, initial: Any) -> None:
    classes = np.array([0, 0, 0, 1] * 4000, np.int64)
    dataset = backend.Dataset.from_tensor_slices(classes).rejection_resample(
        lambda c: c, target_dist=[0.5, 0.5], initial_dist=initial, seed=27
    )
    counts = collections.Counter(_classes(backend, backend.outputs(dataset, limit=3000)))
    assert abs(counts[1] / 3000 - 0.5) < 0.05


def test_structured_elements_are_paired_whole(backend: Backend) -> None:
    dataset = backend.Dataset.zip(
        (backend.Dataset.range(4), backend.Dataset.range(4))
    ).rejection_resample(
        lambda a, b: a % 2, target_dist=[0.5, 0.5], initial_dist=[0.5, 0.5], seed=1
    )
    backend.assert_produces(dataset, [(i % 2, (i, i)) for i in range(4)])
