"""tf.data's ``range_test.py`` (RangeTest, RangeCheckpointTest) against pipestate and tf.data.

TensorFlow spells the dtype argument ``output_type``, pipestate ``dtype``;
``_range`` passes the right one. Left out:
- the graph-mode ``_variant_tensor`` evaluation of testZeroStep: the error is
  checked when the dataset is built or first iterated instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ._base import Backend

DTYPES = [np.int32, np.int64, np.float32, np.float64]


def _range(backend: Backend, *args: int, dtype: Any) -> Any:
    if backend.is_tf:
        return backend.Dataset.range(*args, output_type=backend.module.as_dtype(dtype))
    return backend.Dataset.range(*args, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(
    "args",
    [(5,), (2, 5), (2, 10, 2), (2, 10, -1), (10, 2), (10, 2, 2), (10, 2, -1)],
    ids=[
        "stop",
        "start-stop",
        "start-stop-step",
        "negative-step",
        "stop-less-than-start",
        "stop-less-than-start-positive-step",
        "stop-less-than-start-negative-step",
    ],
)
def test_range(backend: Backend, args: tuple[int, ...], dtype: Any) -> None:
    dataset = _range(backend, *args, dtype=dtype)
    expected = np.arange(*args, dtype=dtype)
    backend.assert_produces(dataset, expected_output=list(expected))
    assert backend.cardinality(dataset) == len(expected)


def test_default_dtype_is_int64(backend: Backend) -> None:
    backend.assert_produces(
        backend.Dataset.range(3), expected_output=list(np.arange(3, dtype=np.int64))
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_zero_step(backend: Backend, dtype: Any) -> None:
    backend.assert_raises_when_built_or_read(
        lambda: _range(backend, 2, 10, 0, dtype=dtype), (backend.InvalidArgumentError, ValueError)
    )


def test_range_checkpoint_core(backend: Backend) -> None:
    backend.run_core_tests(lambda: backend.Dataset.range(2, 10), 8)
