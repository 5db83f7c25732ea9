from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.errors import InvalidArgumentError, StateMismatchError
from pipestate.testing import assert_conformant, assert_elements_equal, roundtrip_state

from ._streaming import assert_paths_agree, filtered, state_after

D = ps.Dataset
UNKNOWN = ps.data.UNKNOWN_CARDINALITY


def batched(size: int) -> Any:
    """The ``flat_map`` function turning a window of scalars into one batch."""
    return lambda w: w.batch(size)


def lists(ds: ps.Dataset) -> list[list[int]]:
    return [x.tolist() for x in ds]


@pytest.mark.parametrize(
    ("size", "shift", "stride", "drop", "expected"),
    [
        (3, None, 1, False, [[0, 1, 2], [3, 4, 5], [6]]),
        (3, None, 1, True, [[0, 1, 2], [3, 4, 5]]),
        (3, 2, 1, False, [[0, 1, 2], [2, 3, 4], [4, 5, 6], [6]]),
        (3, 2, 2, False, [[0, 2, 4], [2, 4, 6], [4, 6], [6]]),
        (3, 2, 2, True, [[0, 2, 4], [2, 4, 6]]),
        (2, 5, 1, False, [[0, 1], [5, 6]]),
        (2, 4, 3, False, [[0, 3], [4]]),
        (10, 1, 1, True, []),
    ],
)
def test_windows_like_tf(
    size: int, shift: int | None, stride: int, drop: bool, expected: list[list[int]]
) -> None:
    op = lambda ds: ds.window(size, shift, stride, drop).flat_map(batched(size))  # noqa: E731
    assert [x.tolist() for x in assert_paths_agree(op, 7)] == expected
    windowed = D.range(7).window(size, shift, stride, drop)
    assert windowed.cardinality() == len(expected)
    assert windowed._random_access
    assert D.range(7).filter(bool).window(size).cardinality() == UNKNOWN


def test_tuple_and_dict_elements_give_tuples_and_dicts_of_datasets() -> None:
    pairs = D.zip(D.range(5), D.range(10, 15)).window(2)
    first = pairs[0]
    assert isinstance(first, tuple)
    assert all(isinstance(w, ps.Dataset) for w in first)
    ds = pairs.flat_map(lambda a, b: D.zip(a, b).batch(2))
    assert_elements_equal(list(ds)[-1], (np.array([4]), np.array([14])))
    dicts = D.from_tensor_slices({"b": np.arange(4), "a": np.arange(4.0)}).window(3)
    window = dicts[1]
    assert list(window) == ["b", "a"]
    assert [float(x) for x in window["a"]] == [3.0]


def test_windows_of_a_repeat_span_passes() -> None:
    ds = D.range(3).repeat(2).window(4, 1).flat_map(batched(4)).take(3)
    assert lists(ds) == [[0, 1, 2, 0], [1, 2, 0, 1], [2, 0, 1, 2]]


def test_infinite_input() -> None:
    ds = D.counter().window(2, 3)
    assert ds.cardinality() == ps.data.INFINITE_CARDINALITY
    assert lists(ds.flat_map(batched(2)).take(3)) == [[0, 1], [3, 4], [6, 7]]


def test_ragged_windows_batch_like_tf() -> None:
    ds = D.range(1, 4).map(lambda n: np.arange(int(n))).window(3, 1).flat_map(batched(3))
    with pytest.raises(InvalidArgumentError, match="cannot batch tensors with different shapes"):
        next(iter(ds))


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(D.range(11).window(3, 2, 2).flat_map(batched(3)), id="ra-stride"),
        pytest.param(D.range(11).window(2, 4).flat_map(batched(2)), id="ra-skip"),
        pytest.param(D.range(10).window(4, drop_remainder=True).flat_map(batched(4)), id="drop"),
        pytest.param(filtered(11).window(3, 2, 2).flat_map(batched(3)), id="streaming-stride"),
        pytest.param(filtered(11).window(2, 4).flat_map(batched(2)), id="streaming-skip"),
        pytest.param(
            filtered(9).window(3, 1).interleave(lambda w: w, cycle_length=2), id="interleave"
        ),
        pytest.param(
            D.zip(D.range(8), D.range(8).map(lambda x: x * 1.5))
            .window(3, 2)
            .flat_map(lambda a, b: D.zip(a, b).batch(3)),
            id="tuple",
        ),
        pytest.param(D.range(0).window(2).flat_map(batched(2)), id="empty"),
        pytest.param(D.range(9).shuffle(3, seed=2).window(2).flat_map(batched(2)), id="shuffled"),
        pytest.param(D.range(9).global_shuffle().window(3).flat_map(batched(3)), id="seedless"),
        pytest.param(D.range(3).repeat().window(2).flat_map(batched(2)).take(8), id="infinite"),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds, max_elements=30)


def test_random_access_state_is_one_index() -> None:
    ds = D.range(10**9).window(5, 3).flat_map(batched(5))
    it = iter(ds)
    for _ in range(4):
        next(it)
    inner = it.get_state()["iterator"]
    assert inner["parent"] == {"index": 4, "seed": None}  # windows read, by index
    assert ds.window(2)._random_access is False


def test_streaming_state_holds_the_next_windows_elements() -> None:
    ds = filtered(20).window(3, 2)
    state = state_after(ds, 2)
    assert state["skip"] == 0
    assert state["buffer"]["count"] == 1  # element 4 starts window 2
    assert isinstance(state["buffer"]["columns"][0], np.ndarray)
    skipping = state_after(filtered(20).window(2, 5), 1)
    assert (skipping["buffer"]["count"], skipping["skip"]) == (0, 3)


def test_streaming_windows_restore_from_a_checkpoint() -> None:
    ds = filtered(12).window(3, 1).flat_map(batched(3))
    it = iter(ds)
    next(it)
    fresh = iter(ds)
    fresh.set_state(roundtrip_state(it.get_state()))
    assert lists(fresh) == lists(it)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match=r"window: size must be >= 1, got size=0"):
        D.range(3).window(0)
    with pytest.raises(ValueError, match=r"window: shift must be >= 1, got shift=0"):
        D.range(3).window(2, 0)
    with pytest.raises(ValueError, match=r"window: stride must be >= 1, got stride=0"):
        D.range(3).window(2, 1, 0)
    with pytest.raises(TypeError, match=r"window: size must be an integer, got float 2.0"):
        D.range(3).window(2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"window: drop_remainder must be a bool"):
        D.range(3).window(2, drop_remainder="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"window: name must be a non-empty string"):
        D.range(3).window(2, name="")
    assert "name='w'" in repr(D.range(3).window(2, name="w"))


def test_malformed_streaming_state_names_the_op() -> None:
    ds = filtered(10).window(3, 5)
    it = iter(ds)
    next(it)
    state = it.get_state()
    state["iterator"]["skip"] = 9
    with pytest.raises(StateMismatchError, match=r"window: state\['skip'\]=9 is out of range"):
        it.set_state(state)
    state["iterator"]["skip"] = 2
    state["iterator"]["buffer"] = {"count": 1, "spec": "leaf", "columns": [[1, 2]]}
    with pytest.raises(StateMismatchError, match=r"window: element buffer column"):
        it.set_state(state)
    assert [int(x) for x in next(it)] == [5, 6, 7]


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.


def _rezip(*windows: Any) -> ps.Dataset:
    """The elements of a window again: its one dataset, or its component datasets zipped."""
    if len(windows) == 1 and isinstance(windows[0], ps.Dataset):
        return windows[0]
    return D.zip(windows if len(windows) > 1 else windows[0])


def _windows(size: int, shift: int, stride: int, drop: bool) -> Any:
    def op(ds: ps.Dataset) -> ps.Dataset:
        return ds.window(size, shift, stride, drop).flat_map(_rezip)

    return op


PROPERTY_OP = st.builds(
    _windows, st.integers(1, 4), st.integers(1, 5), st.integers(1, 3), st.booleans()
)
