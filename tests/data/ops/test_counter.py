"""``Dataset.counter``: an infinite random-access count (tf.data's ``Dataset.counter``)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.testing import assert_conformant, assert_restorable_at_every_position


@pytest.mark.parametrize(
    ("start", "step", "expected"),
    [(3, 4, [3, 7, 11]), (0, -1, [0, -1, -2]), (10, -10, [10, 0, -10])],
)
def test_counts_from_start_by_step(start: int, step: int, expected: list[int]) -> None:
    it = iter(ps.Dataset.counter(start, step))
    values = [next(it) for _ in expected]
    assert [int(v) for v in values] == expected
    assert all(type(v) is np.int64 for v in values)


def test_is_infinite_and_random_access() -> None:
    ds = ps.Dataset.counter(5, 2)
    assert ds.cardinality() == ps.data.INFINITE_CARDINALITY
    assert int(ds[1_000_000]) == 5 + 2_000_000
    with pytest.raises(TypeError, match="infinite"):
        len(ds)


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.float32, np.float64])
def test_dtype(dtype: type) -> None:
    batch = next(iter(ps.Dataset.counter(1, 3, dtype=dtype).batch(4)))
    np.testing.assert_array_equal(batch, np.array([1, 4, 7, 10], dtype=dtype))
    assert batch.dtype == np.dtype(dtype)


def test_conformance() -> None:
    assert_conformant(ps.Dataset.counter(7, 3).take(40))
    assert_restorable_at_every_position(ps.Dataset.counter(-5, 2), max_elements=60)


def test_restore_deep_into_the_count_is_one_index() -> None:
    ds = ps.Dataset.counter(0, 1).map(lambda x: x * 2)
    it = iter(ds)
    state = it.get_state()
    state["iterator"]["index"] = 10**12
    it.set_state(state)
    assert int(next(it)) == 2 * 10**12
    assert it.get_state()["iterator"] == {"index": 10**12 + 1, "seed": None}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"start": 1.5}, TypeError, "counter: start must be an integer"),
        ({"step": "2"}, TypeError, "counter: step must be an integer"),
        ({"start": 2**63}, ValueError, "counter: start must fit in int64"),
        ({"dtype": np.str_}, TypeError, "integer or float dtype"),
        ({"dtype": "no-such-dtype"}, TypeError, "must be a NumPy dtype"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        ps.Dataset.counter(**kwargs)  # type: ignore[arg-type]


PROPERTY_SOURCE = st.tuples(st.integers(-50, 50), st.integers(-3, 3), st.integers(0, 30)).map(
    lambda args: ps.Dataset.counter(args[0], args[1]).take(args[2])
)
