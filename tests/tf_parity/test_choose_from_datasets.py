"""tf.data's ``choose_from_datasets_test.py`` against pipestate and TensorFlow.

Left out of tf.data's tests:
- ChooseFromDatasetsTest.testChooseFromDatasetsNested: inputs of ``window`` datasets
  (datasets as elements).
- the checkpoint test's ``stateless_shuffle`` of the choices: a fixed NumPy permutation
  gives both backends the same choices.
- the ``symbolic_checkpoint`` combinations: a TensorFlow-only option; each case runs once.
"""

from __future__ import annotations

import numpy as np
import pytest

from ._base import Backend, verify_fns
from ._base_b import verify

WORDS = [b"foo", b"bar", b"baz"]


def test_choose_from_datasets(backend: Backend) -> None:
    datasets = [backend.Dataset.from_tensors(w).repeat() for w in WORDS]
    choice_array = np.random.default_rng(7).integers(3, size=(15,), dtype=np.int64)
    choice_dataset = backend.Dataset.from_tensor_slices(choice_array)
    dataset = backend.Dataset.choose_from_datasets(datasets, choice_dataset)
    backend.assert_produces(dataset, [WORDS[i] for i in choice_array])


def _finite_first(backend: Backend) -> list[object]:
    return [
        backend.Dataset.from_tensors(b"foo").repeat(2),
        backend.Dataset.from_tensors(b"bar").repeat(),
        backend.Dataset.from_tensors(b"baz").repeat(),
    ]


CHOICES = np.asarray([0, 0, 0, 1, 1, 1, 2, 2, 2], dtype=np.int64)


def test_stopping_on_empty_dataset(backend: Backend) -> None:
    dataset = backend.Dataset.choose_from_datasets(
        _finite_first(backend),
        backend.Dataset.from_tensor_slices(CHOICES),
        stop_on_empty_dataset=True,
    )
    backend.assert_produces(dataset, [b"foo", b"foo"])


def test_skipping_empty_datasets(backend: Backend) -> None:
    dataset = backend.Dataset.choose_from_datasets(
        _finite_first(backend),
        backend.Dataset.from_tensor_slices(CHOICES),
        stop_on_empty_dataset=False,
    )
    # Chooses 2 elements from the first dataset while the selector specifies 3.
    backend.assert_produces(
        dataset, [b"foo", b"foo", b"bar", b"bar", b"bar", b"baz", b"baz", b"baz"]
    )


def test_choice_dataset_is_empty(backend: Backend) -> None:
    datasets = [backend.Dataset.from_tensors(w).repeat() for w in WORDS]
    dataset = backend.Dataset.choose_from_datasets(
        datasets, choice_dataset=backend.Dataset.range(0), stop_on_empty_dataset=False
    )
    backend.assert_produces(dataset, [])


def test_errors(backend: Backend) -> None:
    two = [backend.Dataset.from_tensors(0), backend.Dataset.from_tensors(1)]
    with pytest.raises(TypeError, match="int64"):
        backend.Dataset.choose_from_datasets(two, backend.Dataset.from_tensors(1.0))
    with pytest.raises(TypeError, match="scalar"):
        backend.Dataset.choose_from_datasets(two, backend.Dataset.from_tensors([1.0]))
    dataset = backend.Dataset.choose_from_datasets(
        [backend.Dataset.from_tensors(0)],
        choice_dataset=backend.Dataset.from_tensors(np.int64(1)),
    )
    backend.assert_raises_at(dataset, 0, backend.InvalidArgumentError, "out of range")
    with pytest.raises(ValueError, match=backend.tf_message(r"`datasets` should not be empty")):
        backend.Dataset.choose_from_datasets([], backend.Dataset.from_tensors(1.0))
    with pytest.raises(TypeError, match=backend.tf_message("should be a `tf.data.Dataset`")):
        backend.Dataset.choose_from_datasets([backend.Dataset.range(42)], choice_dataset=None)


def test_cardinality(backend: Backend) -> None:
    finite = [backend.Dataset.range(3), backend.Dataset.range(5)]
    choices = backend.Dataset.from_tensor_slices(np.array([0, 1, 1], np.int64))
    assert backend.cardinality(backend.Dataset.choose_from_datasets(finite, choices)) == -2
    forever = [backend.Dataset.range(3).repeat(), backend.Dataset.range(5).repeat()]
    both = backend.Dataset.choose_from_datasets(forever, backend.Dataset.range(2).repeat())
    assert backend.cardinality(both) == backend.INFINITE


@verify_fns
def test_checkpoint(backend: Backend, verify_fn: str) -> None:
    num_datasets, per_dataset = 5, 20
    indices = np.repeat(np.arange(num_datasets, dtype=np.int64), per_dataset)
    shuffled = np.random.default_rng(12).permutation(indices)

    def build() -> object:
        datasets = [backend.Dataset.range(per_dataset) for _ in range(num_datasets)]
        choice_dataset = backend.Dataset.from_tensor_slices(shuffled)
        return backend.Dataset.choose_from_datasets(datasets, choice_dataset)

    verify(backend, verify_fn, build, num_outputs=100)
