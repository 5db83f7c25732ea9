"""tf.data's ``padded_batch_test.py`` (PaddedBatchTest, PaddedBatchCheckpointTest).

The map functions build the padded rows with ``tf.fill`` / ``tf.strings.as_string``
on TensorFlow and their NumPy equivalents on pipestate.

Left out:
- testPaddedBatchSparseError, testPaddedBatchRaggedError: sparse and ragged
  tensors are TensorFlow types.
- the graph-mode placeholder variants of the shape-specification tests
  (testSkipEagerPaddedBatchDatasetShapeSpecifications,
  testSkipEagerPaddedBatchShapeError): TF1 placeholders.
- padded shapes given as ``tf.TensorShape`` or tensors: TensorFlow types
  (the list and ``-1`` / ``None`` spellings are tested).
- testName: the ``name=`` argument is tf.data's graph-naming machinery.

Translated with pipestate's documented error types: a row longer than its
padded shape is tf.data's ``DataLossError`` and pipestate's ``ValueError``
(docs/ops.md#padded_batchbatch_size-padded_shapesnone-padding_valuesnone-drop_remainderfalse),
and shape checks tf.data makes when the dataset is built pipestate makes
while iterating (it has no static element spec).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ._base import Backend, verify_fns


def _fill(backend: Backend) -> Any:
    if backend.is_tf:
        tf = backend.module
        return lambda x: tf.fill([x], x)
    return lambda x: np.full(x, x)


def _fill_tuple(backend: Backend) -> Any:
    if backend.is_tf:
        tf = backend.module

        def fill_tuple(x: Any) -> Any:
            filled = tf.fill([x], x)
            return filled, tf.strings.as_string(filled)

        return fill_tuple

    def fill_tuple_np(x: Any) -> Any:
        return np.full(x, x), np.full(x, str(x).encode())

    return fill_tuple_np


def _seq_lens(count: int, low: int = 0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, 20, size=(count,)).astype(np.int32)


def _expected_batches(
    seq_lens: np.ndarray, batch_size: int, padded_len: int | None, drop_remainder: bool
) -> list[np.ndarray]:
    batches = []
    for start in range(0, len(seq_lens), batch_size):
        lens = seq_lens[start : start + batch_size]
        if drop_remainder and len(lens) < batch_size:
            break
        width = padded_len if padded_len is not None else int(lens.max(initial=0))
        batch = np.zeros((len(lens), width), np.int32)
        for row, n in enumerate(lens):
            batch[row, :n] = n
        batches.append(batch)
    return batches


@pytest.mark.parametrize(
    ("count", "batch_size", "padded_shapes", "drop_remainder"),
    [
        (32, 4, [-1], False),
        (32, 4, [25], False),
        (34, 4, [-1], False),
        (34, 4, [-1], True),
        (32, 4, [None], False),
    ],
    ids=[
        "default-padding",
        "constant-padding",
        "uneven-with-remainder",
        "uneven-without-remainder",
        "none-padding",
    ],
)
def test_padded_batch_dataset(
    backend: Backend, count: int, batch_size: int, padded_shapes: list[Any], drop_remainder: bool
) -> None:
    seq_lens = _seq_lens(count)
    dataset = (
        backend.Dataset.from_tensor_slices(seq_lens)
        .map(_fill(backend))
        .padded_batch(
            batch_size=batch_size, drop_remainder=drop_remainder, padded_shapes=padded_shapes
        )
    )
    padded_len = padded_shapes[0] if padded_shapes[0] not in (None, -1) else None
    expected = _expected_batches(seq_lens, batch_size, padded_len, drop_remainder)
    backend.assert_produces(dataset, expected)
    assert backend.cardinality(dataset) == len(expected)


def test_padded_batch_short_padding(backend: Backend) -> None:
    dataset = (
        backend.Dataset.from_tensor_slices(np.array([6, 5, 5, 5, 5], np.int32))
        .map(_fill(backend))
        .padded_batch(batch_size=4, padded_shapes=[5])
    )
    error = backend.DataLossError if backend.is_tf else ValueError
    backend.assert_produces(
        dataset,
        expected_error=(
            error,
            backend.tf_message("Attempted to pad to a smaller size than the input element"),
        ),
    )


def test_padded_batch_empty_tensors(backend: Backend) -> None:
    dataset = (
        backend.Dataset.from_tensor_slices(np.array([0, 0, 0, 0], np.int32))
        .map(_fill(backend))
        .padded_batch(batch_size=4, padded_shapes=[-1])
    )
    backend.assert_produces(dataset, [np.zeros((4, 0), np.int32)])


def test_padded_batch_dataset_non_default_padding(backend: Backend) -> None:
    seq_lens = _seq_lens(32, seed=1)
    dataset = (
        backend.Dataset.from_tensor_slices(seq_lens)
        .map(_fill_tuple(backend))
        .padded_batch(4, padded_shapes=([-1], [-1]), padding_values=(-1, "<end>"))
    )
    expected = []
    for start in range(0, 32, 4):
        lens = seq_lens[start : start + 4]
        width = int(lens.max())
        numbers = np.full((4, width), -1, np.int32)
        strings = np.full((4, width), b"<end>", dtype=object)
        for row, n in enumerate(lens):
            numbers[row, :n] = n
            strings[row, :n] = str(n).encode()
        expected.append((numbers, strings.astype(bytes)))
    backend.assert_produces(dataset, expected)


def test_padded_batch_dataset_unicode(backend: Backend) -> None:
    data = [
        ["Простой", "тест", "юникода"],
        ["никогда", "не", "бывает", "простым"],
    ]
    rows = [
        (np.array([s.encode() for s in seq]), np.arange(len(seq), dtype=np.int32)) for seq in data
    ]
    dataset = (
        backend.Dataset.from_tensors(rows[0])
        .concatenate(backend.Dataset.from_tensors(rows[1]))
        .padded_batch(2, padded_shapes=([None], [None]), padding_values=("", 0))
    )
    strings = np.array([[s.encode() for s in data[0]] + [b""], [s.encode() for s in data[1]]])
    backend.assert_produces(dataset, [(strings, np.array([[0, 1, 2, 0], [0, 1, 2, 3]], np.int32))])


@pytest.mark.parametrize(
    "padded_shapes",
    [([None], [None, None], [37]), ([-1], [-1, -1], [37])],
    ids=["none", "minus-one"],
)
def test_padded_batch_dataset_shape_specifications(
    backend: Backend, padded_shapes: tuple[list[int | None], ...]
) -> None:
    element = (np.arange(3, dtype=np.int32), np.ones((2, 4), np.float32), np.array([b"a", b"b"]))
    dataset = backend.Dataset.from_tensors(element).repeat(2).padded_batch(32, padded_shapes)
    strings = np.full((2, 37), b"", dtype=object)
    strings[:, :2] = [b"a", b"b"]
    backend.assert_produces(
        dataset,
        [(np.stack([element[0]] * 2), np.stack([element[1]] * 2), strings.astype(bytes))],
    )


def test_default_padded_shapes(backend: Backend) -> None:
    dataset = (
        backend.Dataset.from_tensor_slices(np.array([1, 2, 3, 4], np.int32))
        .map(_fill(backend))
        .padded_batch(batch_size=2)
    )
    backend.assert_produces(
        dataset,
        [
            np.array([[1, 0], [2, 2]], np.int32),
            np.array([[3, 3, 3, 0], [4, 4, 4, 4]], np.int32),
        ],
    )


def test_nested_default_padded_shapes(backend: Backend) -> None:
    fill = _fill(backend)
    dataset = (
        backend.Dataset.from_tensor_slices(np.array([1, 2, 3, 4], np.int32))
        .map(lambda x: (x, fill(x)))
        .padded_batch(batch_size=2)
    )
    backend.assert_produces(
        dataset,
        [
            (np.array([1, 2], np.int32), np.array([[1, 0], [2, 2]], np.int32)),
            (np.array([3, 4], np.int32), np.array([[3, 3, 3, 0], [4, 4, 4, 4]], np.int32)),
        ],
    )


def test_padded_batch_of_dicts(backend: Backend) -> None:
    fill = _fill(backend)
    dataset = (
        backend.Dataset.from_tensor_slices(np.array([1, 3], np.int32))
        .map(lambda x: {"len": x, "row": fill(x)})
        .padded_batch(2, padded_shapes={"len": [], "row": [4]}, padding_values={"len": 0, "row": 9})
    )
    backend.assert_produces(
        dataset,
        [
            {
                "len": np.array([1, 3], np.int32),
                "row": np.array([[1, 9, 9, 9], [3, 3, 3, 9]], np.int32),
            }
        ],
    )


@pytest.mark.parametrize(
    ("build", "regex"),
    [
        (
            lambda ds: ds.range(10).padded_batch(5, padded_shapes=[1]),
            r"The padded shape \(1,\) is not compatible with the "
            r"shape \(\) of the corresponding input component.",
        ),
        (
            lambda ds: ds.from_tensors([1, 2, 3]).padded_batch(5, padded_shapes=[1]),
            r"The padded shape \(1,\) is not compatible with the "
            r"shape \(3,\) of the corresponding input component.",
        ),
        (
            lambda ds: ds.from_tensors([1, 2, 3]).padded_batch(5, padded_shapes=[[1, 1], [1, 1]]),
            r"Padded shape .* must be a `tf.int64` vector tensor, but its shape was \(2, 2\).",
        ),
    ],
    ids=["wrong-rank", "too-small", "not-rank-1"],
)
def test_padded_batch_shape_error(backend: Backend, build: Any, regex: str) -> None:
    backend.assert_raises_when_built_or_read(
        lambda: build(backend.Dataset), ValueError, backend.tf_message(regex)
    )


def test_padded_batch_padding_value_of_another_dtype(backend: Backend) -> None:
    backend.assert_raises_when_built_or_read(
        lambda: backend.Dataset.from_tensors(np.array([1, 2, 3], np.int32)).padded_batch(
            2, padding_values=np.float32(1.0)
        ),
        TypeError,
    )


def _build_padded_batch(backend: Backend, seq_lens: np.ndarray) -> Any:
    return (
        backend.Dataset.from_tensor_slices(seq_lens)
        .map(_fill(backend))
        .padded_batch(batch_size=4, padded_shapes=[-1])
    )


def _build_padded_batch_non_default_padding(backend: Backend, seq_lens: np.ndarray) -> Any:
    return (
        backend.Dataset.from_tensor_slices(seq_lens)
        .map(_fill_tuple(backend))
        .padded_batch(batch_size=4, padded_shapes=([-1], [-1]), padding_values=(-1, "<end>"))
    )


@verify_fns
@pytest.mark.parametrize(
    "build",
    [_build_padded_batch, _build_padded_batch_non_default_padding],
    ids=["default", "non-default-padding"],
)
def test_padded_batch_checkpoint(backend: Backend, verify_fn: str, build: Any) -> None:
    seq_lens = _seq_lens(32, low=1, seed=2)
    getattr(backend, verify_fn)(lambda: build(backend, seq_lens), 8)
