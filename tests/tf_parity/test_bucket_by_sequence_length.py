"""tf.data's ``bucket_by_sequence_length_test.py`` against pipestate and TensorFlow.

The inputs are tf.data's, with the shuffled generators seeded (``random.Random(0)``)
so both backends read the same order, and a generator's list records given as
arrays (a list a pipestate generator yields is a tuple element: docs/ops.md).

Left out of tf.data's tests:
- the sparse cases (``no_padding=True`` over ``tf.SparseTensor``, testBucketSparse):
  ``no_padding`` is checked over dense records of one length instead.
- testTupleElements checks TF's static shapes only; its input is checked for values instead.
- unsorted ``bucket_boundaries``: pipestate refuses them (tests/data/ops), TF 2.21 does not.
- the ``symbolic_checkpoint`` combinations: a TensorFlow-only option; each case runs once.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from ._base import Backend

BOUNDARIES = [10, 20, 30]
BATCH_SIZES = [10, 8, 4, 2]


def _length(backend: Backend) -> Any:
    if backend.is_tf:
        tf = backend.module
        return lambda x, y=None: tf.shape(x)[0]
    return lambda x, y=None: len(x)


def _source(backend: Backend, generator: Any) -> Any:
    if backend.is_tf:
        tf = backend.module
        return backend.Dataset.from_generator(generator, (tf.int64,), (tf.TensorShape([None]),))
    return backend.Dataset.from_generator(generator).with_options(
        backend.data.Options(external_state_policy="ignore")
    )


@pytest.mark.parametrize("no_padding", [True, False])
def test_bucket_drop_remainder(backend: Backend, no_padding: bool) -> None:
    lengths = [8, 13, 25, 35]
    n_bucket_elements = [28, 7, 6, 5]

    def generator() -> Any:
        elements = []
        for bucket_elements, length in zip(n_bucket_elements, lengths):
            elements.extend([np.ones(length, np.int64)] * bucket_elements)
        random.Random(0).shuffle(elements)
        for el in elements:
            yield (el,)

    dataset = _source(backend, generator).bucket_by_sequence_length(
        element_length_func=_length(backend),
        bucket_boundaries=BOUNDARIES,
        bucket_batch_sizes=BATCH_SIZES,
        no_padding=no_padding,
        drop_remainder=True,
    )
    batches = [batch for (batch,) in backend.outputs(dataset)]
    assert len(batches) == 5
    sums: dict[int, int] = dict.fromkeys(lengths, 0)
    sizes: dict[int, list[int]] = {length: [] for length in lengths}
    for batch in batches:
        sums[batch.shape[1]] += int(batch.sum())
        sizes[batch.shape[1]].append(batch.shape[0])
    for length, batch_size, count in zip(lengths, BATCH_SIZES, n_bucket_elements):
        assert sums[length] == (count - count % batch_size) * length
        assert sizes[length] == [batch_size] * (count // batch_size)


@pytest.mark.parametrize("no_padding", [True, False])
def test_bucket(backend: Backend, no_padding: bool) -> None:
    lengths = [8, 13, 25, 35]

    def generator() -> Any:
        elements = []
        for batch_size, length in zip(BATCH_SIZES, lengths):
            record_len = length - 1 if not no_padding else length
            for _ in range(batch_size):
                elements.append(np.ones(record_len, np.int64))
                record_len = length
        random.Random(0).shuffle(elements)
        for el in elements:
            yield (el,)

    dataset = _source(backend, generator).bucket_by_sequence_length(
        element_length_func=_length(backend),
        bucket_boundaries=BOUNDARIES,
        bucket_batch_sizes=BATCH_SIZES,
        no_padding=no_padding,
    )
    batches = [batch for (batch,) in backend.outputs(dataset)]
    assert len(batches) == 4
    assert sorted(b.shape[0] for b in batches) == sorted(BATCH_SIZES)
    assert sorted(b.shape[1] for b in batches) == sorted(lengths)
    for batch in batches:
        expected = batch.shape[0] * batch.shape[1] - (0 if no_padding else 1)
        assert int(batch.sum()) == expected


def test_pad_to_boundary(backend: Backend) -> None:
    lengths = [8, 13, 25]

    def generator() -> Any:
        elements = []
        for batch_size, length in zip(BATCH_SIZES[:-1], lengths):
            elements.extend([np.ones(length, np.int64)] * batch_size)
        random.Random(0).shuffle(elements)
        for el in elements:
            yield (el,)
        for _ in range(BATCH_SIZES[-1]):
            yield (np.ones(BOUNDARIES[-1] + 5, np.int64),)

    dataset = _source(backend, generator).bucket_by_sequence_length(
        element_length_func=_length(backend),
        bucket_boundaries=BOUNDARIES,
        bucket_batch_sizes=BATCH_SIZES,
        pad_to_bucket_boundary=True,
    )
    iterator = backend.iterate(dataset)
    batches = [next(iterator)[0] for _ in range(3)]
    # TF 2.21 wraps the assertion's InvalidArgumentError in an InternalError (an OpError).
    error = backend.module.errors.OpError if backend.is_tf else backend.InvalidArgumentError
    with pytest.raises(error, match="bucket_boundaries"):
        next(iterator)
    assert sorted(b.shape[0] for b in batches) == sorted(BATCH_SIZES[:-1])
    assert sorted(b.shape[1] for b in batches) == [b - 1 for b in BOUNDARIES]


def test_pad_to_boundary_no_extraneous_padding(backend: Backend) -> None:
    def generator() -> Any:
        for length in range(1, 11):
            yield (np.ones(length, np.int64),)

    dataset = _source(backend, generator).bucket_by_sequence_length(
        element_length_func=_length(backend),
        bucket_boundaries=[3, 7, 11],
        bucket_batch_sizes=[2, 2, 2, 2],
        pad_to_bucket_boundary=True,
    )
    backend.assert_produces(
        dataset,
        [
            ([[1, 0], [1, 1]],),
            ([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0]],),
            ([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]],),
            ([[1, 1, 1, 1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]],),
            ([[1, 1, 1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]],),
        ],
    )


def test_tuple_elements(backend: Backend) -> None:
    text = [[1, 2, 3], [3, 4, 5, 6, 7], [1, 2], [8, 9, 0, 2, 3]]
    label = [1, 2, 1, 2]
    pairs = [(np.array(x, np.int64), np.int64(y)) for x, y in zip(text, label)]

    def generator() -> Any:
        yield from pairs

    if backend.is_tf:
        tf = backend.module
        source = backend.Dataset.from_generator(
            generator,
            output_signature=(tf.TensorSpec([None], tf.int64), tf.TensorSpec([], tf.int64)),
        )
    else:
        source = backend.Dataset.from_generator(generator).with_options(
            backend.data.Options(external_state_policy="ignore")
        )
    dataset = source.bucket_by_sequence_length(
        element_length_func=_length(backend), bucket_batch_sizes=[2, 2, 2], bucket_boundaries=[0, 8]
    )
    backend.assert_produces(
        dataset,
        [
            ([[1, 2, 3, 0, 0], [3, 4, 5, 6, 7]], [1, 2]),
            ([[1, 2, 0, 0, 0], [8, 9, 0, 2, 3]], [1, 2]),
        ],
    )


def test_invalid_arguments(backend: Backend) -> None:
    with pytest.raises(ValueError, match=r"len\(bucket_batch_sizes\)`? must equal"):
        backend.Dataset.range(3).bucket_by_sequence_length(lambda x: x, [10, 20], [1, 2])
