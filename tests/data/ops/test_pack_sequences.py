"""``pack_sequences``: token sequences packed into fixed-length rows (first fit, concat)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.errors import InvalidArgumentError, StateMismatchError
from pipestate.testing import assert_conformant

from .._strategies import total

D = ps.Dataset
LENGTHS = [3, 5, 2, 4, 1, 6, 2, 3]


def sequences(lengths: list[int], dtype: Any = np.int32) -> ps.Dataset:
    """Sequence ``i`` is ``[10 * i + 1, ..., 10 * i + length]``."""
    arrays = [np.arange(1, n + 1, dtype=dtype) + 10 * i for i, n in enumerate(lengths)]
    return D.range(len(lengths)).map(lambda i: arrays[int(i)])


def rows(ds: Any) -> list[tuple[list[int], list[int], list[int]]]:
    return [(r["tokens"].tolist(), r["segment_ids"].tolist(), r["positions"].tolist()) for r in ds]


def test_first_fit() -> None:
    out = rows(sequences(LENGTHS).pack_sequences(8, num_open_rows=2))
    # 3 -> A; 5 -> A (full, out); 2 -> B; 4 -> B; 1 -> B (7); 6 -> C; 2 fits nowhere with two
    # rows open... B has 1 free, C 2: 2 -> C (full, out); 3: a new row; end: B, then D.
    assert out == [
        ([1, 2, 3, 11, 12, 13, 14, 15], [1, 1, 1, 2, 2, 2, 2, 2], [0, 1, 2, 0, 1, 2, 3, 4]),
        ([51, 52, 53, 54, 55, 56, 61, 62], [1, 1, 1, 1, 1, 1, 2, 2], [0, 1, 2, 3, 4, 5, 0, 1]),
        ([21, 22, 31, 32, 33, 34, 41, 0], [1, 1, 2, 2, 2, 2, 3, 0], [0, 1, 0, 1, 2, 3, 0, 0]),
        ([71, 72, 73, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0, 0], [0, 1, 2, 0, 0, 0, 0, 0]),
    ]


def test_first_fit_emits_the_oldest_row_when_nothing_fits_and_all_are_open() -> None:
    out = rows(sequences([5, 5, 5]).pack_sequences(8, num_open_rows=1))
    assert [r[0][:5] for r in out] == [[1, 2, 3, 4, 5], [11, 12, 13, 14, 15], [21, 22, 23, 24, 25]]


def test_concat_splits_sequences_across_rows() -> None:
    out = rows(sequences(LENGTHS).pack_sequences(8, method="concat"))
    assert out == [
        ([1, 2, 3, 11, 12, 13, 14, 15], [1, 1, 1, 2, 2, 2, 2, 2], [0, 1, 2, 0, 1, 2, 3, 4]),
        ([21, 22, 31, 32, 33, 34, 41, 51], [1, 1, 2, 2, 2, 2, 3, 4], [0, 1, 0, 1, 2, 3, 0, 0]),
        ([52, 53, 54, 55, 56, 61, 62, 71], [1, 1, 1, 1, 1, 2, 2, 3], [0, 1, 2, 3, 4, 0, 1, 0]),
        ([72, 73, 0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0, 0]),
    ]
    dropped = rows(sequences(LENGTHS).pack_sequences(8, method="concat", drop_remainder=True))
    assert dropped == out[:3]


def test_a_sequence_longer_than_many_rows_with_concat() -> None:
    out = rows(sequences([20, 1]).pack_sequences(6, method="concat", padding_value=-1))
    tokens = [t for r in out for t in r[0]]
    assert tokens == [*list(range(1, 21)), 11, -1, -1, -1]
    assert out[3][1] == [1, 1, 2, 0, 0, 0]


@pytest.mark.parametrize("method", ["first_fit", "concat"])
def test_every_token_once_in_order_and_segments_describe_them(method: str) -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 10, 200).tolist()
    out = list(sequences(lengths, np.int64).pack_sequences(16, method=method, num_open_rows=4))
    expected = {10 * i + k for i, n in enumerate(lengths) for k in range(1, n + 1)}
    tokens = [t for r in out for t, s in zip(r["tokens"], r["segment_ids"]) if s]
    assert sorted(tokens) == sorted(expected)
    assert len(tokens) == len(expected)
    for r in out:
        assert r["tokens"].dtype == np.int64
        assert r["tokens"].shape == (16,)
        segments, positions = r["segment_ids"], r["positions"]
        for s in range(1, segments.max() + 1):
            assert (positions[segments == s] == np.arange((segments == s).sum())).all()
        assert (r["tokens"][segments == 0] == 0).all()
    if method == "concat":
        assert tokens == [10 * i + k for i, n in enumerate(lengths) for k in range(1, n + 1)]


def test_dict_features_with_a_length_key() -> None:
    def example(i: np.int64) -> dict[str, np.ndarray]:
        n = int(i) % 3 + 1
        return {"ids": np.full(n, int(i), np.int32), "mask": np.ones(n, np.int32)}

    ds = D.range(5).map(example).pack_sequences(4, length_key="ids")
    first = next(iter(ds))
    assert sorted(first) == ["ids", "mask", "positions", "segment_ids"]
    # [0], [1, 1] share a row; [2, 2, 2] does not fit its last token, [3] does: full.
    assert first["ids"].tolist() == [0, 1, 1, 3]
    assert first["mask"].tolist() == [1, 1, 1, 1]
    known = D.from_tensors({"ids": np.arange(3), "x": np.arange(3)}).pack_sequences(
        4, length_key="ids"
    )
    assert known._element_spec()["x"].shape == (4,)
    mismatched = D.range(2).map(lambda i: {"ids": np.arange(2), "mask": np.arange(3)})
    with pytest.raises(InvalidArgumentError, match="feature 'mask' must be a 1-D integer array"):
        list(mismatched.pack_sequences(4, length_key="ids"))


def test_empty_sequences_are_skipped_and_an_empty_input_packs_nothing() -> None:
    assert rows(sequences([0, 2, 0]).pack_sequences(4)) == [
        ([11, 12, 0, 0], [1, 1, 0, 0], [0, 1, 0, 0])
    ]
    assert rows(sequences([]).pack_sequences(4)) == []


def test_state_holds_only_the_open_rows() -> None:
    ds = sequences([3] * 40).pack_sequences(10, num_open_rows=3)
    it = iter(ds)
    for _ in range(5):
        next(it)
        inner = it.get_state()["iterator"]
        assert len(inner["rows"]) <= 3
        assert inner["buffer"].shape == (1, sum(map(sum, inner["rows"])))
        assert inner["features"] == ["tokens"]
        assert inner["dtype"] == "int32"


def test_malformed_states_are_refused() -> None:
    it = iter(sequences(LENGTHS).pack_sequences(8, num_open_rows=2))
    next(it)
    state = it.get_state()
    state["iterator"]["rows"] = [[9]]
    with pytest.raises(StateMismatchError, match=r"state\['buffer'\] must be an integer array"):
        it.set_state(state)
    state["iterator"]["rows"] = [[2], [2], [2], [2]]
    with pytest.raises(StateMismatchError, match=r"state\['rows'\] must be a list of at most 2"):
        it.set_state(state)
    state["iterator"]["rows"] = [[0]]
    with pytest.raises(StateMismatchError, match="positive piece lengths"):
        it.set_state(state)
    state["iterator"]["rows"] = []
    state["iterator"]["features"] = ["other"]
    with pytest.raises(StateMismatchError, match=r"state\['features'\] must list"):
        it.set_state(state)


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(sequences(LENGTHS).pack_sequences(8, num_open_rows=2), id="first-fit"),
        pytest.param(sequences(LENGTHS).pack_sequences(8, method="concat"), id="concat"),
        pytest.param(
            sequences([7, 1, 9, 2]).pack_sequences(4, method="concat", drop_remainder=True),
            id="concat-drop",
        ),
        pytest.param(
            D.from_tensor_slices(np.arange(24).reshape(8, 3)).pack_sequences(7), id="known-spec"
        ),
        pytest.param(sequences(LENGTHS).repeat().pack_sequences(6).take(12), id="infinite"),
        pytest.param(
            sequences(LENGTHS).shuffle(3).pack_sequences(9, num_open_rows=1), id="seedless"
        ),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds, max_elements=30)


def test_state_round_trips_through_json_lists() -> None:
    ds = sequences(LENGTHS).pack_sequences(8, num_open_rows=2)
    it = iter(ds)
    next(it)
    state = it.get_state()
    state["iterator"]["buffer"] = state["iterator"]["buffer"].tolist()
    resumed = iter(ds)
    resumed.set_state(json.loads(json.dumps(state)))
    assert rows(resumed) == rows(ds)[1:]


@pytest.mark.parametrize(
    ("source", "kwargs", "error", "match"),
    [
        (sequences([1]), {"row_length": 0}, ValueError, "row_length must be >= 1"),
        (sequences([1]), {"row_length": 2.5}, TypeError, "row_length must be an integer"),
        (sequences([1]), {"method": "greedy"}, ValueError, "method must be 'first_fit' or"),
        (sequences([1]), {"num_open_rows": 0}, ValueError, "num_open_rows must be >= 1"),
        (sequences([1]), {"drop_remainder": True}, ValueError, "drop_remainder applies to"),
        (sequences([1]), {"drop_remainder": 1}, TypeError, "drop_remainder must be a bool"),
        (sequences([1]), {"length_key": 3}, TypeError, "length_key must be a str or None"),
        (D.range(3), {}, TypeError, "elements must be 1-D integer arrays"),
        (D.from_tensors(np.zeros(3)), {}, TypeError, "elements must be 1-D integer arrays"),
        (D.from_tensors({"a": np.arange(2)}), {}, ValueError, "pass length_key="),
        (
            D.from_tensors({"a": np.arange(2), "positions": np.arange(2)}),
            {"length_key": "a"},
            ValueError,
            "clash with the outputs",
        ),
        (D.from_tensors(np.arange(2)), {"length_key": "a"}, ValueError, "applies to dict"),
        (sequences([1]), {"name": 4}, TypeError, "name must be a non-empty string"),
    ],
)
def test_bad_arguments(
    source: ps.Dataset, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    kwargs = {"row_length": 4, **kwargs}
    with pytest.raises(error, match=match):
        source.pack_sequences(**kwargs)


def test_padding_must_fit_the_tokens_dtype() -> None:
    with pytest.raises(ValueError, match=r"padding_value=-1 does not fit the tokens' dtype uint8"):
        D.from_tensors(np.arange(3, dtype=np.uint8)).pack_sequences(4, padding_value=-1)
    unknown = sequences([2, 3], np.uint16).pack_sequences(4, padding_value=70000)
    with pytest.raises(InvalidArgumentError, match="padding_value=70000 does not fit"):
        next(iter(unknown))


def test_bad_elements_are_typed_errors_when_read() -> None:
    with pytest.raises(InvalidArgumentError, match="a sequence of 9 tokens does not fit"):
        list(sequences([2, 9]).pack_sequences(8))
    floats = D.range(2).map(lambda i: np.ones(2))
    with pytest.raises(InvalidArgumentError, match="feature 'tokens' must be a 1-D integer"):
        list(floats.pack_sequences(8))
    dicts = D.range(2).map(lambda i: {"a": np.ones(2, np.int64)})
    with pytest.raises(InvalidArgumentError, match="elements must be 1-D integer arrays"):
        list(dicts.pack_sequences(8))


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.


def _tokens(*args: object) -> np.ndarray:
    """A token sequence whose length varies by element."""
    n = total(args) % 7
    return np.arange(n, dtype=np.int64) + n


PROPERTY_OP = st.tuples(
    st.integers(1, 8), st.sampled_from(["first_fit", "concat"]), st.integers(1, 3)
).map(
    lambda a: (
        lambda ds: ds.map(_tokens).pack_sequences(
            max(a[0], 6) if a[1] == "first_fit" else a[0], method=a[1], num_open_rows=a[2]
        )
    )
)
