"""tf.data's ``interleave_test.py`` (the sequential cases) against pipestate and TensorFlow.

pipestate has only tf.data's sequential ``interleave`` (docs/ops.md,
``interleave``: no ``num_parallel_calls`` / ``deterministic``), so only the
``num_parallel_calls=None`` combinations are translated.

Left out of tf.data's tests:
- testInterleaveDataset, testInterleaveDatasetError, InterleaveDatasetCheckpointTest.test:
  the ``num_parallel_calls`` combinations (parallel interleave).
- testSloppyInterleaveDataset, testDeterminismConfiguration: parallel, non-deterministic interleave.
- testParallelInterleaveCached: ``cache()`` and parallel interleave.
- testInterleaveSparse, InterleaveDatasetCheckpointTest.testSparse: tf.sparse tensors.
- testName: the ``name=`` argument of tf.data ops.

InterleaveDatasetCheckpointTest.testNested interleaves the elements of a
dataset of datasets; pipestate has no datasets as elements, so here the
inner dataset is captured by ``map_func`` instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from ._base import Backend, pipestate_differs, verify_fns
from ._base_b import cpu_count, tensor_ops, verify


def _interleave(
    lists: Sequence[Sequence[Any]], cycle_length: int, block_length: int
) -> Iterator[Any]:
    """tf.data's reference order: ``cycle_length`` open lists, ``block_length`` at a time."""
    pending = [iter(values) for values in lists]
    slots: list[Iterator[Any] | None] = [
        pending.pop(0) if pending else None for _ in range(cycle_length)
    ]
    while any(slot is not None for slot in slots) or pending:
        for i in range(cycle_length):
            if slots[i] is None:
                if not pending:
                    continue
                slots[i] = pending.pop(0)
            for _ in range(block_length):
                try:
                    yield next(slots[i])  # type: ignore[arg-type]
                except StopIteration:
                    slots[i] = None
                    break


def _repeat(values: Sequence[int], count: int) -> list[list[int]]:
    """For each ``x`` of ``values`` repeated ``count`` times, ``[x] * x``."""
    return [[int(value)] * int(value) for value in np.tile(values, count)]


@pytest.mark.parametrize(
    ("input_values", "cycle_length", "block_length", "expected_digits"),
    [
        ([4, 5, 6], 1, 1, "444455555666666444455555666666"),
        ([4, 5, 6], 2, 1, "454545455664646464656565656566"),
        ([4, 5, 6], 2, 3, "444555455666444666455566655666"),
        ([4, 5, 6], 7, 2, "445566445566445566445566566566"),
        ([4, 0, 6], 2, 1, "44646466464644666666"),
    ],
)
def test_python_implementation(
    input_values: list[int], cycle_length: int, block_length: int, expected_digits: str
) -> None:
    produced = list(_interleave(_repeat(input_values, 2), cycle_length, block_length))
    assert produced == [int(digit) for digit in expected_digits]


_DEFAULT_CYCLE = pipestate_differs(
    "docs/ops.md#interleave: cycle_length=None is 4 on every machine "
    "(tf.data: the core count), so a saved position continues identically elsewhere"
)


@pytest.mark.parametrize(
    ("input_values", "cycle_length", "block_length"),
    [
        ([4, 5, 6], 1, 3),
        ([4, 5, 6], 2, 1),
        ([4, 5, 6], 2, 3),
        ([4, 5, 6], 7, 2),
        pytest.param(
            [4, 5, 6, 7],
            None,
            3,
            marks=_DEFAULT_CYCLE if cpu_count() != 4 else (),
            id="default-cycle-length",
        ),
        ([], 2, 3),
        ([0, 0, 0], 2, 3),
        ([4, 0, 6], 2, 3),
    ],
)
def test_interleave_dataset(
    backend: Backend, input_values: list[int], cycle_length: int | None, block_length: int
) -> None:
    count = 2
    dataset = (
        backend.Dataset.from_tensor_slices(np.array(input_values, dtype=np.int64))
        .repeat(count)
        .interleave(lambda x: backend.Dataset.from_tensors(x).repeat(x), cycle_length, block_length)
    )
    expected = _interleave(_repeat(input_values, count), cycle_length or cpu_count(), block_length)
    backend.assert_produces(dataset, [np.int64(x) for x in expected])


@pytest.mark.parametrize(("cycle_length", "block_length"), [(1, 3), (2, 1), (2, 3), (7, 2)])
def test_interleave_dataset_error(backend: Backend, cycle_length: int, block_length: int) -> None:
    ops = tensor_ops(backend)
    input_values = np.float32([1.0, np.nan, 2.0, np.nan, 3.0])
    dataset = (
        backend.Dataset.from_tensor_slices(input_values)
        .map(ops.check_numerics)
        .interleave(backend.Dataset.from_tensors, cycle_length, block_length)
    )
    iterator = backend.iterate(dataset)
    for value in input_values:
        if np.isnan(value):
            with pytest.raises(backend.InvalidArgumentError):
                next(iterator)
        else:
            assert next(iterator) == value
    with pytest.raises(StopIteration):
        next(iterator)


def test_interleave_map(backend: Backend) -> None:
    def interleave_fn(x: Any) -> Any:
        return backend.Dataset.from_tensors(x).map(lambda y: y + y)

    dataset = backend.Dataset.range(100)
    dataset = dataset.interleave(interleave_fn, cycle_length=5)
    dataset = dataset.interleave(interleave_fn, cycle_length=5)
    backend.assert_produces(dataset, [4 * x for x in range(100)])


def test_map_func_must_return_dataset(backend: Backend) -> None:
    dataset = backend.Dataset.from_tensors(42)
    with pytest.raises(TypeError, match=r"Dataset"):
        backend.outputs(dataset.interleave(lambda x: [x]))


# InterleaveDatasetCheckpointTest


@verify_fns
@pytest.mark.parametrize("block_length", [1, 3])
def test_checkpoint(backend: Backend, verify_fn: str, block_length: int) -> None:
    input_values = np.array([2, 3], dtype=np.int64)

    def build() -> object:
        return (
            backend.Dataset.from_tensor_slices(input_values)
            .repeat(2)
            .interleave(lambda x: backend.Dataset.from_tensors(x).repeat(x), 2, block_length)
        )

    verify(backend, verify_fn, build, int(np.sum(input_values)) * 2)


@verify_fns
def test_checkpoint_nested(backend: Backend, verify_fn: str) -> None:
    def build() -> object:
        inner = backend.Dataset.from_tensor_slices(list(range(10)))
        return backend.Dataset.range(10).interleave(lambda _: inner, cycle_length=5)

    verify(backend, verify_fn, build, 100)
