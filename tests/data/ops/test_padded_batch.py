from __future__ import annotations

import collections
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.data._structure import map_structure
from pipestate.testing import assert_conformant, assert_elements_equal

D = ps.Dataset
Pair = collections.namedtuple("Pair", ["tokens", "label"])


def ragged(n: np.int64) -> np.ndarray:
    """``[n, n, ...]`` of length ``n``."""
    return np.full(int(n), n)


def is_odd(x: np.int64) -> bool:
    return bool(x % 2 == 1)


RAGGED = D.range(1, 5).map(ragged)


def test_pads_every_dimension_to_the_batch_maximum() -> None:
    batches = list(RAGGED.padded_batch(2))
    assert_elements_equal(batches[0], np.array([[1, 0], [2, 2]]))
    assert_elements_equal(batches[1], np.array([[3, 3, 3, 0], [4, 4, 4, 4]]))


def test_explicit_shape_and_padding_value() -> None:
    batches = list(RAGGED.padded_batch(3, padded_shapes=[5], padding_values=np.int64(-1)))
    assert_elements_equal(batches[1], np.array([[4, 4, 4, 4, -1]]))
    assert_elements_equal(
        next(iter(RAGGED.padded_batch(2, padded_shapes=3))), np.array([[1, 0, 0], [2, 2, 0]])
    )
    minus_one = [None], [-1], np.array([-1])
    for shape in minus_one:
        first = next(iter(RAGGED.padded_batch(2, padded_shapes=shape)))
        assert_elements_equal(first, np.array([[1, 0], [2, 2]]))


def test_python_padding_values_are_converted_to_the_component_dtype() -> None:
    ds = D.range(1, 3).map(lambda n: np.ones(int(n), np.float32)).padded_batch(2, padding_values=-1)
    assert_elements_equal(next(iter(ds)), np.array([[1, -1], [1, 1]], np.float32))


def test_two_dimensional_and_partially_fixed_shapes() -> None:
    ds = D.range(1, 4).map(lambda n: np.ones((int(n), 4 - int(n)), np.int32))
    batch = next(iter(ds.padded_batch(3, padded_shapes=[None, 3])))
    assert batch.shape == (3, 3, 3)
    assert batch.dtype == np.int32
    assert batch.sum() == 3 + 4 + 3  # shapes (1, 3), (2, 2), (3, 1)


def test_nested_elements_with_per_component_shapes_and_values() -> None:
    ds = D.range(1, 4).map(
        lambda n: {"tokens": np.arange(int(n)), "pair": (np.full((int(n), 2), 0.5), np.int64(n))}
    )
    batch = next(
        iter(
            ds.padded_batch(
                2,
                padded_shapes={"tokens": [4], "pair": ([None, 2], [])},
                padding_values={"tokens": np.int64(-1), "pair": (9.0, np.int64(0))},
            )
        )
    )
    assert_elements_equal(
        batch,
        {
            "tokens": np.array([[0, -1, -1, -1], [0, 1, -1, -1]]),
            "pair": (np.array([[[0.5, 0.5], [9, 9]], [[0.5, 0.5], [0.5, 0.5]]]), np.array([1, 2])),
        },
    )


def test_named_tuples_and_one_padding_value_for_all_components() -> None:
    ds = D.range(1, 4).map(lambda n: Pair(np.arange(int(n)), np.arange(int(n)) * 2))
    batch = next(iter(ds.padded_batch(2, padding_values=-7)))
    assert_elements_equal(batch, Pair(np.array([[0, -7], [0, 1]]), np.array([[0, -7], [0, 2]])))


def test_strings_pad_with_empty_strings_or_a_given_value() -> None:
    words = D.from_tensor_slices([b"a", b"bcd", b"ef"]).map(lambda w: np.array(list(bytes(w))))
    letters = D.from_tensor_slices([[b"a", b""], [b"bc", b"d"]]).map(lambda w: w[w != b""])
    assert_elements_equal(
        next(iter(letters.padded_batch(2))), np.array([[b"a", b""], [b"bc", b"d"]])
    )
    longer = next(iter(letters.padded_batch(2, padded_shapes=[3], padding_values=b"<pad>")))
    assert_elements_equal(longer, np.array([[b"a", b"<pad>", b"<pad>"], [b"bc", b"d", b"<pad>"]]))
    assert next(iter(words.padded_batch(3))).shape == (3, 3)


def test_bools_and_scalars() -> None:
    flags = D.range(1, 4).map(lambda n: np.ones(int(n), bool)).padded_batch(3)
    assert_elements_equal(next(iter(flags)), np.tri(3, dtype=bool))
    assert_elements_equal(list(D.range(5).padded_batch(2))[-1], np.array([4]))


def test_drop_remainder_and_cardinality() -> None:
    assert len(RAGGED.padded_batch(3)) == 2
    assert len(RAGGED.padded_batch(3, drop_remainder=True)) == 1
    assert len(list(RAGGED.padded_batch(3, drop_remainder=True))) == 1
    assert D.range(3).repeat().padded_batch(2).cardinality() == ps.data.INFINITE_CARDINALITY
    unknown = D.range(9).filter(is_odd).padded_batch(2)
    assert unknown.cardinality() == ps.data.UNKNOWN_CARDINALITY


def test_random_access_on_a_random_access_input() -> None:
    ds = D.range(1, 10).map(ragged).padded_batch(4)
    assert_elements_equal(ds[1], next(x for i, x in enumerate(ds) if i == 1))
    assert ds[-1].shape == (1, 9)
    state = iter(ds).get_state()["iterator"]
    assert state == {"index": 0, "seed": None}


def test_vectorised_input_is_padded_as_one_block() -> None:
    ds = D.from_tensor_slices(np.arange(12).reshape(6, 2)).padded_batch(4, padded_shapes=[3])
    assert_elements_equal(ds[0], np.array([[0, 1, 0], [2, 3, 0], [4, 5, 0], [6, 7, 0]]))
    plain = D.from_tensor_slices(np.arange(12).reshape(6, 2)).padded_batch(4)
    assert_elements_equal(plain[1], np.array([[8, 9], [10, 11]]))


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(D.range(1, 9).map(ragged).padded_batch(3), id="ra"),
        pytest.param(D.range(1, 9).map(ragged).padded_batch(3, drop_remainder=True), id="ra-drop"),
        pytest.param(
            D.range(1, 12).filter(is_odd).map(ragged).padded_batch(2, padded_shapes=[12]),
            id="streaming",
        ),
        pytest.param(
            D.range(1, 6)
            .map(lambda n: {"z": ragged(n), "a": (np.int64(n), np.ones((int(n), 2)))})
            .shuffle(2, seed=1)
            .padded_batch(2, padding_values={"z": -1, "a": (0, 0.5)}),
            id="dict-shuffled",
        ),
        pytest.param(D.range(1, 6).map(ragged).padded_batch(2).repeat(2), id="repeat-outside"),
        pytest.param(D.range(1, 6).map(ragged).repeat(2).padded_batch(4), id="repeat-inside"),
        pytest.param(D.range(1, 6).map(ragged).shuffle(2).padded_batch(2), id="seedless-shuffle"),
        pytest.param(
            D.range(1, 9).global_shuffle().map(ragged).padded_batch(3), id="seedless-global"
        ),
        pytest.param(D.range(0).map(ragged).padded_batch(3), id="empty"),
        pytest.param(D.range(1, 4).map(ragged).repeat().padded_batch(2).take(7), id="infinite"),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds, max_elements=40)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        pytest.param(
            {"batch_size": 0}, ValueError, "batch_size must be >= 1, got batch_size=0", id="0"
        ),
        pytest.param({"batch_size": 1.5}, TypeError, "batch_size must be an integer", id="float"),
        pytest.param(
            {"drop_remainder": 1}, TypeError, "drop_remainder must be a bool, got 1", id="drop"
        ),
        pytest.param(
            {"padded_shapes": [-2]},
            ValueError,
            r"padded dimensions must be >= 0, or None / -1 .* got -2 at padded_shapes\[0\]",
            id="dim",
        ),
        pytest.param(
            {"padded_shapes": {"a": [2.5]}},
            TypeError,
            r"padded_shapes must hold shapes .* got float 2.5 at padded_shapes\['a'\]\[0\]",
            id="float-dim",
        ),
        pytest.param(
            {"padded_shapes": np.zeros((2, 2), np.int64)},
            TypeError,
            r"a padded shape must be a 1-D integer array, got int64\[2, 2\]",
            id="array-shape",
        ),
        pytest.param(
            {"padding_values": np.array([1, 2])},
            ValueError,
            r"padding values must be scalars, got an array of shape \(2,\)",
            id="non-scalar",
        ),
        pytest.param(
            {"padding_values": ({"x": object()},)},
            TypeError,
            r"padding values must be scalars .* got object .* at padding_values\[0\]\['x'\]",
            id="object",
        ),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    args: dict[str, Any] = {"batch_size": 2, **kwargs}
    with pytest.raises(error, match=f"padded_batch: {message}"):
        RAGGED.padded_batch(**args)


@pytest.mark.parametrize(
    ("ds", "error", "message"),
    [
        pytest.param(
            RAGGED.padded_batch(4, padded_shapes=[3]),
            ValueError,
            r"an element has shape \(4,\) at the element, larger than its padded shape \[3\] "
            r"along axis 0; increase padded_shapes",
            id="too-large",
        ),
        pytest.param(
            RAGGED.padded_batch(2, padded_shapes=[3, 3]),
            ValueError,
            r"padded shape \[3, 3\] at padded_shapes does not fit components of rank 1",
            id="rank",
        ),
        pytest.param(
            D.range(1, 4).map(lambda n: np.zeros([1] * int(n))).padded_batch(3),
            ValueError,
            r"elements of one batch have different ranks at the element",
            id="ranks-differ",
        ),
        pytest.param(
            RAGGED.padded_batch(2, padding_values=np.int32(-1)),
            TypeError,
            r"padding value np.int32\(-1\) at padding_values has dtype int32, but the component "
            r"has dtype int64",
            id="numpy-dtype",
        ),
        pytest.param(
            RAGGED.padded_batch(2, padding_values=0.5),
            TypeError,
            r"padding value 0.5 at padding_values does not fit components of dtype int64",
            id="python-float-into-int",
        ),
        pytest.param(
            D.range(1, 3)
            .map(lambda n: np.ones(int(n), np.uint8))
            .padded_batch(2, padding_values=-1),
            TypeError,
            r"padding value -1 at padding_values does not fit components of dtype uint8",
            id="negative-into-unsigned",
        ),
        pytest.param(
            D.range(1, 3)
            .map(lambda n: (ragged(n), ragged(n)))
            .padded_batch(2, padded_shapes=[[3]]),
            ValueError,
            r"padded_shapes \[\[3\]\] does not match the element structure at the top level",
            id="structure",
        ),
        pytest.param(
            D.range(1, 3)
            .map(lambda n: ragged(n) if n == 1 else ragged(n).astype(np.float32))
            .padded_batch(2),
            TypeError,
            r"elements of one batch have different dtypes \['float32', 'int64'\]",
            id="dtypes-differ",
        ),
    ],
)
def test_bad_batches(ds: ps.Dataset, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=f"padded_batch: {message}"):
        list(ds)


def test_repr_and_fingerprint_show_the_settings() -> None:
    ds = RAGGED.padded_batch(2, padded_shapes=[-1], padding_values=np.int64(3))
    assert "padded_batch(batch_size=2, padded_shapes=[None], padding_values='int64(3)'" in repr(ds)
    assert ds.fingerprint == RAGGED.padded_batch(2, [None], np.int64(3)).fingerprint
    assert ds.fingerprint != RAGGED.padded_batch(2, [None], 3).fingerprint


# ------------------------------------------------------------------ tf.data parity
def _fill(dataset_class: Any) -> Any:
    if dataset_class is ps.Dataset:
        return lambda n, value: np.full(int(n), value, np.asarray(value).dtype)
    import tensorflow as tf

    return lambda n, value: tf.fill([n], value)


PARITY: dict[str, Any] = {
    "default": lambda d: d.range(1, 6).map(lambda n: _fill(d)(n, n)).padded_batch(2),
    "shape-and-value": lambda d: (
        d.range(1, 6)
        .map(lambda n: _fill(d)(n, n))
        .padded_batch(3, padded_shapes=[7], padding_values=np.int64(-1))
    ),
    "minus-one": lambda d: d.range(1, 6).map(lambda n: _fill(d)(n, n)).padded_batch(2, [-1]),
    "drop": lambda d: (
        d.range(1, 6)
        .map(lambda n: _fill(d)(n, np.float32(1.5)))
        .padded_batch(2, drop_remainder=True)
    ),
    "dict-tuple": lambda d: (
        d.range(1, 5)
        .map(lambda n: {"a": _fill(d)(n, n), "b": (_fill(d)(n, np.float32(2)), n)})
        .padded_batch(
            3,
            padded_shapes={"a": [None], "b": ([6], [])},
            padding_values={"a": np.int64(-1), "b": (np.float32(9), np.int64(0))},
        )
    ),
    "bool": lambda d: d.range(1, 4).map(lambda n: _fill(d)(n, True)).padded_batch(3),
    "scalars": lambda d: d.range(5).padded_batch(2),
    "strings": lambda d: (
        d.from_tensor_slices(np.array([b"a", b"bb", b"ccc"]))
        .map(lambda s: _fill(d)(2, s))
        .padded_batch(2, padded_shapes=[4])
    ),
    "random-access-slices": lambda d: d.from_tensor_slices(
        np.arange(12).reshape(6, 2)
    ).padded_batch(4, padded_shapes=[3]),
    "repeat-infinite": lambda d: (
        d.range(1, 4).map(lambda n: _fill(d)(n, n)).repeat().padded_batch(2).take(5)
    ),
}


def _normalise(leaf: Any) -> Any:
    array = np.asarray(leaf)
    if array.dtype == object:  # tf.data's strings
        return np.array(array.tolist(), dtype=bytes)
    return leaf


@pytest.mark.parametrize("name", sorted(PARITY))
def test_same_as_tf_data(name: str) -> None:
    tf = pytest.importorskip("tensorflow")
    ours, theirs = PARITY[name](D), PARITY[name](tf.data.Dataset)
    expected = [map_structure(_normalise, e) for e in theirs.as_numpy_iterator()]
    actual = list(ours)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert_elements_equal(a, e)
    assert ours.cardinality() == int(theirs.cardinality())


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.

PROPERTY_OP = st.integers(1, 4).flatmap(
    lambda k: st.sampled_from([True, False]).map(
        lambda d: lambda ds: ds.padded_batch(k, drop_remainder=d)
    )
)
