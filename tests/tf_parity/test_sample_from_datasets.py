"""tf.data's ``sample_from_datasets_test.py`` against pipestate and TensorFlow.

pipestate's mixture is blocked (docs/ops.md#sample_from_datasets): each block
of 1024 outputs takes a count from each input fixed by the weights, in a
shuffled order, so its draws can't equal TensorFlow's bit for bit. The cases
here check what both must share: proportions (tf.data's chi-squared test),
which inputs are read and when the mixture stops, cardinality, and resuming.

Left out of tf.data's tests:
- testSampleFromDatasetsNested: inputs of ``window`` datasets (datasets as elements).
- testSampleFromDatasetsRerandomizeInsideFunction: ``tf.function``.
- the ``"tensor"`` weights type: a NumPy array stands for a tensor.
- the ``symbolic_checkpoint`` combinations: a TensorFlow-only option; each case runs once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ._base import Backend, pipestate_differs, verify_fns
from ._base_b import verify

WEIGHTS_AS_DATASET = pipestate_differs(
    "docs/ops.md#sample_from_datasets: weights are a list or a schedule (a function of the "
    "output count), not a dataset"
)
WEIGHT_TYPES = ["list", "array", pytest.param("dataset", marks=WEIGHTS_AS_DATASET)]


def _weights(backend: Backend, weights: list[float], kind: str) -> Any:
    if kind == "list":
        return weights
    if kind == "array":
        return np.asarray(weights)
    return backend.Dataset.from_tensors(np.asarray(weights)).repeat()


def _chi2(expected: Any, actual: Any) -> float:
    diff = np.asarray(actual) - np.asarray(expected)
    return float(np.sum(diff * diff / np.asarray(expected), axis=0))


@pytest.mark.parametrize("kind", WEIGHT_TYPES)
def test_sample_from_datasets(backend: Backend, kind: str) -> None:
    num_samples = 5000
    rand = np.random.default_rng(1619).random(5)
    for probs in [[0.85, 0.05, 0.1], list(rand / rand.sum()), [1.0]]:
        classes = len(probs)
        dataset = backend.Dataset.sample_from_datasets(
            [backend.Dataset.from_tensors(np.int64(i)).repeat() for i in range(classes)],
            _weights(backend, probs, kind),
        ).take(num_samples)
        freqs = np.zeros([classes])
        outputs = backend.outputs(dataset)
        for value in outputs:
            freqs[int(value)] += 1
        assert len(outputs) == num_samples
        assert _chi2(probs, freqs / num_samples) < 1e-2


def _three(backend: Backend) -> list[Any]:
    return [
        backend.Dataset.from_tensors(np.int64(-1)),
        backend.Dataset.from_tensors(np.int64(1)).repeat(),
        backend.Dataset.range(10).repeat(),
    ]


@pytest.mark.parametrize("kind", WEIGHT_TYPES)
def test_stopping_on_empty_dataset(backend: Backend, kind: str) -> None:
    # Sampling stops when the first dataset is exhausted.
    dataset = backend.Dataset.sample_from_datasets(
        _three(backend),
        weights=_weights(backend, [0.5, 0.1, 0.4], kind),
        stop_on_empty_dataset=True,
    )
    assert [int(x) for x in backend.outputs(dataset)].count(-1) == 1


@pytest.mark.parametrize("kind", WEIGHT_TYPES)
def test_skipping_empty_dataset(backend: Backend, kind: str) -> None:
    # Sampling skips the first dataset after it becomes empty.
    dataset = backend.Dataset.sample_from_datasets(
        _three(backend),
        weights=_weights(backend, [0.5, 0.1, 0.4], kind),
        stop_on_empty_dataset=False,
    ).take(100)
    samples = [int(x) for x in backend.outputs(dataset)]
    assert len(samples) == 100
    assert samples.count(-1) == 1


@pytest.mark.parametrize("kind", WEIGHT_TYPES)
def test_zero_weight(backend: Backend, kind: str) -> None:
    # Sampling stops when the second dataset is exhausted.
    datasets = [
        backend.Dataset.from_tensors(-1).repeat(2),
        backend.Dataset.from_tensors(1).repeat(2),
    ]
    dataset = backend.Dataset.sample_from_datasets(
        datasets, weights=_weights(backend, [0.0, 1.0], kind), stop_on_empty_dataset=True
    )
    backend.assert_produces(dataset, [1, 1])


@pytest.mark.parametrize("kind", WEIGHT_TYPES)
def test_sample_from_empty_dataset(backend: Backend, kind: str) -> None:
    datasets = [backend.Dataset.range(0), backend.Dataset.range(1).repeat()]
    dataset = backend.Dataset.sample_from_datasets(
        datasets, weights=_weights(backend, [1.0, 0.0], kind), stop_on_empty_dataset=True
    )
    backend.assert_produces(dataset, [])


def test_skipping_datasets_with_zero_weight(backend: Backend) -> None:
    datasets = [
        backend.Dataset.from_tensors(-1).repeat(),
        backend.Dataset.from_tensors(1),
    ]
    dataset = backend.Dataset.sample_from_datasets(
        datasets, weights=np.asarray([0.0, 1.0]), stop_on_empty_dataset=False
    )
    backend.assert_produces(dataset, [1])


@pipestate_differs(
    "docs/ops.md#sample_from_datasets: all-zero weights are a ValueError, not an empty dataset"
)
def test_all_weights_are_zero(backend: Backend) -> None:
    datasets = [
        backend.Dataset.from_tensors(-1).repeat(),
        backend.Dataset.from_tensors(1).repeat(),
    ]
    dataset = backend.Dataset.sample_from_datasets(
        datasets, weights=np.asarray([0.0, 0.0]), stop_on_empty_dataset=False
    )
    backend.assert_produces(dataset, [])


def test_cardinality(backend: Backend) -> None:
    ds1 = backend.Dataset.from_tensors([1.0]).repeat()
    ds2 = backend.Dataset.from_tensors([2.0]).repeat()
    dataset = backend.Dataset.sample_from_datasets([ds1, ds2])
    assert backend.cardinality(dataset) == backend.INFINITE


@pipestate_differs(
    "docs/ops.md#sample_from_datasets: the cardinality over finite random-access inputs is "
    "known (tf.data: unknown)"
)
def test_cardinality_of_finite_inputs(backend: Backend) -> None:
    datasets = [backend.Dataset.range(3), backend.Dataset.range(5)]
    assert backend.cardinality(backend.Dataset.sample_from_datasets(datasets, seed=1)) == -2


def _epochs_dataset(backend: Backend, rerandomize: bool | None) -> Any:
    return backend.Dataset.sample_from_datasets(
        [backend.Dataset.range(0, 10), backend.Dataset.range(100, 110)],
        seed=42,
        weights=[0.5, 0.5],
        stop_on_empty_dataset=True,
        rerandomize_each_iteration=rerandomize,
    )


EPOCH_ZERO = pipestate_differs(
    "docs/ops.md#epochs-outside-repeat: iter(ds) always starts at epoch 0, so two iterations "
    "of a seeded mixture draw the same order; rerandomize with repeat()"
)


@pytest.mark.parametrize("rerandomize", [None, pytest.param(True, marks=EPOCH_ZERO), False])
def test_rerandomize_each_iteration_epochs(backend: Backend, rerandomize: bool | None) -> None:
    dataset = _epochs_dataset(backend, rerandomize)
    first_epoch = [int(x) for x in backend.outputs(dataset)]
    second_epoch = [int(x) for x in backend.outputs(dataset)]
    assert (first_epoch != second_epoch) == bool(rerandomize)


@pytest.mark.parametrize("rerandomize", [None, True, False])
def test_rerandomize_repeat_epochs(backend: Backend, rerandomize: bool | None) -> None:
    epochs = [int(x) for x in backend.outputs(_epochs_dataset(backend, rerandomize).repeat(2))]
    first_epoch = epochs[: len(epochs) // 2]
    second_epoch = epochs[len(epochs) // 2 :]
    assert (first_epoch != second_epoch) == bool(rerandomize)


def test_errors(backend: Backend) -> None:
    two = [backend.Dataset.range(10), backend.Dataset.range(20)]
    with pytest.raises(ValueError, match=backend.tf_message("should have the same length")):
        backend.Dataset.sample_from_datasets(two, weights=[0.25, 0.25, 0.25, 0.25])
    with pytest.raises(TypeError, match=backend.tf_message("must have compatible")):
        backend.Dataset.sample_from_datasets(
            [backend.Dataset.from_tensors(0), backend.Dataset.from_tensors(0.0)]
        )
    with pytest.raises(ValueError, match=backend.tf_message("`datasets` should not be empty")):
        backend.Dataset.sample_from_datasets(datasets=[], weights=[])


@pipestate_differs(
    "docs/ops.md#sample_from_datasets: integer weights are accepted (tf.data: floats only)"
)
def test_integer_weights_are_refused(backend: Backend) -> None:
    with pytest.raises(TypeError):
        backend.Dataset.sample_from_datasets(
            [backend.Dataset.range(10), backend.Dataset.range(20)], weights=[1, 1]
        )


@verify_fns
def test_checkpoint(backend: Backend, verify_fn: str) -> None:
    def build() -> Any:
        datasets = [backend.Dataset.from_tensors(np.int64(i)).repeat(None) for i in range(2)]
        return backend.Dataset.sample_from_datasets(datasets, [0.5, 0.5], seed=1813).take(100)

    verify(backend, verify_fn, build, num_outputs=100)
