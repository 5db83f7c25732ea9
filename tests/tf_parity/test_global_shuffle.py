"""tf.data's ``experimental/kernel_tests/global_shuffle_test.py`` against pipestate and TensorFlow.

TensorFlow's global shuffle is ``global_shuffle_op._global_shuffle`` (no
public method in TF 2.21); pipestate's is ``Dataset.global_shuffle``. Their
permutations differ (docs/ops.md, ``global_shuffle``), so orders are only
compared with each other.

Left out of tf.data's tests:
- the ``use_tensor_seed`` combinations of testRange: a seed given as a tf.Tensor.
- the ``symbolic_checkpoint`` combinations: a TensorFlow-only option; each case runs once.
- for speed, the ``prefetch=True`` combinations of GlobalShuffleCheckpointTest.testRange
  (prefetch is covered by testRange and the iterator checkpoint tests) and the
  ``dataset_range=10`` ones of GlobalShuffleNumpyIteratorCheckpointTest.

GlobalShuffleNumpyIteratorCheckpointTest saves with the NumPy iterator's
in-memory ``save()`` / ``restore()``; here each save and restore goes
through a checkpoint file instead (``backend.save`` / ``backend.restore``).
"""

from __future__ import annotations

import pytest

from ._base import Backend, pipestate_differs, verify_fns
from ._base_b import global_shuffle, random_access_error, verify

RESHUFFLE_PER_ITER = (
    "docs/ops.md#epochs-outside-repeat: iter(ds) always starts at epoch 0, so two "
    "iterations of a seeded global shuffle give the same order; reshuffle with repeat()"
)


def _epochs(values: list[int], size: int) -> list[list[int]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


@pytest.mark.parametrize("prefetch", [True, False])
@pytest.mark.parametrize("seed", [None, 42])
@pytest.mark.parametrize("dataset_range", [1, 100])
def test_range(backend: Backend, dataset_range: int, seed: int | None, prefetch: bool) -> None:
    dataset = backend.Dataset.range(dataset_range)
    if prefetch:
        dataset = dataset.prefetch(buffer_size=backend.data.AUTOTUNE)
    dataset = global_shuffle(backend, dataset, seed=seed).repeat(3)
    output = [int(x) for x in backend.outputs(dataset)]
    assert sorted(output) == sorted(list(range(dataset_range)) * 3)
    epochs = _epochs(output, dataset_range)
    for epoch in epochs:
        assert sorted(epoch) == list(range(dataset_range))
    if dataset_range > 1:
        assert epochs[0] != epochs[1]
        assert epochs[0] != epochs[2]
        assert epochs[1] != epochs[2]


@pytest.mark.parametrize("seed", [None, 42])
@pytest.mark.parametrize("dataset_range", [1, 100])
def test_negative_range(backend: Backend, dataset_range: int, seed: int | None) -> None:
    dataset = backend.Dataset.range(dataset_range, -dataset_range, -1)
    dataset = global_shuffle(backend, dataset, seed=seed).repeat(3)
    output = [int(x) for x in backend.outputs(dataset)]
    values = list(range(dataset_range, -dataset_range, -1))
    assert sorted(output) == sorted(values * 3)
    epochs = _epochs(output, dataset_range * 2)
    for epoch in epochs:
        assert sorted(epoch) == sorted(values)
    if dataset_range > 1:
        assert epochs[0] != epochs[1]
        assert epochs[0] != epochs[2]
        assert epochs[1] != epochs[2]


@pytest.mark.parametrize("seed", [None, 42])
@pytest.mark.parametrize("reshuffle", [True, False])
def test_reshuffle_repeat_epochs(backend: Backend, reshuffle: bool, seed: int | None) -> None:
    dataset = global_shuffle(
        backend, backend.Dataset.range(100), seed=seed, reshuffle_each_iteration=reshuffle
    ).repeat(2)
    output = [int(x) for x in backend.outputs(dataset)]
    assert sorted(output) == sorted(list(range(100)) * 2)
    first, second = _epochs(output, 100)
    assert (first == second) == (not reshuffle)


@pytest.mark.parametrize(
    ("reshuffle", "seed"),
    [
        pytest.param(True, 42, marks=pipestate_differs(RESHUFFLE_PER_ITER)),
        (True, None),
        (False, None),
        (False, 42),
    ],
)
def test_reshuffle_iteration_epochs(backend: Backend, reshuffle: bool, seed: int | None) -> None:
    dataset = global_shuffle(
        backend, backend.Dataset.range(100), seed=seed, reshuffle_each_iteration=reshuffle
    )
    first_epoch = [int(x) for x in backend.outputs(dataset)]
    second_epoch = [int(x) for x in backend.outputs(dataset)]
    assert (first_epoch == second_epoch) == (not reshuffle)


@pipestate_differs(
    "docs/ops.md#differences-from-tfdata: global_shuffle of an empty dataset is empty"
)
def test_empty_dataset(backend: Backend) -> None:
    dataset = backend.Dataset.range(0)
    with pytest.raises(backend.InvalidArgumentError, match=r"non-empty finite|empty|no elements"):
        backend.outputs(global_shuffle(backend, dataset))


def test_unsupported_dataset(backend: Backend) -> None:
    dataset = backend.Dataset.range(100).shuffle(buffer_size=1)
    with pytest.raises(random_access_error(backend), match=r"random.access"):
        backend.outputs(global_shuffle(backend, dataset))


# GlobalShuffleCheckpointTest


@verify_fns
@pytest.mark.parametrize("reshuffle_each_iteration", [True, False])
@pytest.mark.parametrize("dataset_range", [1, 10])
def test_checkpoint_range(
    backend: Backend, verify_fn: str, dataset_range: int, reshuffle_each_iteration: bool
) -> None:
    def build() -> object:
        return global_shuffle(
            backend,
            backend.Dataset.range(dataset_range),
            seed=42,
            reshuffle_each_iteration=reshuffle_each_iteration,
        )

    verify(backend, verify_fn, build, dataset_range, assert_items_equal=reshuffle_each_iteration)


# GlobalShuffleNumpyIteratorCheckpointTest


def _build(
    backend: Backend, dataset_range: int, reshuffle: bool, prefetch: bool, repeat: int = 1
) -> object:
    dataset = backend.Dataset.range(dataset_range)
    if prefetch:
        dataset = dataset.prefetch(buffer_size=backend.data.AUTOTUNE)
    dataset = global_shuffle(backend, dataset, seed=10, reshuffle_each_iteration=reshuffle)
    return dataset.repeat(repeat) if repeat > 1 else dataset


@pytest.mark.parametrize("prefetch", [True, False])
@pytest.mark.parametrize("reshuffle_each_iteration", [True, False])
@pytest.mark.parametrize("dataset_range", [6])
def test_iterator_checkpoint_range(
    backend: Backend, dataset_range: int, reshuffle_each_iteration: bool, prefetch: bool
) -> None:
    iterator = iter(_build(backend, dataset_range, reshuffle_each_iteration, prefetch))
    elements = []
    # Restoring the position just saved regenerates the same next element.
    for _ in range(dataset_range):
        path = backend.save(iterator)
        expected = int(next(iterator))
        backend.restore(iterator, path)
        assert int(next(iterator)) == expected
        elements.append(expected)
    assert sorted(elements) == list(range(dataset_range))


@pytest.mark.parametrize("prefetch", [True, False])
@pytest.mark.parametrize("reshuffle_each_iteration", [True, False])
@pytest.mark.parametrize("dataset_range", [6])
def test_iterator_checkpoint_range_and_repeat(
    backend: Backend, dataset_range: int, reshuffle_each_iteration: bool, prefetch: bool
) -> None:
    num_repeat = 3
    iterator = iter(
        _build(backend, dataset_range, reshuffle_each_iteration, prefetch, repeat=num_repeat)
    )
    start = backend.save(iterator)
    first_pass = [int(next(iterator)) for _ in range(dataset_range * num_repeat)]
    backend.restore(iterator, start)
    second_pass = []
    for _ in range(dataset_range * num_repeat):
        path = backend.save(iterator)
        expected = int(next(iterator))
        backend.restore(iterator, path)
        assert int(next(iterator)) == expected
        second_pass.append(expected)
    assert sorted(second_pass) == sorted(list(range(dataset_range)) * num_repeat)
    # The restored seed gives the first pass's orders again.
    assert first_pass == second_pass
