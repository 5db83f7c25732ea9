"""tf.data's ``counter_test.py`` (CounterTest) against pipestate and tf.data."""

from __future__ import annotations

import numpy as np
import pytest

from ._base import Backend


@pytest.mark.parametrize(
    ("start", "step", "expected_output"),
    [(3, 4, [3, 7, 11]), (0, -1, [0, -1, -2]), (10, -10, [10, 0, -10])],
)
def test_counter(backend: Backend, start: int, step: int, expected_output: list[int]) -> None:
    dataset = backend.Dataset.counter(start, step)
    assert backend.cardinality(dataset) == backend.INFINITE
    it = iter(dataset)
    for expected in expected_output:
        value = next(it)
        assert np.asarray(value).dtype == np.int64
        assert np.asarray(value).shape == ()
        assert int(value) == expected
