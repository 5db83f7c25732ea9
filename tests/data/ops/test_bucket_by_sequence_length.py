from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.errors import InvalidArgumentError, StateMismatchError
from pipestate.testing import assert_conformant, assert_elements_equal

from .._strategies import total
from ._streaming import filtered

D = ps.Dataset


def ones(n: Any) -> np.ndarray:
    return np.ones(int(n), np.int64)


def sequences(n: int) -> ps.Dataset:
    """Sequences of lengths 1, 2, 3, 4, 5, 1, 2, ... (``n`` of them)."""
    return D.range(n).map(lambda i: ones(i % 5 + 1))


def shapes(ds: ps.Dataset) -> list[tuple[int, ...]]:
    return [np.shape(b) for b in ds]


def test_buckets_fill_then_the_rest_by_bucket() -> None:
    ds = sequences(12).bucket_by_sequence_length(len, [3], [3, 4])
    assert shapes(ds) == [(3, 2), (4, 5), (3, 2), (2, 5)]
    assert ds.cardinality() == ps.data.UNKNOWN_CARDINALITY
    dropped = sequences(12).bucket_by_sequence_length(len, [3], [3, 4], drop_remainder=True)
    assert shapes(dropped) == [(3, 2), (4, 5), (3, 2)]
    assert sequences(2).repeat().bucket_by_sequence_length(len, [2], [2, 2]).cardinality() == (
        ps.data.INFINITE_CARDINALITY
    )


def test_padding_like_padded_batch() -> None:
    ds = sequences(5).bucket_by_sequence_length(len, [3], [2, 3], padding_values=np.int64(-1))
    batch = next(iter(ds))
    assert batch.tolist() == [[1, -1], [1, 1]]
    frames = D.range(1, 6).map(lambda n: np.full((int(n), 2), n, np.float32))
    for padded, plain in zip(
        frames.bucket_by_sequence_length(len, [10], [3, 1]), frames.padded_batch(3)
    ):
        assert_elements_equal(padded, plain)
    fixed = sequences(5).bucket_by_sequence_length(len, [3], [2, 3], padded_shapes=[6])
    assert shapes(fixed) == [(2, 6), (3, 6)]


def test_pad_to_bucket_boundary_like_tf() -> None:
    ds = (
        D.range(1, 11)
        .map(ones)
        .bucket_by_sequence_length(len, [3, 7, 11], [2, 2, 2, 2], pad_to_bucket_boundary=True)
    )
    batches = [b.tolist() for b in ds]
    assert batches[0] == [[1, 0], [1, 1]]
    assert batches[1] == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0]]
    assert [len(b[0]) for b in batches] == [2, 6, 6, 10, 10]
    too_long = (
        D.range(1, 5)
        .map(ones)
        .bucket_by_sequence_length(len, [3], [2, 2], pad_to_bucket_boundary=True)
    )
    with pytest.raises(InvalidArgumentError, match=r"elements must have length < bucket_bound"):
        list(too_long)


def test_no_padding_and_tuple_elements() -> None:
    ds = (
        D.range(8)
        .map(lambda i: (ones(i % 2 + 1), i))
        .bucket_by_sequence_length(lambda seq, label: len(seq), [2], [2, 2], no_padding=True)
    )
    first = next(iter(ds))
    assert_elements_equal(first, (np.ones((2, 1), np.int64), np.array([0, 2])))
    ragged = sequences(4).bucket_by_sequence_length(len, [10], [4, 1], no_padding=True)
    with pytest.raises(InvalidArgumentError, match="cannot batch tensors with different shapes"):
        next(iter(ragged))


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(sequences(17).bucket_by_sequence_length(len, [2, 4], [2, 3, 2]), id="ra"),
        pytest.param(
            filtered(17).map(lambda i: ones(i % 5 + 1)).bucket_by_sequence_length(len, [3], [3, 2]),
            id="streaming",
        ),
        pytest.param(
            sequences(17).bucket_by_sequence_length(len, [3], [3, 2], drop_remainder=True),
            id="drop",
        ),
        pytest.param(
            sequences(13).bucket_by_sequence_length(
                len, [2, 4, 6], [2, 2, 2, 1], pad_to_bucket_boundary=True
            ),
            id="boundary",
        ),
        pytest.param(sequences(0).bucket_by_sequence_length(len, [3], [2, 2]), id="empty"),
        pytest.param(
            sequences(6).repeat().bucket_by_sequence_length(len, [3], [2, 3]).take(9),
            id="infinite",
        ),
        pytest.param(
            sequences(15).shuffle(4, seed=1).bucket_by_sequence_length(len, [3], [2, 2]),
            id="shuffled",
        ),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds, max_elements=30)


def test_state_holds_the_waiting_elements_by_bucket() -> None:
    it = iter(sequences(20).bucket_by_sequence_length(len, [3], [3, 4]))
    assert next(it).shape == (3, 2)  # lengths 1, 2, 1 fill bucket 0 first
    state = it.get_state()["iterator"]
    assert state["keys"] == [1, 1, 1]  # lengths 3, 4, 5 wait in bucket 1
    assert state["input_ended"] is False
    assert state["parent"] == {"index": 6, "seed": None}


def test_invalid_arguments() -> None:
    build = sequences(3).bucket_by_sequence_length
    with pytest.raises(ValueError, match=r"len\(bucket_batch_sizes\) must equal len\(bucket_b"):
        build(len, [3], [2])
    with pytest.raises(ValueError, match=r"bucket_boundaries must be sorted in increasing order"):
        build(len, [3, 3], [2, 2, 2])
    with pytest.raises(ValueError, match=r"bucket_batch_sizes\[1\] must be >= 1"):
        build(len, [3], [2, 0])
    with pytest.raises(TypeError, match=r"bucket_boundaries must be a list of integers"):
        build(len, 3, [2, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"element_length_func must be callable"):
        build(3, [3], [2, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"no_padding must be a bool"):
        build(len, [3], [2, 2], no_padding=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"element_length_func .* must return a scalar int64"):
        next(iter(build(lambda x: 1.5, [3], [2, 2])))
    assert "name='b'" in repr(build(len, [3], [2, 2], name="b"))


def test_malformed_state_names_the_op() -> None:
    ds = sequences(20).bucket_by_sequence_length(len, [3], [3, 4])
    it = iter(ds)
    next(it)
    good = it.get_state()
    bad = {**good, "iterator": {**good["iterator"], "keys": [1, 1, 5]}}
    with pytest.raises(StateMismatchError, match=r"holds 1 elements of bucket 5; this dataset"):
        it.set_state(bad)
    bad = {**good, "iterator": {**good["iterator"], "keys": [1]}}
    with pytest.raises(StateMismatchError, match=r"holds 3 elements for 1 keys"):
        it.set_state(bad)
    assert shapes(it)[0] == (4, 5)


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.


def _length(*args: object) -> int:
    return total(args) % 7


def _bucketed(boundary: int, sizes: tuple[int, int], drop: bool) -> Any:
    return lambda ds: ds.bucket_by_sequence_length(
        _length, [boundary], list(sizes), no_padding=True, drop_remainder=drop
    )


PROPERTY_OP = st.builds(
    _bucketed, st.integers(1, 6), st.tuples(st.integers(1, 3), st.integers(1, 3)), st.booleans()
)
