"""tf.data's ``cardinality_test.py`` (CardinalityTest), for the ops pipestate has.

Left out:
- the TF1 cases (Map1 / Map2 as unknown): TF1 only.
- Cache1, Cache2, Window1, Window2: ``cache()`` and ``window()`` are not pipestate ops.
- Interleave2, Interleave3: pipestate's interleave has no ``num_parallel_calls``
  (docs/ops.md#interleavemap_func-cycle_lengthnone-block_length1--statefulfalse).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ._base import Backend

INFINITE = "infinite"
UNKNOWN = "unknown"


def _true(_: Any) -> bool:
    return True


CASES: list[tuple[str, Callable[[Any], Any], int | str]] = [
    ("Map1", lambda d: d.range(5).map(lambda x: x), 5),
    ("Map2", lambda d: d.range(5).map(lambda x: x, num_parallel_calls=1), 5),
    ("Batch1", lambda d: d.range(5).batch(2, drop_remainder=True), 2),
    ("Batch2", lambda d: d.range(5).batch(2, drop_remainder=False), 3),
    ("Batch3", lambda d: d.range(5).filter(_true).batch(2), UNKNOWN),
    ("Batch4", lambda d: d.range(5).repeat().batch(2), INFINITE),
    ("Concatenate1", lambda d: d.range(5).concatenate(d.range(5)), 10),
    ("Concatenate2", lambda d: d.range(5).filter(_true).concatenate(d.range(5)), UNKNOWN),
    ("Concatenate3", lambda d: d.range(5).repeat().concatenate(d.range(5)), INFINITE),
    ("Concatenate4", lambda d: d.range(5).concatenate(d.range(5).filter(_true)), UNKNOWN),
    (
        "Concatenate5",
        lambda d: d.range(5).filter(_true).concatenate(d.range(5).filter(_true)),
        UNKNOWN,
    ),
    (
        "Concatenate6",
        lambda d: d.range(5).repeat().concatenate(d.range(5).filter(_true)),
        INFINITE,
    ),
    ("Concatenate7", lambda d: d.range(5).concatenate(d.range(5).repeat()), INFINITE),
    (
        "Concatenate8",
        lambda d: d.range(5).filter(_true).concatenate(d.range(5).repeat()),
        INFINITE,
    ),
    ("Concatenate9", lambda d: d.range(5).repeat().concatenate(d.range(5).repeat()), INFINITE),
    ("FlatMap", lambda d: d.range(5).flat_map(lambda _: d.from_tensors(0)), UNKNOWN),
    ("Filter", lambda d: d.range(5).filter(_true), UNKNOWN),
    ("FromTensors1", lambda d: d.from_tensors(0), 1),
    ("FromTensors2", lambda d: d.from_tensors((0, 1)), 1),
    ("FromTensorSlices1", lambda d: d.from_tensor_slices([0, 0, 0]), 3),
    ("FromTensorSlices2", lambda d: d.from_tensor_slices(([0, 0, 0], [1, 1, 1])), 3),
    (
        "Interleave1",
        lambda d: d.range(5).interleave(lambda _: d.from_tensors(0), cycle_length=1),
        UNKNOWN,
    ),
    ("PaddedBatch1", lambda d: d.range(5).padded_batch(2, [], drop_remainder=True), 2),
    ("PaddedBatch2", lambda d: d.range(5).padded_batch(2, [], drop_remainder=False), 3),
    ("PaddedBatch3", lambda d: d.range(5).filter(_true).padded_batch(2, []), UNKNOWN),
    ("PaddedBatch4", lambda d: d.range(5).repeat().padded_batch(2, []), INFINITE),
    ("Prefetch", lambda d: d.range(5).prefetch(buffer_size=1), 5),
    ("Range1", lambda d: d.range(0), 0),
    ("Range2", lambda d: d.range(5), 5),
    ("Range3", lambda d: d.range(5, 10), 5),
    ("Range4", lambda d: d.range(10, 5), 0),
    ("Range5", lambda d: d.range(5, 10, 2), 3),
    ("Range6", lambda d: d.range(10, 5, -2), 3),
    ("Repeat1", lambda d: d.range(0).repeat(0), 0),
    ("Repeat2", lambda d: d.range(1).repeat(0), 0),
    ("Repeat3", lambda d: d.range(0).repeat(5), 0),
    ("Repeat4", lambda d: d.range(1).repeat(5), 5),
    ("Repeat5", lambda d: d.range(0).repeat(), 0),
    ("Repeat6", lambda d: d.range(1).repeat(), INFINITE),
    ("Shuffle", lambda d: d.range(5).shuffle(buffer_size=1), 5),
    ("Shard1", lambda d: d.range(5).shard(2, 0), 3),
    ("Shard2", lambda d: d.range(5).shard(8, 7), 0),
    ("Shard3", lambda d: d.range(5).filter(_true).shard(2, 0), UNKNOWN),
    ("Shard4", lambda d: d.range(5).repeat().shard(2, 0), INFINITE),
    ("Skip1", lambda d: d.range(5).skip(2), 3),
    ("Skip2", lambda d: d.range(5).skip(8), 0),
    ("Skip3", lambda d: d.range(5).filter(_true).skip(2), UNKNOWN),
    ("Skip4", lambda d: d.range(5).repeat().skip(2), INFINITE),
    ("Take1", lambda d: d.range(5).take(2), 2),
    ("Take2", lambda d: d.range(5).take(8), 5),
    ("Take3", lambda d: d.range(5).filter(_true).take(2), UNKNOWN),
    ("Take4", lambda d: d.range(5).repeat().take(2), 2),
    ("Zip1", lambda d: d.zip(d.range(5)), 5),
    ("Zip2", lambda d: d.zip((d.range(5), d.range(3))), 3),
    ("Zip3", lambda d: d.zip((d.range(5), d.range(3).repeat())), 5),
    ("Zip4", lambda d: d.zip((d.range(5).repeat(), d.range(3).repeat())), INFINITE),
    ("Zip5", lambda d: d.zip((d.range(5), d.range(3).filter(_true))), UNKNOWN),
    ("Enumerate", lambda d: d.range(5).enumerate(), 5),
    ("Unbatch", lambda d: d.range(6).batch(2, drop_remainder=True).unbatch(), 6),
]


@pytest.mark.parametrize(("build", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_cardinality(backend: Backend, build: Callable[[Any], Any], expected: int | str) -> None:
    if expected == INFINITE:
        expected = backend.INFINITE
    elif expected == UNKNOWN:
        expected = backend.UNKNOWN
    assert backend.cardinality(build(backend.Dataset)) == expected


def test_cardinality_constants(backend: Backend) -> None:
    assert backend.INFINITE == -1
    assert backend.UNKNOWN == -2
