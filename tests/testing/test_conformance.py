"""The kit itself: it passes correct pipelines and catches broken ones."""

from __future__ import annotations

import collections
from typing import Any

import numpy as np
import pytest

import pipestate as ps
from pipestate.data.dataset import Dataset
from pipestate.data.iterator import DatasetIterator, IndexIterator, State, StreamIterator
from pipestate.testing import (
    _state_structure,
    _variants,
    assert_chained_resumes,
    assert_conformant,
    assert_elements_equal,
    assert_epoch_boundaries,
    assert_exhausted_restores_exhausted,
    assert_restorable_at_every_position,
    walk,
)
from pipestate.testing._variants import streaming_variant


class _ReplaysOne(IndexIterator):
    def _set_state(self, state: State) -> None:
        super()._set_state(state)
        self._index = max(0, self._index - 1)


class _ForgetsAtEnd(IndexIterator):
    def _set_state(self, state: State) -> None:
        super()._set_state(state)
        if self._index == self._length:
            self._index = 0


class _Broken(Dataset):
    """range(n) whose iterator class is chosen by the test."""

    _op_name = "broken"

    def __init__(self, n: int, iterator: type[IndexIterator]) -> None:
        super().__init__([ps.Dataset.range(n)])
        self._iterator = iterator

    def _cardinality(self) -> int:
        return self._parents[0]._cardinality()

    def _get(self, epoch: int, position: int) -> Any:
        return self._parents[0]._get(epoch, position)

    def _make_iterator(self, entropy: int | None) -> DatasetIterator:
        return self._iterator(self, entropy)


class _Unseeded(Dataset):
    """An op whose output is not a function of its position."""

    _op_name = "unseeded"

    def __init__(self) -> None:
        super().__init__([ps.Dataset.range(10)])
        self._rng = np.random.default_rng()

    def _cardinality(self) -> int:
        return 10

    def _get(self, epoch: int, position: int) -> Any:
        return np.int64(self._rng.integers(1000))


def test_correct_pipeline_passes() -> None:
    assert_conformant(ps.Dataset.range(20).global_shuffle(seed=1).batch(3))


def test_replaying_iterator_is_caught() -> None:
    with pytest.raises(AssertionError, match="state after set_state differs"):
        assert_restorable_at_every_position(_Broken(5, _ReplaysOne))
    with pytest.raises(AssertionError, match="elements differ"):
        assert_chained_resumes(_Broken(30, _ReplaysOne), seed=1)


def test_exhausted_state_that_restarts_is_caught() -> None:
    with pytest.raises(AssertionError, match="expected the end of the data"):
        assert_exhausted_restores_exhausted(_Broken(4, _ForgetsAtEnd))


def test_nondeterministic_op_is_caught() -> None:
    with pytest.raises(AssertionError, match="a second iteration"):
        assert_restorable_at_every_position(_Unseeded())


def test_epoch_boundaries_checks_repeat() -> None:
    assert_epoch_boundaries(ps.Dataset.range(4).global_shuffle(seed=1))
    with pytest.raises(AssertionError):
        assert_epoch_boundaries(_Unseeded())


def test_walk_records_states_before_each_element() -> None:
    elements, states, exhausted = walk(ps.Dataset.range(3))
    assert [int(e) for e in elements] == [0, 1, 2]
    assert [s["iterator"]["index"] for s in states] == [0, 1, 2, 3]
    assert exhausted
    elements, states, exhausted = walk(ps.Dataset.range(3).repeat(), max_elements=5)
    assert len(elements) == 5
    assert len(states) == 6
    assert not exhausted


def test_assert_elements_equal_is_exact() -> None:
    assert_elements_equal({"a": (np.int64(1),)}, {"a": (np.int64(1),)})
    for a, b in [
        (np.int64(1), np.int32(1)),
        (np.array([1.0]), np.array([[1.0]])),
        ((np.int64(1),), [np.int64(1)]),
        ({"a": np.int64(1)}, {"b": np.int64(1)}),
        (np.array([np.nan, 1.0]), np.array([np.nan, 2.0])),
    ]:
        with pytest.raises(AssertionError, match="elements differ"):
            assert_elements_equal(a, b)
    assert_elements_equal(np.array([np.nan]), np.array([np.nan]))


def _is_even(x: np.int64) -> bool:
    return bool(x % 2 == 0)


def test_epoch_boundaries_of_passes_of_different_lengths() -> None:
    # Each pass reshuffles, so the filter keeps 1, then 2, then 2 elements: the
    # boundaries are not multiples of the first pass's length.
    ds = ps.Dataset.range(8).global_shuffle(seed=8).take(3).filter(_is_even)
    assert [len(list(ds)), len(list(ds.repeat(3)))] == [1, 5]
    assert_epoch_boundaries(ds)
    assert_conformant(ds)


# ------------------------------------------------------------------ variants


class _PassIterator(StreamIterator):
    """A correct streaming path: the input's elements, the input's state."""

    def _next(self) -> Any:
        return self._inputs[0]._next()


class _ForgetfulIterator(_PassIterator):
    """A streaming path whose restore forgets the input's position."""

    def _restore(self, state: State) -> None:
        pass


class _DoublingIterator(_PassIterator):
    """A streaming path whose elements differ from the random-access path's."""

    def _next(self) -> Any:
        return self._inputs[0]._next() * 2


class _TwoPaths(Dataset):
    """range's elements through an op whose streaming iterator is chosen by the test."""

    _op_name = "two_paths"
    _passes_elements = True

    def __init__(self, parent: Dataset, iterator: type[StreamIterator]) -> None:
        super().__init__([parent])
        self._iterator_class = iterator  # type: ignore[misc]

    def _cardinality(self) -> int:
        return self._parents[0]._cardinality()

    def _get(self, epoch: int, position: int) -> Any:
        return self._parents[0]._get(epoch, position)


def test_streaming_variant_runs_each_op_s_streaming_iterator() -> None:
    ds = ps.Dataset.range(10).map(lambda x: x * 2).batch(3).repeat(2)
    streamed = streaming_variant(ds)
    assert streamed is not None
    assert ds._random_access
    assert not streamed._random_access
    assert [op.split(":")[0] for op in streamed._op_list()] == [
        "range", "kit_streamed", "map", "batch", "repeat"
    ]  # fmt: skip
    with iter(streamed) as it:
        next(it)
        state = it.get_state()["iterator"]
    assert set(state) == {"pass", "yielded", "parent", "seed"}
    assert state["parent"]["parent"]["parent"]["parent"] == {"index": 3, "seed": None}
    assert_elements_equal(tuple(streamed), tuple(ds))


def test_streaming_variant_streams_above_ops_that_need_random_access() -> None:
    ds = ps.Dataset.range(9).global_shuffle(seed=3).batch(2)
    streamed = streaming_variant(ds)
    assert streamed is not None
    assert [op.split(":")[0] for op in streamed._op_list()] == [
        "range", "global_shuffle", "kit_streamed", "batch"
    ]  # fmt: skip
    assert_elements_equal(tuple(streamed), tuple(ds))


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(ps.Dataset.range(5), id="source"),
        pytest.param(ps.Dataset.range(5).global_shuffle(seed=1), id="global-shuffle-on-top"),
        pytest.param(
            ps.Dataset.from_generator(lambda: iter([1, 2])).map(lambda x: x), id="streaming-source"
        ),
        pytest.param(_Broken(5, IndexIterator), id="op-without-streaming-path"),
    ],
)
def test_no_streaming_variant_where_nothing_would_stream(ds: ps.Dataset) -> None:
    assert streaming_variant(ds) is None


def test_broken_streaming_path_is_caught() -> None:
    ds = _TwoPaths(ps.Dataset.range(6), _PassIterator)
    assert_conformant(ds)
    forgetful = _TwoPaths(ps.Dataset.range(6), _ForgetfulIterator)
    assert_conformant(forgetful, variants=("prefetch",))  # the random-access path is right
    with pytest.raises(AssertionError, match=r"kit_streamed.*state after set_state differs"):
        assert_restorable_at_every_position(forgetful)
    with pytest.raises(AssertionError, match=r"elements differ.*kit_streamed"):
        assert_chained_resumes(_TwoPaths(ps.Dataset.range(30), _ForgetfulIterator))
    doubling = _TwoPaths(ps.Dataset.range(6), _DoublingIterator)
    with pytest.raises(AssertionError, match=r"the streaming path\) against the dataset"):
        assert_restorable_at_every_position(doubling)
    with pytest.raises(AssertionError, match=r"the streaming path\) against the dataset"):
        assert_epoch_boundaries(doubling)


def test_variants_see_the_seeds_the_dataset_drew() -> None:
    # seed=None: the variants' runs are compared with the dataset's in its drawn order.
    assert_conformant(ps.Dataset.range(12).shuffle(4).batch(2))
    assert_conformant(ps.Dataset.range(12).global_shuffle().map(lambda x: x + 1))


def test_variants_can_be_chosen() -> None:
    ds = _TwoPaths(ps.Dataset.range(6), _DoublingIterator)
    assert_restorable_at_every_position(ds, variants=())
    assert_restorable_at_every_position(ds, variants=["prefetch"])
    assert [name for name, _ in _variants.variants(ds, ("prefetch", "streaming"))] == [
        "streaming",
        "prefetch",
    ]
    with pytest.raises(ValueError, match="unknown variants"):
        assert_conformant(ds, variants=("parallel",))


Pair = collections.namedtuple("Pair", ["a", "b"])


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(ps.Dataset.range(9).batch(2), id="random-access"),
        pytest.param(
            ps.Dataset.zip(ps.Dataset.range(7), ps.Dataset.range(7).filter(_is_even)), id="tuples"
        ),
        pytest.param(
            ps.Dataset.from_tensor_slices(Pair(np.arange(5), np.arange(5.0))).shuffle(3),
            id="named-tuples-seedless",
        ),
    ],
)
def test_parallel_map_variant_is_asked_for_by_name(ds: ps.Dataset) -> None:
    ((name, variant),) = _variants.variants(ds, ("parallel_map",))
    assert name == "parallel_map"
    assert variant._op_name == "map"
    assert variant._background() is not None
    assert_conformant(ds, variants=("parallel_map",))


# ----------------------------------------------------------- state structure


class _GrowingState(IndexIterator):
    """An iterator whose state gains a key after the first element."""

    def _get_state(self) -> State:
        state = super()._get_state()
        if self._index:
            state["extra"] = 0
        return state

    def _set_state(self, state: State) -> None:
        super()._set_state({k: v for k, v in state.items() if k != "extra"})


class _IndexTurnsBool(IndexIterator):
    """An iterator whose index becomes a bool at the end."""

    def _get_state(self) -> State:
        state = super()._get_state()
        if self._index == self._length:
            state["index"] = True
        return state


def test_state_that_changes_structure_is_caught() -> None:
    with pytest.raises(AssertionError, match=r"structure changed: state\['iterator'\] has keys"):
        assert_restorable_at_every_position(_Broken(4, _GrowingState), variants=())
    with pytest.raises(
        AssertionError,
        match=r"\[.index.\] is a value of type bool, where another position has a value of type",
    ):
        assert_restorable_at_every_position(_Broken(4, _IndexTurnsBool), variants=())


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param({"x": None}, {"x": {"index": 1}}, id="empty-slot"),
        pytest.param({"x": np.arange(3)}, {"x": np.arange(5.0)}, id="array-buffer"),
        pytest.param({"x": [1, 2]}, {"x": np.arange(5)}, id="list-becomes-array"),
        pytest.param({"x": [b"a"]}, {"x": []}, id="list-buffer"),
        pytest.param({"p": [None, {"i": 1}]}, {"p": [{"i": 2}, None]}, id="slots"),
        pytest.param({"s": None}, {"s": "leaf"}, id="spec-of-an-empty-buffer"),
    ],
)
def test_state_structure_allows_buffers_and_empty_slots(a: State, b: State) -> None:
    merged = _state_structure.merge(_state_structure.structure(a), _state_structure.structure(b))
    assert _state_structure.merge(merged, _state_structure.structure(a)) == merged


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        pytest.param({"x": 1}, {"y": 1}, "has keys", id="keys"),
        pytest.param(
            {"x": 1},
            {"x": True},
            "is a value of type bool, where another position has a value of type int",
            id="bool",
        ),
        pytest.param({"x": 1}, {"x": np.int64(1)}, "type int64", id="numpy-scalar"),
        pytest.param({"x": 1}, {"x": "1"}, "type str", id="str"),
        pytest.param({"p": [{"i": 1}]}, {"p": [{"i": 1}, {"i": 1}]}, "list of 2 states", id="len"),
        pytest.param({"p": [{"i": 1}]}, {"p": [{"j": 1}]}, r"state\['p'\]\[0\]", id="nested"),
        pytest.param({"x": {"i": 1}}, {"x": np.arange(2)}, "is data", id="dict-becomes-data"),
    ],
)
def test_state_structure_rejects_other_changes(a: State, b: State, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        _state_structure.merge(_state_structure.structure(a), _state_structure.structure(b))
