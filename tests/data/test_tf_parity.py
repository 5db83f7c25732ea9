"""Output values equal tf.data's for the same pipeline (runs where TensorFlow is installed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import pipestate as ps
from pipestate.data._structure import flatten, map_structure

tf = pytest.importorskip("tensorflow")

Build = Callable[[Any], Any]

CASES: dict[str, Build] = {
    "range-stop": lambda d: d.range(7),
    "range-step": lambda d: d.range(3, 20, 4),
    "range-negative-step": lambda d: d.range(10, 0, -3),
    "slices-array": lambda d: d.from_tensor_slices(np.arange(12.0).reshape(4, 3)),
    "slices-dict": lambda d: d.from_tensor_slices({"a": np.arange(5), "b": np.ones((5, 2))}),
    "slices-tuple": lambda d: d.from_tensor_slices((np.arange(3), np.arange(3) * 2)),
    "from-tensors": lambda d: d.from_tensors({"x": np.arange(3)}).repeat(2),
    "map-unpacks-tuples": lambda d: d.zip(d.range(4), d.range(10, 14)).map(lambda a, b: a * b),
    "map-dict": lambda d: d.from_tensor_slices({"a": np.arange(4)}).map(
        lambda d: {"b": d["a"] + 1}
    ),
    "batch-remainder": lambda d: d.range(10).batch(4),
    "batch-drop": lambda d: d.range(10).batch(4, drop_remainder=True),
    "batch-nested": lambda d: d.from_tensor_slices(
        {"a": np.arange(6), "b": (np.arange(6.0),)}
    ).batch(4),
    "batch-of-batch": lambda d: d.range(12).batch(3).batch(2),
    "repeat-then-batch": lambda d: d.range(5).repeat(3).batch(4),
    "take-skip": lambda d: d.range(20).skip(3).take(7),
    "take-all": lambda d: d.range(5).take(-1),
    "skip-all": lambda d: d.range(5).skip(-1),
    "take-of-infinite": lambda d: d.range(3).repeat().take(8),
    "shard": lambda d: d.range(17).shard(4, 3),
    "enumerate-repeat": lambda d: d.range(3).enumerate(5).repeat(2),
    "zip-dict": lambda d: d.zip({"x": d.range(3), "y": d.range(7, 20)}),
    "concatenate": lambda d: d.range(3).concatenate(d.range(10, 13)).batch(4),
    "enumerate-batch": lambda d: d.range(5).enumerate().batch(2),
    "filter": lambda d: d.range(20).filter(lambda x: x % 3 == 0),
    "filter-unpacks-tuples": lambda d: d.zip(d.range(8), d.range(8)).filter(lambda a, b: a > 4),
    "filter-then-batch-repeat": lambda d: (
        d.range(9).filter(lambda x: x % 2 == 0).batch(2).repeat(2)
    ),
    "filter-map-take-skip": lambda d: (
        d.range(30).filter(lambda x: x % 2 == 1).map(lambda x: x * 10).skip(2).take(5)
    ),
    "filter-zip-enumerate": lambda d: d.zip(
        d.range(10).filter(lambda x: x > 3), d.range(3)
    ).enumerate(),
    "filter-concatenate": lambda d: d.range(6).filter(lambda x: x < 2).concatenate(d.range(3)),
    "filter-shard": lambda d: d.range(40).filter(lambda x: x % 3 != 0).shard(3, 1),
}


def _values(dataset: Any, limit: int = 200) -> list[Any]:
    out = []
    iterator = dataset.as_numpy_iterator()
    for element in iterator:
        out.append(element)
        if len(out) == limit:
            break
    return out


def _normalise(element: Any) -> Any:
    return map_structure(lambda leaf: np.asarray(leaf), element)


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_values_as_tf_data(name: str) -> None:
    ours = [_normalise(e) for e in _values(CASES[name](ps.Dataset))]
    theirs = [_normalise(e) for e in _values(CASES[name](tf.data.Dataset))]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert type(a) is type(b)
        for x, y in zip(flatten(a), flatten(b), strict=True):
            assert x.shape == y.shape
            assert x.dtype == y.dtype
            assert np.array_equal(x, y)
    assert CASES[name](ps.Dataset).cardinality() == int(CASES[name](tf.data.Dataset).cardinality())


def test_global_shuffle_is_a_permutation_per_epoch_like_tf_data() -> None:
    ours = np.array([int(x) for x in ps.Dataset.range(50).global_shuffle(seed=1).repeat(2)])
    theirs = np.array(_values(tf.data.Dataset.range(50).shuffle(50, seed=1).repeat(2)))
    for values in (ours, theirs):
        assert sorted(values[:50]) == sorted(values[50:]) == list(range(50))


@pytest.mark.parametrize("buffer_size", [1, 7, 100])
def test_buffer_shuffle_matches_tf_data_in_content_and_displacement(buffer_size: int) -> None:
    build = lambda d: d.range(60).filter(lambda x: x % 5 != 0).shuffle(buffer_size, seed=3)  # noqa: E731
    ours = [int(x) for x in build(ps.Dataset)]
    theirs = [int(x) for x in _values(build(tf.data.Dataset))]
    assert sorted(ours) == sorted(theirs)
    for values in (ours, theirs):
        # Both draw from a buffer of buffer_size: output k comes from the first k + size inputs.
        inputs = [x for x in range(60) if x % 5 != 0]
        assert all(inputs.index(v) < k + buffer_size for k, v in enumerate(values))
    assert build(ps.Dataset).cardinality() == int(build(tf.data.Dataset).cardinality())
