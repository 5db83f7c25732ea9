"""tf.data's ``ragged_batch_test.py`` against pipestate and TensorFlow.

A batch is compared as nested Python lists of its rows (``tf.RaggedTensor.to_list()``
against ``pipestate.data.RaggedBatch.to_list()``), so a component that one side
stacks (a shape TensorFlow knows statically) and the other keeps ragged compares
equal when their rows do.

Left out of tf.data's tests:
- the ``_make_ragged_ds`` input and testWithStructuredElements: tf.RaggedTensor and
  tf.sparse elements.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ._base import Backend, pipestate_differs

INNER_RAGGED = pipestate_differs(
    "docs/ops.md#structural-ops: ragged_batch makes only the first axis of a component ragged"
)


def _fill(backend: Backend, shape: Any) -> Any:
    if backend.is_tf:
        tf = backend.module
        return lambda x: tf.fill(shape(x), x)
    return lambda x: np.full([int(d) for d in shape(x)], x)


def _make(backend: Backend, kind: str, nrows: int) -> Any:
    ds = backend.Dataset.from_tensor_slices(np.arange(nrows))
    shapes = {
        "vector": lambda x: [x],
        "matrix1": lambda x: [x, 2],
        "matrix2": lambda x: [2, x],
        "fully-defined": lambda x: [2, 3],
        "5d": lambda x: [2, x, 3, 2 * x, 4],
    }
    if kind == "scalar":
        return ds
    if kind == "tuple":
        if backend.is_tf:
            tf = backend.module
            return ds.map(lambda x: (x, tf.range(x), tf.fill([x, 2], x)))
        return ds.map(lambda x: (x, np.arange(x), np.full((int(x), 2), x)))
    return ds.map(_fill(backend, shapes[kind]))


def _rows(value: Any) -> Any:
    if isinstance(value, tuple) and not hasattr(value, "to_list"):
        return tuple(_rows(v) for v in value)
    if hasattr(value, "to_list"):  # tf.RaggedTensor / pipestate RaggedBatch
        return [np.asarray(row).tolist() for row in value.to_list()]
    if hasattr(value, "numpy"):  # a tf.Tensor
        return value.numpy().tolist()
    return np.asarray(value).tolist()


KINDS = [
    "scalar",
    "vector",
    "matrix1",
    pytest.param("matrix2", marks=INNER_RAGGED),
    "fully-defined",
    pytest.param("5d", marks=INNER_RAGGED),
    "tuple",
]


@pytest.mark.parametrize("drop_remainder", [True, False])
@pytest.mark.parametrize("nrows", [0, 20, 23])
@pytest.mark.parametrize("kind", KINDS)
def test_basic(backend: Backend, kind: str, nrows: int, drop_remainder: bool) -> None:
    if nrows == 0 and kind in ("matrix2", "5d"):
        pytest.skip("no rows: nothing differs")
    dataset = _make(backend, kind, nrows)
    rows = [_rows(r) for r in dataset]
    batches = list(dataset.ragged_batch(4, drop_remainder))
    expected = []
    for start in range(0, nrows, 4):
        if start + 4 > nrows and drop_remainder:
            break
        chunk = rows[start : start + 4]
        expected.append(tuple(list(c) for c in zip(*chunk)) if kind == "tuple" else chunk)
    assert [_rows(b) for b in batches] == expected


def test_documented_example(backend: Backend) -> None:
    if backend.is_tf:
        tf = backend.module
        dataset = backend.Dataset.range(6).map(lambda x: tf.range(x))
    else:
        dataset = backend.Dataset.range(6).map(lambda x: np.arange(x))
    batches = list(dataset.ragged_batch(2))  # tf.RaggedTensor / RaggedBatch values
    assert [_rows(b) for b in batches] == [
        [[], [0]],
        [[0, 1], [0, 1, 2]],
        [[0, 1, 2, 3], [0, 1, 2, 3, 4]],
    ]
    splits = [np.asarray(b.row_splits) for b in batches]
    assert [s.tolist() for s in splits] == [[0, 0, 1], [0, 2, 5], [0, 4, 9]]
    assert all(s.dtype == np.int64 for s in splits)


def test_row_splits_dtype(backend: Backend) -> None:
    if backend.is_tf:
        tf = backend.module
        dataset = backend.Dataset.range(3).map(lambda x: tf.range(x))
        splits_dtype = tf.int32
    else:
        dataset = backend.Dataset.range(3).map(lambda x: np.arange(x))
        splits_dtype = np.int32
    (batch,) = list(dataset.ragged_batch(3, row_splits_dtype=splits_dtype))
    assert np.asarray(batch.row_splits).dtype == np.int32


def test_cardinality(backend: Backend) -> None:
    assert backend.cardinality(backend.Dataset.range(5).ragged_batch(2)) == 3
    assert backend.cardinality(backend.Dataset.range(5).ragged_batch(2, drop_remainder=True)) == 2
