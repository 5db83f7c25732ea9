from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import pipestate as ps


def test_exported_names() -> None:
    assert ps.Dataset is ps.data.Dataset
    assert ps.data.INFINITE_CARDINALITY == -1
    assert ps.data.UNKNOWN_CARDINALITY == -2


def test_datasets_are_immutable_descriptions() -> None:
    base = ps.Dataset.range(10)
    batched = base.batch(3)
    assert list(base) == list(range(10))
    assert len(batched) == 4
    it1, it2 = iter(batched), iter(batched)
    next(it1)
    assert np.array_equal(next(it2), [0, 1, 2])


def test_repr_of_multi_input_ops() -> None:
    ds = ps.Dataset.zip(ps.Dataset.range(2), ps.Dataset.range(3))
    assert repr(ds) == (
        "zip(range(start=0, stop=2, step=1, dtype='int64'), "
        "range(start=0, stop=3, step=1, dtype='int64'))"
    )
    assert "concatenate(range" in repr(ps.Dataset.range(1).concatenate(ps.Dataset.range(2)))


def test_getitem_on_infinite() -> None:
    ds = ps.Dataset.range(3).repeat()
    assert ds[7] == 1
    with pytest.raises(IndexError, match="negative index -1 into an infinite dataset"):
        ds[-1]


def test_apply() -> None:
    def evens(ds: ps.Dataset) -> ps.Dataset:
        return ds.shard(2, 0)

    assert [int(x) for x in ps.Dataset.range(6).apply(evens)] == [0, 2, 4]
    with pytest.raises(TypeError, match="must return a Dataset, got int"):
        ps.Dataset.range(3).apply(lambda ds: 3)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="transformation_func must be callable"):
        ps.Dataset.range(3).apply(None)  # type: ignore[arg-type]


def test_as_numpy_iterator() -> None:
    assert [int(x) for x in ps.Dataset.range(3).as_numpy_iterator()] == [0, 1, 2]


def test_non_dataset_inputs_are_rejected() -> None:
    from pipestate.data.ops.map import MapDataset

    with pytest.raises(TypeError, match="map: expected a pipestate Dataset as input, got list"):
        MapDataset([1, 2], lambda x: x)  # type: ignore[arg-type]


def test_fingerprint_depends_on_the_definition_only() -> None:
    assert ps.Dataset.range(5).batch(2).fingerprint == ps.Dataset.range(5).batch(2).fingerprint
    assert ps.Dataset.range(5).batch(2).fingerprint != ps.Dataset.range(5).batch(3).fingerprint
    assert ps.Dataset.range(5).fingerprint != ps.Dataset.range(6).fingerprint


def test_name_labels_the_op_without_changing_elements_or_fingerprint() -> None:
    plain = ps.Dataset.range(5).map(lambda x: x + 1)
    named = ps.Dataset.range(5).map(lambda x: x + 1)._named("plus_one")
    assert named.name == "plus_one"
    assert plain.name is None
    assert "name='plus_one'" in repr(named)
    assert named.fingerprint == plain.fingerprint
    assert list(named) == list(plain)


@pytest.mark.parametrize("bad", ["", "   ", 3, b"x", "x" * 201])
def test_name_must_be_a_non_empty_string(bad: object) -> None:
    with pytest.raises(TypeError, match="name must be a non-empty string"):
        ps.Dataset.range(3)._named(bad)


def _identity(x: object) -> object:
    return x


def _keep(x: object) -> bool:
    return True


# Every fluent method and source of Dataset, called with name=.
NAMED_BUILDERS: dict[str, Callable[[Any], ps.Dataset]] = {
    "range": lambda name: ps.Dataset.range(4, name=name),
    "counter": lambda name: ps.Dataset.counter(name=name),
    "random": lambda name: ps.Dataset.random(seed=1, name=name),
    "from_tensor_slices": lambda name: ps.Dataset.from_tensor_slices([1, 2], name=name),
    "from_tensors": lambda name: ps.Dataset.from_tensors(1, name=name),
    "from_generator": lambda name: ps.Dataset.from_generator(lambda: iter([1]), name=name),
    "list_files": lambda name: ps.Dataset.list_files(__file__, name=name),
    "zip": lambda name: ps.Dataset.zip(ps.Dataset.range(2), ps.Dataset.range(2), name=name),
    "map": lambda name: ps.Dataset.range(4).map(_identity, name=name),
    "parallel map": lambda name: ps.Dataset.range(4).map(
        _identity, num_parallel_calls=2, name=name
    ),
    "filter": lambda name: ps.Dataset.range(4).filter(_keep, name=name),
    "shuffle": lambda name: ps.Dataset.range(4).shuffle(2, seed=1, name=name),
    "unbatch": lambda name: ps.Dataset.range(4).batch(2).unbatch(name=name),
    "padded_batch": lambda name: ps.Dataset.range(4).padded_batch(2, name=name),
    "interleave": lambda name: ps.Dataset.range(4).interleave(ps.Dataset.from_tensors, name=name),
    "flat_map": lambda name: ps.Dataset.range(4).flat_map(ps.Dataset.from_tensors, name=name),
    "scan": lambda name: ps.Dataset.range(4).scan(0, lambda s, x: (s, x), name=name),
    "take_while": lambda name: ps.Dataset.range(4).take_while(_keep, name=name),
    "prefetch": lambda name: ps.Dataset.range(4).prefetch(2, name=name),
    "batch": lambda name: ps.Dataset.range(4).batch(2, name=name),
    "repeat": lambda name: ps.Dataset.range(4).repeat(2, name=name),
    "take": lambda name: ps.Dataset.range(4).take(2, name=name),
    "skip": lambda name: ps.Dataset.range(4).skip(2, name=name),
    "shard": lambda name: ps.Dataset.range(4).shard(2, 0, name=name),
    "enumerate": lambda name: ps.Dataset.range(4).enumerate(name=name),
    "concatenate": lambda name: ps.Dataset.range(4).concatenate(ps.Dataset.range(2), name=name),
    "global_shuffle": lambda name: ps.Dataset.range(4).global_shuffle(seed=1, name=name),
    "ignore_errors": lambda name: ps.Dataset.range(4).ignore_errors(name=name),
    "assert_cardinality": lambda name: ps.Dataset.range(4).assert_cardinality(4, name=name),
    "TextLineDataset": lambda name: ps.data.TextLineDataset(__file__, name=name),
    "RecordDataset": lambda name: ps.data.RecordDataset(__file__, name=name),
    "FixedLengthRecordDataset": lambda name: ps.data.FixedLengthRecordDataset(
        __file__, 1, name=name
    ),
}


@pytest.mark.parametrize("method", sorted(NAMED_BUILDERS))
def test_every_method_takes_a_name(method: str) -> None:
    ds = NAMED_BUILDERS[method]("n")
    assert ds.name == "n"
    assert "name='n'" in repr(ds)
    assert ds.fingerprint == NAMED_BUILDERS[method](None).fingerprint


@pytest.mark.parametrize("method", sorted(NAMED_BUILDERS))
def test_every_method_checks_its_name(method: str) -> None:
    with pytest.raises(TypeError, match="name must be a non-empty string"):
        NAMED_BUILDERS[method]("")
