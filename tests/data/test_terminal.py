"""``reduce``, ``get_single_element`` and ``element_spec``: methods that read a dataset."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import numpy as np
import pytest

import pipestate as ps
from pipestate.data import TensorSpec
from pipestate.errors import InvalidArgumentError

from .ops._streaming import filtered

Pair = namedtuple("Pair", ["a", "b"])


# ----------------------------------------------------------------------- reduce
def test_reduce_sums() -> None:
    assert ps.Dataset.range(5).reduce(np.int64(0), lambda s, x: s + x) == 10
    assert type(ps.Dataset.range(5).reduce(0, lambda s, x: s + x)) is np.int64
    assert filtered(5).reduce(0, lambda s, x: s + x) == 10


def test_reduce_of_an_empty_dataset_is_the_initial_state() -> None:
    result = ps.Dataset.range(0).reduce((0, [1.5, 2.5]), lambda s, x: s)
    assert type(result[0]) is np.int64
    np.testing.assert_array_equal(result[1], [1.5, 2.5])


def test_reduce_passes_a_tuple_element_whole() -> None:
    ds = ps.Dataset.from_tensor_slices(([1, 2], [3, 4]))
    assert ds.reduce(0, lambda s, x: s + x[0] + x[1]) == 10


def test_reduce_keeps_structures_and_lets_shapes_change() -> None:
    ds = ps.Dataset.range(4)
    state = ds.reduce(
        {"count": 0, "seen": np.zeros(0, np.int64)},
        lambda s, x: {"count": s["count"] + 1, "seen": np.append(s["seen"], x)},
    )
    assert state["count"] == 4
    np.testing.assert_array_equal(state["seen"], [0, 1, 2, 3])
    pair = ds.reduce(Pair(0, 1), lambda s, x: Pair(s.a + x, s.b * 2))
    assert pair == Pair(6, 16)
    assert type(pair) is Pair


def test_reduce_reads_a_fresh_iterator_each_time() -> None:
    ds = ps.Dataset.range(3).shuffle(3, seed=1)
    assert ds.reduce(0, lambda s, x: s * 10 + x) == ds.reduce(0, lambda s, x: s * 10 + x)


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (lambda s, x: (s, s), "The structure of the new state must match the initial state"),
        (
            lambda s, x: np.float32(s),
            r"The element types for the new state must match the initial state. Expected "
            r"int64\[\] but got float32\[\]",
        ),
    ],
)
def test_reduce_state_must_keep_structure_and_dtypes(fn: Any, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        ps.Dataset.range(3).reduce(0, fn)


def test_reduce_errors() -> None:
    with pytest.raises(TypeError, match="reduce: reduce_func must be callable"):
        ps.Dataset.range(3).reduce(0, 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reduce: the dataset is infinite"):
        ps.Dataset.range(3).repeat().reduce(0, lambda s, x: s)
    with pytest.raises(TypeError, match="reduce: invalid initial_state"):
        ps.Dataset.range(3).reduce(None, lambda s, x: s)

    def fails(s: Any, x: Any) -> Any:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        ps.Dataset.range(3).reduce(0, fails)

    def stops(s: Any, x: Any) -> Any:
        raise StopIteration

    with pytest.raises(RuntimeError, match="StopIteration"):
        ps.Dataset.range(3).reduce(0, stops)


# ----------------------------------------------------------- get_single_element
def test_get_single_element() -> None:
    assert ps.Dataset.from_tensors(np.int64(3)).get_single_element() == 3
    element = ps.Dataset.from_tensors({"x": [1, 2]}).get_single_element(name="one")
    np.testing.assert_array_equal(element["x"], [1, 2])
    assert int(filtered(5).take(1).get_single_element()) == 0


@pytest.mark.parametrize(
    ("ds", "match"),
    [
        (ps.Dataset.range(0), r"^Dataset was empty\."),
        (ps.Dataset.range(2), r"^Dataset had more than one element\."),
        (ps.Dataset.range(2).repeat(), r"^Dataset had more than one element\."),
        (filtered(0), r"^Dataset was empty\."),
    ],
)
def test_get_single_element_errors(ds: ps.Dataset, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        ds.get_single_element()


def test_get_single_element_names_the_call() -> None:
    with pytest.raises(InvalidArgumentError, match=r"\(name: lookup\)"):
        ps.Dataset.range(0).get_single_element(name="lookup")
    with pytest.raises(TypeError, match="name must be a non-empty string"):
        ps.Dataset.range(1).get_single_element(name="")


# ----------------------------------------------------------------- element_spec
@pytest.mark.parametrize(
    ("ds", "spec"),
    [
        (ps.Dataset.range(3), TensorSpec((), np.int64)),
        (ps.Dataset.range(10).batch(3), TensorSpec((None,), np.int64)),
        (ps.Dataset.range(10).batch(3, drop_remainder=True), TensorSpec((3,), np.int64)),
        (ps.Dataset.range(9).batch(3), TensorSpec((3,), np.int64)),
        (
            ps.Dataset.from_tensor_slices((np.zeros((4, 2), np.float32), [b"a", b"b", b"c", b"d"])),
            (TensorSpec((2,), np.float32), TensorSpec((), "string")),
        ),
        (ps.Dataset.range(3).enumerate(), (TensorSpec((), np.int64), TensorSpec((), np.int64))),
        (ps.Dataset.range(8).batch(4).unbatch(), TensorSpec((), np.int64)),
        (ps.Dataset.range(8).filter(lambda x: x > 2).shuffle(3), TensorSpec((), np.int64)),
        (ps.Dataset.counter(dtype=np.float32).take(3), TensorSpec((), np.float32)),
    ],
)
def test_static_element_spec(ds: ps.Dataset, spec: Any) -> None:
    assert ds.element_spec == spec


def test_element_spec_from_the_first_element_keeps_positions() -> None:
    calls: list[int] = []

    def traced(x: Any) -> Any:
        calls.append(int(x))
        return {"value": x * 1.5, "row": np.zeros(3, np.int32)}

    ds = ps.Dataset.range(5).map(traced)
    it = iter(ds)
    assert int(next(it)["value"]) == 0
    spec = ds.element_spec
    assert spec == {"value": TensorSpec((), np.float64), "row": TensorSpec((3,), np.int32)}
    assert float(next(it)["value"]) == 1.5  # the iterator did not move
    calls.clear()
    assert ds.element_spec == spec
    assert not calls  # read once per dataset
    batched = ds.batch(2).element_spec
    assert batched == {
        "value": TensorSpec((None,), np.float64),
        "row": TensorSpec((None, 3), np.int32),
    }


def test_element_spec_of_an_empty_unknown_dataset_is_none() -> None:
    assert ps.Dataset.range(0).map(lambda x: x).element_spec is None


def test_element_spec_raises_the_first_elements_error() -> None:
    def fails(x: Any) -> Any:
        raise ValueError("bad first element")

    with pytest.raises(ValueError, match="bad first element"):
        ps.Dataset.range(3).map(fails).element_spec  # noqa: B018


def test_reduce_name_labels_its_errors() -> None:
    assert ps.Dataset.range(4).reduce(0, lambda s, x: s + x, name="total") == 6
    with pytest.raises(TypeError, match=r"reduce \(name: total\): The element types"):
        ps.Dataset.range(3).reduce(0, lambda s, x: np.float32(s), name="total")
    with pytest.raises(TypeError, match="reduce: name must be a non-empty string"):
        ps.Dataset.range(3).reduce(0, lambda s, x: s, name="")
