"""tf.data's ``assert_cardinality_test.py`` against pipestate and TensorFlow.

tf.data spells the op ``ds.apply(tf.data.experimental.assert_cardinality(n))``,
pipestate ``ds.assert_cardinality(n)``.
"""

from __future__ import annotations

from typing import Any

import pytest

from ._base import Backend


def _assert_cardinality(backend: Backend, dataset: Any, expected: int) -> Any:
    if backend.is_tf:
        return dataset.apply(backend.data.experimental.assert_cardinality(expected))
    return dataset.assert_cardinality(expected)


def _failed_precondition(backend: Backend) -> type[Exception]:
    if backend.is_tf:
        error: type[Exception] = backend.module.errors.FailedPreconditionError
        return error
    import pipestate.errors

    return pipestate.errors.FailedPreconditionError


def test_correct_cardinality(backend: Backend) -> None:
    dataset = backend.Dataset.range(10).filter(lambda x: True)
    assert backend.cardinality(dataset) == backend.UNKNOWN
    backend.assert_produces(dataset, list(range(10)))
    dataset = _assert_cardinality(backend, dataset, 10)
    assert backend.cardinality(dataset) == 10
    backend.assert_produces(dataset, list(range(10)))


INFINITE = -1


@pytest.mark.parametrize(
    ("num_elements", "asserted_cardinality", "expected_error"),
    [
        (
            10,
            20,
            "Input dataset was expected to contain 20 elements but contained only 10 elements.",
        ),
        (1, 20, "Input dataset was expected to contain 20 elements but contained only 1 element."),
        (
            10,
            INFINITE,
            "Input dataset was expected to contain an infinite number of elements but contained "
            "only 10 elements.",
        ),
        (
            1,
            INFINITE,
            "Input dataset was expected to contain an infinite number of elements but contained "
            "only 1 element.",
        ),
        (
            10,
            5,
            "Input dataset was expected to contain 5 elements but contained at least 6 elements.",
        ),
        (
            10,
            1,
            "Input dataset was expected to contain 1 element but contained at least 2 elements.",
        ),
    ],
)
def test_incorrect_cardinality(
    backend: Backend, num_elements: int, asserted_cardinality: int, expected_error: str
) -> None:
    dataset = _assert_cardinality(
        backend, backend.Dataset.range(num_elements), asserted_cardinality
    )
    with pytest.raises(_failed_precondition(backend), match=expected_error):
        backend.outputs(dataset)


# AssertCardinalityDatasetCheckpointTest


def test_checkpoint_cardinality(backend: Backend) -> None:
    def build() -> Any:
        return _assert_cardinality(backend, backend.Dataset.range(200), 200)

    backend.run_core_tests(build, 200)
