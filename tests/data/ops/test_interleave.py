from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.data import _buffer
from pipestate.data.ops.interleave import DEFAULT_CYCLE_LENGTH
from pipestate.errors import ExternalStateError, StateMismatchError
from pipestate.testing import assert_conformant, assert_elements_equal, roundtrip_state

from .._strategies import inner

D = ps.Dataset


def copies(x: np.int64) -> ps.Dataset:
    return D.from_tensors(x).repeat(int(x))


def ints(ds: ps.Dataset) -> list[int]:
    return [int(x) for x in ds]


def is_odd(x: np.int64) -> bool:
    return bool(x % 2 == 1)


def test_order_is_tf_datas() -> None:
    # Values checked against tf.data 2.21 (see the parity tests at the bottom).
    ds = D.range(1, 6).interleave(copies, cycle_length=2, block_length=2)
    assert ints(ds) == [1, 2, 2, 3, 3, 3, 4, 4, 5, 5, 4, 4, 5, 5, 5]
    assert all(type(x) is np.int64 for x in ds)


def test_empty_inner_datasets_free_their_slot() -> None:
    ds = D.range(6).interleave(lambda x: D.range(x % 3), cycle_length=3)
    assert ints(ds) == [0, 0, 1, 0, 0, 1]


def test_cycle_length_larger_than_input_and_long_blocks() -> None:
    ds = D.range(3).interleave(
        lambda x: D.range(10 * x, 10 * x + 3), cycle_length=8, block_length=5
    )
    assert ints(ds) == [0, 1, 2, 10, 11, 12, 20, 21, 22]


def test_tuple_element_is_unpacked_into_map_func() -> None:
    ds = D.zip(D.range(3), D.range(10, 13)).interleave(
        lambda a, b: D.from_tensors(a + b).repeat(2), cycle_length=2
    )
    assert ints(ds) == [10, 12, 10, 12, 14, 14]


def test_cycle_length_none_is_a_fixed_default_whatever_the_core_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert DEFAULT_CYCLE_LENGTH == 4
    expected = ints(D.range(1, 9).interleave(copies, cycle_length=4))
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    default = D.range(1, 9).interleave(copies)
    assert ints(default) == expected
    autotune = D.range(1, 9).interleave(copies, cycle_length=ps.data.AUTOTUNE)
    assert default.fingerprint == autotune.fingerprint
    assert "cycle_length=4" in repr(default)
    # A state saved with cycle_length=None restores into cycle_length=4 (same definition).
    it = iter(default)
    head = [int(next(it)) for _ in range(7)]
    other = iter(D.range(1, 9).interleave(copies, cycle_length=4))
    other.set_state(it.get_state())
    assert head + ints_of(other) == expected


def ints_of(it: ps.data.DatasetIterator) -> list[int]:
    return [int(x) for x in it]


def test_block_length_none_means_one() -> None:
    a = D.range(1, 5).interleave(copies, cycle_length=2, block_length=None)  # type: ignore[arg-type]
    assert ints(a) == ints(D.range(1, 5).interleave(copies, cycle_length=2))


def test_cardinality_is_unknown_as_in_tf() -> None:
    for ds in (D.range(5), D.range(0), D.range(3).repeat()):
        assert ds.interleave(copies, cycle_length=2).cardinality() == ps.data.UNKNOWN_CARDINALITY
    with pytest.raises(TypeError, match="does not support random access"):
        D.range(3).interleave(copies)[0]


def nested_inner(x: np.int64) -> ps.Dataset:
    return D.range(int(x) + 1).interleave(lambda y: D.from_tensors(y).repeat(2), cycle_length=2)


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(D.range(1, 6).interleave(copies, cycle_length=2, block_length=2), id="ra"),
        pytest.param(
            D.range(1, 6).filter(is_odd).interleave(copies, cycle_length=2, block_length=2),
            id="streaming-input",
        ),
        pytest.param(
            D.range(5).interleave(lambda x: D.range(x).filter(is_odd).repeat(2), cycle_length=3),
            id="streaming-inner",
        ),
        pytest.param(D.range(1, 4).interleave(copies, cycle_length=2).repeat(2), id="repeat"),
        pytest.param(
            D.range(1, 4).repeat(2).interleave(copies, cycle_length=3, block_length=2),
            id="repeated-input",
        ),
        pytest.param(
            D.range(4).shuffle(3, seed=4).interleave(lambda x: D.range(x).shuffle(2, seed=1)),
            id="seeded-shuffles",
        ),
        pytest.param(
            D.range(4).interleave(lambda x: D.range(x).shuffle(3), cycle_length=2),
            id="seedless-inner-shuffle",
        ),
        pytest.param(
            D.range(5).global_shuffle().interleave(lambda x: D.range(x, 2 * x), cycle_length=2),
            id="seedless-outer-global-shuffle",
        ),
        pytest.param(
            D.range(4)
            .interleave(lambda x: D.range(x + 2).global_shuffle(), cycle_length=2)
            .repeat(2),
            id="seedless-inner-global-shuffle-repeat",
        ),
        pytest.param(D.range(4).interleave(nested_inner, cycle_length=2), id="nested"),
        pytest.param(
            D.from_tensor_slices({"n": np.arange(1, 3), "w": np.arange(2.0)})
            .filter(lambda d: True)
            .interleave(
                lambda d: D.from_tensors({"z": d["w"], "a": (d["n"],)}).repeat(int(d["n"])),
                cycle_length=2,
            ),
            id="dict-elements-streaming",
        ),
        pytest.param(
            D.zip(D.range(3), D.range(3)).interleave(
                lambda a, b: D.zip(D.range(a + 1), D.range(b + 1)), cycle_length=2
            ),
            id="tuple-elements",
        ),
        pytest.param(D.range(0).interleave(copies), id="empty-input"),
        pytest.param(D.range(4).interleave(lambda x: D.range(0), cycle_length=2), id="empty-inner"),
        pytest.param(
            D.range(1, 4).repeat().interleave(copies, cycle_length=2, block_length=3).take(25),
            id="infinite-input-take",
        ),
        pytest.param(
            D.range(3).interleave(lambda x: D.from_tensors(x).repeat(), cycle_length=2).take(12),
            id="infinite-inner-take",
        ),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds, max_elements=60)


def test_seedless_inner_ops_differ_per_iterator_and_restore_exactly() -> None:
    ds = D.range(4).interleave(lambda x: D.range(20).shuffle(20), cycle_length=2)
    first, second = ints(ds), ints(ds)
    assert first != second
    assert sorted(first) == sorted(second)
    it = iter(ds)
    for _ in range(5):
        next(it)
    state = roundtrip_state(it.get_state())
    inner = state["iterator"]["slots"][0]["state"]
    assert isinstance(inner["seed"], int)  # the inner iterator's own derived seed
    rest = ints_of(it)
    fresh = iter(ds)
    fresh.set_state(state)
    assert ints_of(fresh) == rest


def test_seeded_inner_ops_are_the_same_every_iteration() -> None:
    ds = D.range(3).interleave(lambda x: D.range(10).shuffle(10, seed=5), cycle_length=3)
    assert ints(ds) == ints(ds)
    state = iter(ds).get_state()
    assert all(slot is None for slot in state["iterator"]["slots"])


def test_state_over_random_access_input_saves_indices_not_elements() -> None:
    images = np.arange(16 * 8 * 4096, dtype=np.float32).reshape(16, 8, 4096)
    ds = D.from_tensor_slices(images).interleave(
        lambda image: D.from_tensor_slices(image), cycle_length=4, block_length=3
    )
    it = iter(ds)
    for _ in range(50):
        next(it)
    state = it.get_state()
    inner = state["iterator"]
    assert inner["elements"] is None
    assert [slot["index"] for slot in inner["slots"]] == [4, 5, 6, 7]
    assert all(set(slot["state"]) == {"index", "seed"} for slot in inner["slots"])
    assert len(json.dumps(state)) < 1500  # four open images of 128 KiB each are not in it
    fresh = iter(ds)
    fresh.set_state(state)
    rest = list(fresh)
    assert len(rest) == 16 * 8 - 50
    assert_elements_equal(rest[-1], images[15, 7])


def test_state_over_streaming_input_saves_the_open_slots_elements() -> None:
    ds = D.range(10).filter(is_odd).interleave(lambda x: D.range(x), cycle_length=2)
    it = iter(ds)
    for _ in range(4):
        next(it)
    inner = it.get_state()["iterator"]
    assert [slot["index"] for slot in inner["slots"]] == [2, 1]
    assert inner["elements"]["count"] == 2
    assert inner["elements"]["columns"][0].tolist() == [5, 3]


def test_exhausted_inner_iterators_are_closed() -> None:
    ds = D.range(3).interleave(lambda x: D.range(2), cycle_length=3)
    it = iter(ds)
    ints_of(it)
    assert it.get_state()["iterator"]["slots"] == [None, None, None]


def test_map_func_must_return_a_dataset() -> None:
    ds = D.range(3).interleave(lambda x: x * 2, cycle_length=2)  # type: ignore[arg-type,return-value]
    with pytest.raises(
        TypeError,
        match=r"interleave: map_func .*<lambda> must return a pipestate Dataset, got int64",
    ):
        next(iter(ds))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        pytest.param({"map_func": 3}, TypeError, "map_func must be callable, got int 3", id="fn"),
        pytest.param(
            {"cycle_length": 0}, ValueError, "cycle_length must be >= 1.*got cycle_length=0", id="0"
        ),
        pytest.param(
            {"cycle_length": -2},
            ValueError,
            "cycle_length must be >= -1, got cycle_length=-2",
            id="negative",
        ),
        pytest.param(
            {"cycle_length": 2.0},
            TypeError,
            "cycle_length must be an integer, got float 2.0",
            id="float",
        ),
        pytest.param(
            {"block_length": 0},
            ValueError,
            "block_length must be >= 1, got block_length=0",
            id="block-0",
        ),
        pytest.param(
            {"block_length": "2"},
            TypeError,
            "block_length must be an integer, got str '2'",
            id="block-str",
        ),
        pytest.param({"stateful": "yes"}, TypeError, "stateful must be a bool", id="stateful"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    args: dict[str, Any] = {"map_func": copies, **kwargs}
    with pytest.raises(error, match=f"interleave: {message}"):
        D.range(3).interleave(**args)


def test_stateful_map_func_is_external_state() -> None:
    ds = D.range(3).interleave(copies, stateful=True)
    with pytest.raises(ExternalStateError, match=r"interleave\(map_func='copies'.*stateful"):
        iter(ds).get_state()


def _state_after(ds: ps.Dataset, count: int) -> tuple[ps.data.DatasetIterator, dict[str, Any]]:
    it = iter(ds)
    for _ in range(count):
        next(it)
    return it, it.get_state()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        pytest.param(
            lambda s: s["slots"].pop(),
            r"interleave: state\['slots'\] must be a list of 2",
            id="len",
        ),
        pytest.param(
            lambda s: s.update(block_index=5),
            r"interleave: state\['block_index'\]=5 is out of",
            id="block",
        ),
        pytest.param(
            lambda s: s["slots"][0].update(index=9),
            r"interleave: state\['slots'\]\[0\]: state\['index'\]=9 is out of range",
            id="slot-index",
        ),
        pytest.param(
            lambda s: s["slots"][0]["state"].update(index="x"),
            r"interleave: state\['slots'\]\[0\]: StateMismatchError: "
            r"repeat: state\['index'\] must be",
            id="inner-state",
        ),
        pytest.param(
            lambda s: s["slots"][0].update(fingerprint="0" * 16),
            r"interleave: state\['slots'\]\[0\]: map_func returned .* a different pipeline",
            id="inner-definition",
        ),
        pytest.param(
            lambda s: s.update(elements=[1]),
            r"interleave: state\['elements'\] must be None for a random-access input",
            id="elements",
        ),
        pytest.param(lambda s: s.pop("consumed"), r"interleave: iterator state keys", id="keys"),
    ],
)
def test_malformed_state_names_the_op(edit: Any, message: str) -> None:
    ds = D.range(1, 6).interleave(copies, cycle_length=2)
    it, state = _state_after(ds, 4)
    assert None not in state["iterator"]["slots"]
    edit(state["iterator"])
    expected = ints_of(_state_after(ds, 4)[0])
    with pytest.raises(StateMismatchError, match=message):
        it.set_state(state)
    assert ints_of(it) == expected  # the failed restore left the position alone


def test_streaming_state_with_wrong_element_count_is_refused() -> None:
    ds = D.range(10).filter(is_odd).interleave(lambda x: D.range(x), cycle_length=2)
    _, state = _state_after(ds, 4)
    state["iterator"]["elements"] = _buffer.pack([np.int64(1)], "x")
    with pytest.raises(StateMismatchError, match=r"holds 1 input elements for 2 open slots"):
        iter(ds).set_state(state)


# ------------------------------------------------------------------ tf.data parity
PARITY: dict[str, Any] = {
    "cycle2-block2": lambda d: d.range(1, 6).interleave(
        lambda x: d.from_tensors(x).repeat(x), cycle_length=2, block_length=2
    ),
    "cycle3-block1-empty-inner": lambda d: d.range(8).interleave(
        lambda x: d.range(x % 4), cycle_length=3
    ),
    "cycle1": lambda d: d.range(4).interleave(lambda x: d.range(x), cycle_length=1),
    "cycle-beyond-input": lambda d: d.range(3).interleave(
        lambda x: d.range(x * 10, x * 10 + 4), cycle_length=7, block_length=3
    ),
    "block-beyond-inner": lambda d: d.range(1, 7).interleave(
        lambda x: d.range(x), cycle_length=4, block_length=10
    ),
    "tuple-unpacked": lambda d: d.zip(d.range(4), d.range(10, 14)).interleave(
        lambda a, b: d.from_tensors((a, b)).repeat(2), cycle_length=3, block_length=2
    ),
    "dict": lambda d: d.from_tensor_slices({"k": np.arange(1, 5)}).interleave(
        lambda e: d.from_tensors({"v": e["k"] * 2}).repeat(e["k"]), cycle_length=2
    ),
    "nested": lambda d: d.range(4).interleave(
        lambda x: d.range(x + 2).interleave(
            lambda y: d.from_tensors(y).repeat(2), cycle_length=2, block_length=1
        ),
        cycle_length=2,
        block_length=3,
    ),
    "repeat-batch": lambda d: (
        d.range(1, 4).interleave(lambda x: d.range(x), cycle_length=2).repeat(2).batch(4)
    ),
    "infinite-take": lambda d: (
        d.range(1, 4)
        .repeat()
        .interleave(lambda x: d.from_tensors(x).repeat(x), cycle_length=2, block_length=2)
        .take(20)
    ),
}


def _tf_values(dataset: Any) -> list[Any]:
    return list(dataset.as_numpy_iterator())


@pytest.mark.parametrize("name", sorted(PARITY))
def test_same_as_tf_data(name: str) -> None:
    tf = pytest.importorskip("tensorflow")
    ours, theirs = PARITY[name](D), PARITY[name](tf.data.Dataset)
    expected = _tf_values(theirs)
    actual = list(ours)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert_elements_equal(a, e)
    assert ours.cardinality() == int(theirs.cardinality())


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.

PROPERTY_OP = st.integers(1, 3).flatmap(
    lambda c: st.integers(1, 3).map(lambda b: lambda ds: ds.interleave(inner, c, b))
)


# ------------------------------------------------------- num_parallel_calls
def _numbers(x: Any) -> ps.Dataset:
    return ps.Dataset.range(int(x) % 4 + 1).map(lambda y: x * 10 + y)


def _lines(x: Any) -> ps.Dataset:
    return ps.Dataset.range(int(x) % 3 + 2).filter(lambda y: y != 1)


@pytest.mark.parametrize("make_inner", [_numbers, _lines], ids=["random-access", "streaming"])
@pytest.mark.parametrize("threads", [1, 3, ps.data.AUTOTUNE])
def test_parallel_interleave_equals_sequential(make_inner: Any, threads: int) -> None:
    sequential = ps.Dataset.range(9).interleave(make_inner, cycle_length=3, block_length=2)
    parallel = ps.Dataset.range(9).interleave(
        make_inner, cycle_length=3, block_length=2, num_parallel_calls=threads
    )
    assert [int(x) for x in parallel] == [int(x) for x in sequential]
    assert parallel.fingerprint == sequential.fingerprint
    assert_conformant(parallel)


def test_parallel_interleave_state_restores_without_threads() -> None:
    parallel = ps.Dataset.range(9).interleave(_numbers, cycle_length=3, num_parallel_calls=3)
    sequential = ps.Dataset.range(9).interleave(_numbers, cycle_length=3)
    it = iter(parallel)
    head = [int(next(it)) for _ in range(7)]
    state = it.get_state()
    it.close()
    other = iter(sequential)
    other.set_state(state)
    assert head + [int(x) for x in other] == [int(x) for x in sequential]


def test_deterministic_is_accepted_and_keeps_the_order() -> None:
    expected = [int(x) for x in ps.Dataset.range(6).interleave(_numbers, cycle_length=2)]
    ds = ps.Dataset.range(6).interleave(
        _numbers, cycle_length=2, num_parallel_calls=2, deterministic=False, name="mix"
    )
    assert [int(x) for x in ds] == expected
    assert repr(ds).endswith(
        "interleave(map_func='_numbers', cycle_length=2, block_length=1, num_parallel_calls=2, "
        "deterministic=False, name='mix')"
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_parallel_calls": 0}, ValueError, "interleave: num_parallel_calls must be >= 1"),
        ({"num_parallel_calls": 1.5}, TypeError, "interleave: num_parallel_calls must be a"),
        ({"deterministic": "yes"}, TypeError, "interleave: deterministic must be a bool"),
        (
            {"cycle_length": 2, "num_parallel_calls": 3},
            ValueError,
            "`num_parallel_calls` is 3 and `cycle_length` is 2",
        ),
    ],
)
def test_bad_parallel_arguments(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        ps.Dataset.range(3).interleave(_numbers, **kwargs)
