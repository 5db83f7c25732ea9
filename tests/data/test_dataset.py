from __future__ import annotations

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
