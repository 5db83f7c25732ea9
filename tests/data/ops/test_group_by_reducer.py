from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.errors import StateMismatchError
from pipestate.testing import assert_conformant, assert_elements_equal

from .._strategies import total
from ._streaming import filtered

D = ps.Dataset


def count_reducer() -> ps.data.Reducer:
    return ps.data.Reducer(lambda key: np.int64(0), lambda n, x: n + 1, lambda n: n)


def collect_reducer() -> ps.data.Reducer:
    return ps.data.Reducer(
        lambda key: (key, np.zeros(0, np.int64)),
        lambda s, x: (s[0], np.append(s[1], x)),
        lambda key, seen: {"key": key, "seen": seen},
    )


def mod3(x: Any) -> Any:
    return x % 3


def test_one_output_per_key_in_key_order() -> None:
    ds = D.from_tensor_slices(np.array([5, 3, 5, 1, 3, 9])).group_by_reducer(
        lambda x: x, ps.data.Reducer(lambda k: np.int64(0), lambda s, x: s + x, lambda s: s)
    )
    assert [int(x) for x in ds] == [1, 6, 10, 9]
    assert ds.cardinality() == ps.data.UNKNOWN_CARDINALITY


def test_structured_states_and_finalize_unpacks_a_tuple() -> None:
    values = list(D.range(7).group_by_reducer(mod3, collect_reducer()))
    assert_elements_equal(values[1], {"key": np.int64(1), "seen": np.array([1, 4])})
    assert len(values) == 3


def test_reduce_func_gets_the_whole_element() -> None:
    reducer = ps.data.Reducer(
        lambda k: np.int64(0), lambda s, pair: s + pair[0] * pair[1], lambda s: s
    )
    ds = D.zip(D.range(4), D.range(4)).group_by_reducer(lambda a, b: a % 2, reducer)
    assert [int(x) for x in ds] == [0 + 4, 1 + 9]


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(D.range(10).group_by_reducer(mod3, count_reducer()), id="ra"),
        pytest.param(filtered(10).group_by_reducer(mod3, collect_reducer()), id="streaming"),
        pytest.param(D.range(0).group_by_reducer(mod3, count_reducer()), id="empty"),
        pytest.param(
            D.range(9).shuffle(4, seed=2).group_by_reducer(mod3, collect_reducer()), id="shuffled"
        ),
        pytest.param(D.range(6).group_by_reducer(mod3, count_reducer()).repeat(2), id="repeat"),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds, max_elements=30)


def test_state_holds_each_keys_reduction_state() -> None:
    it = iter(D.range(100).group_by_reducer(mod3, count_reducer()))
    assert int(next(it)) == 34
    state = it.get_state()["iterator"]
    assert state["keys"] == [0, 1, 2]
    assert state["states"] == [[{"dtype": "<i8", "shape": [], "data": [n]}] for n in (34, 33, 33)]
    assert state["produced"] == 1
    fresh = iter(D.range(100).group_by_reducer(mod3, count_reducer()))
    fresh.set_state(json.loads(json.dumps(it.get_state())))
    assert [int(x) for x in fresh] == [33, 33]


def test_invalid_arguments_and_functions() -> None:
    with pytest.raises(TypeError, match=r"Reducer: reduce_func must be callable, got int 3"):
        ps.data.Reducer(lambda k: 0, 3, lambda s: s)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"group_by_reducer: reducer must be a pipestate.data.Red"):
        D.range(3).group_by_reducer(mod3, (1, 2, 3))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"group_by_reducer: key_func must be callable"):
        D.range(3).group_by_reducer(None, count_reducer())  # type: ignore[arg-type]
    changing = ps.data.Reducer(lambda k: np.int64(0), lambda s, x: s * 0.5, lambda s: s)
    with pytest.raises(TypeError, match=r"must keep the initial state's structure and dtypes"):
        next(iter(D.range(3).group_by_reducer(mod3, changing)))
    with pytest.raises(TypeError, match=r"key_func .* must return a scalar int64, got str"):
        next(iter(D.range(3).group_by_reducer(lambda x: "a", count_reducer())))
    with pytest.raises(ValueError, match=r"the input is infinite, but group_by_reducer reads"):
        D.range(3).repeat().group_by_reducer(mod3, count_reducer())
    assert "Reducer(" in repr(count_reducer())
    assert "name='r'" in repr(D.range(3).group_by_reducer(mod3, count_reducer(), name="r"))


def test_malformed_state_names_the_op() -> None:
    ds = D.range(10).group_by_reducer(mod3, count_reducer())
    it = iter(ds)
    next(it)
    good = it.get_state()
    for key, value, message in [
        ("keys", [2, 1, 0], r"state\['keys'\] must be increasing int keys"),
        ("states", [[], [], []], r"of key 0 must be a list of 1 leaves"),
        ("produced", 4, r"state\['produced'\]=4 is out of range"),
    ]:
        bad = {**good, "iterator": {**good["iterator"], key: value}}
        with pytest.raises(StateMismatchError, match=message):
            it.set_state(bad)
    bad_leaf = [[{"dtype": "<f8", "shape": [], "data": [1.5]}]] * 3
    with pytest.raises(StateMismatchError, match=r"init_func gave int64\[\] for key 0"):
        it.set_state({**good, "iterator": {**good["iterator"], "states": bad_leaf}})
    assert [int(x) for x in it] == [3, 3]


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.


def _reduced(modulus: int) -> Any:
    reducer = ps.data.Reducer(
        lambda key: (np.int64(0), np.int64(0)),
        lambda s, element: (s[0] + 1, s[1] + total((element,))),
        lambda count, summed: (count, summed),
    )
    return lambda ds: ds.group_by_reducer(lambda *args: total(args) % modulus, reducer)


PROPERTY_OP = st.builds(_reduced, st.integers(1, 4))
