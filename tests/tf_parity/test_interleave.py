"""tf.data's ``interleave_test.py`` against pipestate and TensorFlow.

pipestate's ``interleave(num_parallel_calls=...)`` reads the open inner
datasets ahead on threads and always delivers tf.data's deterministic order
(docs/ops.md, ``interleave``): the ``num_parallel_calls`` combinations of
testInterleaveDataset, testInterleaveDatasetError and the checkpoint test run
with ``deterministic`` left unset, and testDeterminismConfiguration's
non-deterministic expectations are a marked difference.

Left out of tf.data's tests:
- testSloppyInterleaveDataset: tf.data's deprecated ``sloppy`` parallel interleave.
- testParallelInterleaveCached: ``cache()`` is another op.
- testInterleaveSparse, InterleaveDatasetCheckpointTest.testSparse: tf.sparse tensors.

InterleaveDatasetCheckpointTest.testNested interleaves the elements of a
dataset of datasets; pipestate has no datasets as elements, so here the
inner dataset is captured by ``map_func`` instead.
"""

from __future__ import annotations

import time
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


# The num_parallel_calls combinations of the tests above.


@pytest.mark.parametrize(
    ("input_values", "cycle_length", "block_length", "num_parallel_calls"),
    [
        ([4, 5, 6], 1, 3, 1),
        ([4, 5, 6], 2, 1, 2),
        ([4, 5, 6], 2, 3, 1),
        ([4, 5, 6], 7, 2, 4),
        ([4, 0, 6], 2, 3, 2),
        ([4, 5, 6, 7], 3, 1, -1),  # AUTOTUNE
    ],
)
def test_interleave_dataset_parallel(
    backend: Backend,
    input_values: list[int],
    cycle_length: int,
    block_length: int,
    num_parallel_calls: int,
) -> None:
    dataset = (
        backend.Dataset.from_tensor_slices(np.array(input_values, dtype=np.int64))
        .repeat(2)
        .interleave(
            lambda x: backend.Dataset.from_tensors(x).repeat(x),
            cycle_length,
            block_length,
            num_parallel_calls=num_parallel_calls,
        )
    )
    expected = _interleave(_repeat(input_values, 2), cycle_length, block_length)
    backend.assert_produces(dataset, [np.int64(x) for x in expected])


def test_num_parallel_calls_above_cycle_length(backend: Backend) -> None:
    def build() -> Any:
        return backend.Dataset.range(3).interleave(
            backend.Dataset.from_tensors, cycle_length=1, num_parallel_calls=2
        )

    backend.assert_raises_when_built_or_read(
        build, backend.ArgumentError, "must be either `tf.data.AUTOTUNE` or a value less than"
    )


@pytest.mark.parametrize("num_parallel_calls", [1, 2])
def test_interleave_dataset_error_parallel(backend: Backend, num_parallel_calls: int) -> None:
    ops = tensor_ops(backend)
    input_values = np.float32([1.0, np.nan, 2.0, np.nan, 3.0])
    dataset = (
        backend.Dataset.from_tensor_slices(input_values)
        .map(ops.check_numerics)
        .interleave(backend.Dataset.from_tensors, 2, 1, num_parallel_calls=num_parallel_calls)
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


@verify_fns
@pytest.mark.parametrize("block_length", [1, 3])
def test_checkpoint_parallel(backend: Backend, verify_fn: str, block_length: int) -> None:
    input_values = np.array([2, 3], dtype=np.int64)

    def build() -> object:
        return (
            backend.Dataset.from_tensor_slices(input_values)
            .repeat(2)
            .interleave(
                lambda x: backend.Dataset.from_tensors(x).repeat(x),
                2,
                block_length,
                num_parallel_calls=2,
            )
        )

    verify(backend, verify_fn, build, int(np.sum(input_values)) * 2)


_IN_ORDER = pipestate_differs(
    "docs/ops.md#interleave: interleave always delivers the deterministic order; "
    "deterministic=False permits reordering but never reorders"
)


@pytest.mark.parametrize(
    ("local_determinism", "global_determinism"),
    [
        (None, True),
        pytest.param(None, False, marks=_IN_ORDER),
        (True, True),
        (True, False),
        pytest.param(False, True, marks=_IN_ORDER),
        pytest.param(False, False, marks=_IN_ORDER),
    ],
)
def test_determinism_configuration(
    backend: Backend, local_determinism: bool | None, global_determinism: bool
) -> None:
    expect_determinism = local_determinism or (local_determinism is None and global_determinism)
    elements = list(range(100))

    def dataset_fn(delay_ms: int) -> Any:
        def sleep(x: Any) -> Any:
            time.sleep(delay_ms / 1000)
            return x

        if backend.is_tf:
            tf = backend.module

            def interleave_fn(x: Any) -> Any:
                ds = backend.Dataset.from_tensors(x)
                if tf.math.equal(x, 0):
                    ds = ds.map(lambda y: tf.numpy_function(sleep, [y], y.dtype))
                return ds
        else:

            def interleave_fn(x: Any) -> Any:
                ds = backend.Dataset.from_tensors(x)
                return ds.map(sleep) if x == 0 else ds

        dataset = backend.Dataset.from_tensor_slices(elements).interleave(
            interleave_fn, cycle_length=10, num_parallel_calls=10, deterministic=local_determinism
        )
        opts = backend.data.Options()
        opts.deterministic = global_determinism
        return dataset.with_options(opts)

    if expect_determinism:
        assert [int(x) for x in backend.outputs(dataset_fn(100))] == elements
        return
    for delay_ms in [10, 100, 1000]:
        actual = [int(x) for x in backend.outputs(dataset_fn(delay_ms))]
        assert sorted(actual) == elements
        if actual != elements:
            return
    pytest.fail("Failed to observe nondeterministic ordering")


def test_name(backend: Backend) -> None:
    dataset = backend.Dataset.from_tensors(42).interleave(
        lambda x: backend.Dataset.from_tensors(x), name="interleave"
    )
    backend.assert_produces(dataset, [42])
