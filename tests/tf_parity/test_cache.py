"""tf.data's ``cache_test.py`` against pipestate and TensorFlow.

The counters of testCacheRepeatEpochs / testCacheIterationEpochs are a
``tf.Variable`` in TensorFlow and a Python list in pipestate, where the
function is marked ``stateful=True`` so it is called exactly when its element
is read (a pure function's calls may run ahead, docs/architecture.md).

Left out of tf.data's tests:
- MemoryCacheTest.testCheckpointLargeCache: a 2.5 GB cache (pipestate never puts
  a cache in a checkpoint: docs/ops.md#cache).
- the ``symbolic_checkpoint`` and graph-mode combinations: each case runs once, eagerly.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ._base import Backend, pipestate_differs

COMPONENTS = (np.array([1, 2, 3, 4]), np.array([5, 6, 7, 8]), np.array([9.0, 10.0, 11.0, 12.0]))


def _first(backend: Backend, iterator: Any) -> Any:
    return backend.to_numpy(next(iterator))


def _exact(backend: Backend, dataset: Any) -> Any:
    """``dataset`` without read-ahead: TensorFlow otherwise injects a prefetch after a map,
    which runs the counting functions ahead of the reader (tf.data's tests count on graph
    mode, where it is not injected)."""
    if not backend.is_tf:
        return dataset
    options = backend.module.data.Options()
    options.experimental_optimization.inject_prefetch = False
    return dataset.with_options(options)


# ------------------------------------------------------------------ FileCacheTest
@pipestate_differs(
    "docs/ops.md#cache: a file cache is read only by the pipeline that wrote it; "
    "tf.data reads it under any upstream"
)
def test_file_cache_dataset_passthrough(backend: Backend, tmp_path: Path) -> None:
    prefix = str(tmp_path / "cache")

    def dataset_fn(count: int = 5, filename: str | None = None) -> Any:
        repeat_dataset = backend.Dataset.from_tensor_slices(COMPONENTS).repeat(count)
        return repeat_dataset.cache(filename) if filename else repeat_dataset

    elements = backend.outputs(dataset_fn())
    assert len(elements) == 20
    cached = backend.outputs(dataset_fn(filename=prefix))
    backend.assert_produces(dataset_fn(filename=prefix), cached)
    assert len(cached) == 20
    for a, b in zip(elements, cached):
        for x, y in zip(a, b):
            assert np.array_equal(x, y)
    # An empty upstream: the elements come from the cache.
    backend.assert_produces(dataset_fn(count=0, filename=prefix), cached)


def test_file_cache_passthrough_same_pipeline(backend: Backend, tmp_path: Path) -> None:
    """testCacheDatasetPassthrough's cases that read the cache with the same upstream."""
    prefix = str(tmp_path / "cache")

    def build(filename: str) -> Any:
        return backend.Dataset.from_tensor_slices(COMPONENTS).repeat(5).cache(filename)

    expected = [tuple(c[i] for c in COMPONENTS) for i in range(4)] * 5
    backend.assert_produces(build(prefix), expected)
    backend.assert_produces(build(prefix), expected)
    # Re-initialize with an empty upstream and a missing cache file: nothing.
    empty = backend.Dataset.from_tensor_slices(COMPONENTS).repeat(0).cache(prefix + "nonsense")
    backend.assert_produces(empty, [])


@pipestate_differs(
    "docs/ops.md#cache: two iterators filling one file cache each write their own file; "
    "tf.data raises AlreadyExistsError for the second"
)
def test_concurrent_writers(backend: Backend, tmp_path: Path) -> None:
    prefix = str(tmp_path / "cache")
    cache_dataset1 = backend.Dataset.from_tensor_slices(COMPONENTS).cache(prefix)
    cache_dataset2 = backend.Dataset.from_tensor_slices(COMPONENTS).cache(prefix)
    get_next1 = iter(cache_dataset1)
    get_next2 = iter(cache_dataset2)
    next(get_next1)
    error = backend.module.errors.AlreadyExistsError if backend.is_tf else Exception
    with pytest.raises(error):
        next(get_next2)
    next(get_next1)


def test_concurrent_writers_both_get_every_element(backend: Backend, tmp_path: Path) -> None:
    """pipestate's side of testConcurrentWriters (TensorFlow refuses the second writer)."""
    if backend.is_tf:
        pytest.skip("tf.data raises AlreadyExistsError here (test_concurrent_writers)")
    prefix = str(tmp_path / "cache")
    it1 = iter(backend.Dataset.from_tensor_slices(COMPONENTS).cache(prefix))
    it2 = iter(backend.Dataset.from_tensor_slices(COMPONENTS).cache(prefix))
    out1, out2 = [next(it1)], [next(it2)]
    out1 += list(it1)
    out2 += list(it2)
    assert [int(x[0]) for x in out1] == [int(x[0]) for x in out2] == [1, 2, 3, 4]
    assert os.path.exists(prefix + ".manifest.json")


def test_concurrent_readers(backend: Backend, tmp_path: Path) -> None:
    prefix = str(tmp_path / "cache")
    cache_dataset1 = backend.Dataset.from_tensor_slices(COMPONENTS).cache(prefix)
    cache_dataset2 = backend.Dataset.from_tensor_slices(COMPONENTS).cache(prefix)
    get_next1 = iter(cache_dataset1)
    elements = [_first(backend, get_next1) for _ in range(4)]
    with pytest.raises(StopIteration):
        next(get_next1)
    get_next1 = iter(cache_dataset1)
    get_next2 = iter(cache_dataset2)
    elements_itr1: list[Any] = []
    elements_itr2: list[Any] = []
    elements_itr2.append(_first(backend, get_next2))
    elements_itr1.append(_first(backend, get_next1))
    elements_itr2.append(_first(backend, get_next2))
    elements_itr1.append(_first(backend, get_next1))
    elements_itr1.append(_first(backend, get_next1))
    elements_itr2.append(_first(backend, get_next2))
    elements_itr1.append(_first(backend, get_next1))
    elements_itr2.append(_first(backend, get_next2))
    with pytest.raises(StopIteration):
        next(get_next2)
    with pytest.raises(StopIteration):
        next(get_next1)
    for a, b, c in zip(elements, elements_itr1, elements_itr2):
        for x, y, z in zip(a, b, c):
            assert np.array_equal(x, y)
            assert np.array_equal(x, z)


def test_reading_past_end_of_sequence(backend: Backend, tmp_path: Path) -> None:
    dataset = backend.Dataset.range(10).cache(str(tmp_path / "cache"))
    dataset = dataset.map(lambda a: a).batch(4).repeat(2)
    backend.assert_produces(dataset, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]] * 2)


def test_cleaning_up_cache_files(backend: Backend, tmp_path: Path) -> None:
    prefix = str(tmp_path / "cache")

    def do_test(i: int) -> None:
        iterator = iter(backend.Dataset.range(10).cache(prefix))
        for _ in range(i):
            try:
                next(iterator)
            except StopIteration:
                break

    for i in [0, 3, 10, 12, 15]:
        do_test(i)
    backend.assert_produces(backend.Dataset.range(10).cache(prefix), list(range(10)))


# ---------------------------------------------------------------- MemoryCacheTest
def test_memory_cache_dataset_passthrough(backend: Backend) -> None:
    if backend.is_tf:
        tf = backend.module
        repeat_count: Any = tf.Variable(tf.constant(10, tf.int64))
        inner = lambda x: backend.Dataset.from_tensors(x).repeat(repeat_count)  # noqa: E731
        set_count = lambda n: repeat_count.assign(n)  # noqa: E731
    else:
        count = [10]
        inner = lambda x: backend.Dataset.from_tensors(x).repeat(count[0])  # noqa: E731
        set_count = lambda n: count.__setitem__(0, n)  # noqa: E731
    dataset = backend.Dataset.range(3).flat_map(inner)
    cached_next = iter(_exact(backend, dataset.cache().repeat(2)))
    uncached_next = iter(_exact(backend, dataset.repeat(2)))
    for i in range(3):
        for _ in range(10):
            assert int(_first(backend, cached_next)) == i
            assert int(_first(backend, uncached_next)) == i
    set_count(0)
    with pytest.raises(StopIteration):
        next(uncached_next)
    for i in range(3):
        for _ in range(10):
            assert int(_first(backend, cached_next)) == i
    with pytest.raises(StopIteration):
        next(cached_next)


def test_empty_cache_reading(backend: Backend) -> None:
    cache_dataset = backend.Dataset.from_tensor_slices(COMPONENTS).repeat(0).cache()
    backend.assert_produces(cache_dataset, [])


def test_memory_concurrent_readers(backend: Backend) -> None:
    d1 = backend.Dataset.range(5).cache().map(lambda x: x + 1)
    d2 = backend.Dataset.range(5).cache().map(lambda x: x + 6)
    get_next1 = iter(d1)
    assert [int(_first(backend, get_next1)) for _ in range(3)] == [1, 2, 3]
    get_next2 = iter(d2)
    assert int(_first(backend, get_next2)) == 6
    assert int(_first(backend, get_next2)) == 7
    assert int(_first(backend, get_next1)) == 4
    assert [int(_first(backend, get_next2)), int(_first(backend, get_next1))] == [8, 5]
    assert int(_first(backend, get_next2)) == 9
    assert int(_first(backend, get_next2)) == 10
    with pytest.raises(StopIteration):
        next(get_next2)
    with pytest.raises(StopIteration):
        next(get_next1)


def test_cache_take_repeat(backend: Backend) -> None:
    dataset = backend.Dataset.range(10).cache().take(5).repeat(2)
    backend.assert_produces(dataset, [0, 1, 2, 3, 4, 0, 1, 2, 3, 4])


def _counting(backend: Backend) -> tuple[Any, Any, Any]:
    """``(map_func, map kwargs, read the count)``: a map function counting its calls."""
    if backend.is_tf:
        counter = backend.module.Variable(0)

        def increment_fn(x: Any) -> Any:
            counter.assign_add(1)
            return x

        return increment_fn, {}, lambda: int(counter.numpy())
    calls = [0]

    def increment(x: Any) -> Any:
        calls[0] += 1
        return x

    return increment, {"stateful": True}, lambda: calls[0]


def test_cache_repeat_epochs(backend: Backend) -> None:
    increment_fn, kwargs, count = _counting(backend)
    dataset = backend.Dataset.range(10).map(increment_fn, **kwargs).cache().repeat(2)
    get_next = iter(_exact(backend, dataset))
    for i in range(10):
        assert count() == i
        assert int(_first(backend, get_next)) == i
    for i in range(10):
        assert count() == 10
        assert int(_first(backend, get_next)) == i
    with pytest.raises(StopIteration):
        next(get_next)


def test_cache_iteration_epochs(backend: Backend) -> None:
    increment_fn, kwargs, count = _counting(backend)
    dataset = _exact(backend, backend.Dataset.range(10).map(increment_fn, **kwargs).cache())
    for i, elem in enumerate(dataset):
        assert int(backend.to_numpy(elem)) == i
        assert count() == i + 1
    for i, elem in enumerate(dataset):
        assert count() == 10
        assert int(backend.to_numpy(elem)) == i


def test_cache_v2_resource_capture(backend: Backend) -> None:
    ids = backend.Dataset.range(10).cache()

    def interleave_fn(dataset: Any, _: Any) -> Any:
        return dataset

    dataset = backend.Dataset.range(1).interleave(functools.partial(interleave_fn, ids))
    assert [int(x) for x in backend.outputs(dataset)] == list(range(10))


def test_cache_v2_concurrent_iterators(backend: Backend) -> None:
    dataset = backend.Dataset.range(10).cache()
    it1, it2 = iter(dataset), iter(dataset)
    for i in range(10):
        assert int(_first(backend, it1)) == i
        assert int(_first(backend, it2)) == i


def test_cache_known_cardinality(backend: Backend) -> None:
    dataset = backend.Dataset.range(10).shuffle(10, reshuffle_each_iteration=True).cache()
    it = iter(dataset)
    results = [int(_first(backend, it)) for _ in range(10)]
    it = iter(dataset)
    for i in range(10):
        assert int(_first(backend, it)) == results[i]


def test_checkpoint_finished_cache(backend: Backend) -> None:
    iterator = iter(backend.Dataset.range(10).cache())
    for i in range(10):
        assert int(_first(backend, iterator)) == i
    path = backend.save(iterator)
    backend.restore(iterator, path)
    with pytest.raises(StopIteration):
        next(iterator)


# ------------------------------------------------------------ CacheCheckpointTest
RANGE_SIZE, NUM_REPEATS = 10, 3
NUM_OUTPUTS = RANGE_SIZE * NUM_REPEATS
MEMORY = [pytest.param(True, id="memory"), pytest.param(False, id="file")]


def _ds_fn(backend: Backend, tmp_path: Path, is_memory: bool) -> Any:
    filename = "" if is_memory else str(tmp_path / "test")
    return lambda: backend.Dataset.range(RANGE_SIZE).cache(filename).repeat(NUM_REPEATS)


def _expected() -> list[int]:
    return list(range(RANGE_SIZE)) * NUM_REPEATS


def _ints(values: list[Any]) -> list[int]:
    return [int(v) for v in values]


@pytest.mark.parametrize("is_memory", MEMORY)
def test_checkpoint_before_one_epoch(backend: Backend, tmp_path: Path, is_memory: bool) -> None:
    ds_fn = _ds_fn(backend, tmp_path, is_memory)
    outputs, path = backend.gen_outputs(ds_fn, [], 5, verify_exhausted=False)
    assert _ints(outputs) == list(range(5))
    more, _ = backend.gen_outputs(
        ds_fn, [], NUM_OUTPUTS - 5, ckpt_path=path, verify_exhausted=False
    )
    assert _ints(outputs + more) == _expected()


@pytest.mark.parametrize("is_memory", MEMORY)
def test_checkpoint_before_one_epoch_then_run_few_steps(
    backend: Backend, tmp_path: Path, is_memory: bool
) -> None:
    ds_fn = _ds_fn(backend, tmp_path, is_memory)
    outputs, path = backend.gen_outputs(
        ds_fn, [5], 8, verify_exhausted=False, save_checkpoint_at_end=False
    )
    assert _ints(outputs) == list(range(8))
    more, _ = backend.gen_outputs(
        ds_fn, [], NUM_OUTPUTS - 5, ckpt_path=path, verify_exhausted=False
    )
    assert _ints(outputs[:5] + more) == _expected()


@pytest.mark.parametrize("is_memory", MEMORY)
def test_checkpoint_after_one_epoch(backend: Backend, tmp_path: Path, is_memory: bool) -> None:
    ds_fn = _ds_fn(backend, tmp_path, is_memory)
    outputs, path = backend.gen_outputs(ds_fn, [], 15, verify_exhausted=False)
    assert _ints(outputs) == list(range(10)) + list(range(5))
    more, _ = backend.gen_outputs(
        ds_fn, [], NUM_OUTPUTS - 15, ckpt_path=path, verify_exhausted=False
    )
    assert _ints(outputs + more) == _expected()


@pytest.mark.parametrize("is_memory", MEMORY)
def test_checkpoint_after_one_epoch_then_run_few_steps(
    backend: Backend, tmp_path: Path, is_memory: bool
) -> None:
    ds_fn = _ds_fn(backend, tmp_path, is_memory)
    outputs, path = backend.gen_outputs(
        ds_fn, [15], 18, verify_exhausted=False, save_checkpoint_at_end=False
    )
    assert _ints(outputs) == list(range(10)) + list(range(8))
    more, _ = backend.gen_outputs(
        ds_fn, [], NUM_OUTPUTS - 15, ckpt_path=path, verify_exhausted=False
    )
    assert _ints(outputs[:15] + more) == _expected()


@pytest.mark.parametrize("is_memory", MEMORY)
def test_checkpoint_before_one_epoch_but_run_complete_epoch(
    backend: Backend, tmp_path: Path, is_memory: bool
) -> None:
    ds_fn = _ds_fn(backend, tmp_path, is_memory)
    outputs, path = backend.gen_outputs(
        ds_fn, [5], 13, verify_exhausted=False, save_checkpoint_at_end=False
    )
    assert _ints(outputs) == list(range(10)) + list(range(3))
    more, _ = backend.gen_outputs(
        ds_fn, [], NUM_OUTPUTS - 5, ckpt_path=path, verify_exhausted=False
    )
    assert _ints(outputs[:5] + more) == _expected()


@pytest.mark.parametrize("is_memory", MEMORY)
def test_checkpoint_unused_writer_iterator(
    backend: Backend, tmp_path: Path, is_memory: bool
) -> None:
    ds_fn = _ds_fn(backend, tmp_path, is_memory)
    outputs, path = backend.gen_outputs(ds_fn, [], 0, verify_exhausted=False)
    assert outputs == []
    more, _ = backend.gen_outputs(ds_fn, [], NUM_OUTPUTS, ckpt_path=path, verify_exhausted=False)
    assert _ints(more) == _expected()


@pytest.mark.parametrize("is_memory", MEMORY)
def test_checkpoint_unused_midway_writer_iterator(
    backend: Backend, tmp_path: Path, is_memory: bool
) -> None:
    ds_fn = _ds_fn(backend, tmp_path, is_memory)
    outputs, path = backend.gen_outputs(ds_fn, [], 5, verify_exhausted=False)
    assert _ints(outputs) == list(range(5))
    none, path = backend.gen_outputs(ds_fn, [], 0, ckpt_path=path, verify_exhausted=False)
    assert none == []
    more, _ = backend.gen_outputs(
        ds_fn, [], NUM_OUTPUTS - 5, ckpt_path=path, verify_exhausted=False
    )
    assert _ints(outputs + more) == _expected()


@pytest.mark.parametrize(
    "is_memory",
    [
        pytest.param(True, id="memory"),
        pytest.param(
            False,
            id="file",
            marks=pipestate_differs(
                "docs/ops.md#cache: a new iterator next to an unfinished file cache writes its "
                "own file; tf.data raises AlreadyExistsError"
            ),
        ),
    ],
)
def test_unused_checkpoint_error(backend: Backend, tmp_path: Path, is_memory: bool) -> None:
    ds_fn = _ds_fn(backend, tmp_path, is_memory)
    outputs, _ = backend.gen_outputs(ds_fn, [], 5, verify_exhausted=False)
    assert _ints(outputs) == list(range(5))
    if is_memory:
        outputs, _ = backend.gen_outputs(ds_fn, [], NUM_OUTPUTS, verify_exhausted=False)
        assert _ints(outputs) == _expected()
    else:
        error = backend.module.errors.AlreadyExistsError if backend.is_tf else Exception
        with pytest.raises(error):
            backend.gen_outputs(ds_fn, [], NUM_OUTPUTS, verify_exhausted=False)


@pytest.mark.parametrize("is_memory", MEMORY)
def test_ignore_checkpoint_if_cache_written(
    backend: Backend, tmp_path: Path, is_memory: bool
) -> None:
    ds_fn = _ds_fn(backend, tmp_path, is_memory)
    outputs, _ = backend.gen_outputs(ds_fn, [], 15, verify_exhausted=False)
    assert _ints(outputs) == list(range(10)) + list(range(5))
    outputs, _ = backend.gen_outputs(ds_fn, [], NUM_OUTPUTS, verify_exhausted=False)
    assert _ints(outputs) == _expected()
