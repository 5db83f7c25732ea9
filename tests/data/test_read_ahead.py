"""Read-ahead blocks give exactly the elements read one by one, and errors at their element.

The index iterator reads pipelines with a per-element function ahead in blocks
(``_get_list``): ``map`` calls its function over a block, ``batch`` reads all
the input of its batches as one block and cuts scalar batches from one array,
and the position-remapping ops (``repeat``, ``global_shuffle``, ``skip``,
``take``, ``shard``) map a block of positions at once, cutting it where an
epoch of their input ends. ``dataset[i]`` reads element by element, so it is
the reference.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import pipestate as ps
from pipestate.testing import assert_elements_equal


def _plus_one(x: np.int64) -> np.int64:
    return x + 1


def _text(x: np.int64) -> bytes:
    return b"s" * int(x % 5)


def _pair(x: np.int64) -> tuple[np.int64, np.float32]:
    return x, np.float32(x) / 2


PIPELINES: dict[str, Callable[[], ps.Dataset]] = {
    "repeat crossing epochs": lambda: ps.Dataset.range(37).map(_plus_one).repeat(3),
    "global_shuffle per epoch": lambda: (
        ps.Dataset.range(30).map(_plus_one).global_shuffle(seed=3).repeat(2)
    ),
    "batches under global_shuffle": lambda: (
        ps.Dataset.range(50).map(_plus_one).batch(4).global_shuffle(seed=6)
    ),
    "batches crossing epochs": lambda: ps.Dataset.range(53).map(_plus_one).batch(4).repeat(2),
    "remapped then batched": lambda: (
        ps.Dataset.range(100).map(_plus_one).skip(7).take(60).shard(3, 1).batch(5)
    ),
    "text batches (dtype per batch)": lambda: ps.Dataset.range(40).map(_text).batch(4),
    "tuple batches": lambda: ps.Dataset.range(45).map(_pair).batch(6, drop_remainder=True),
    "mixed scalar types": lambda: (
        ps.Dataset.range(20).map(lambda x: np.int32(x) if x % 2 else np.int64(x)).batch(3)
    ),
}


def _outcome(read: Callable[[], object]) -> object:
    """An element, or the error reading it raised (its type and message)."""
    try:
        return read()
    except (ValueError, TypeError) as err:
        return (type(err), str(err))


@pytest.mark.parametrize("make", PIPELINES.values(), ids=PIPELINES.keys())
def test_block_reads_equal_element_by_element_reads(make: Callable[[], ps.Dataset]) -> None:
    ds = make()
    expected = [_outcome(lambda i=i: ds[i]) for i in range(len(ds))]
    it = iter(ds)
    got = [_outcome(lambda: next(it)) for _ in expected]
    with pytest.raises(StopIteration):
        next(it)
    for i, (a, e) in enumerate(zip(got, expected)):
        if isinstance(e, tuple) and isinstance(e[0], type):
            assert a == e, f"element {i}"  # the same error at the same element
        else:
            assert_elements_equal(a, e, f"element {i}")


def test_an_error_inside_a_block_of_batches_surfaces_at_its_batch() -> None:
    def fails_at_13(x: np.int64) -> np.int64:
        if int(x) == 13:
            raise ValueError("element 13")
        return x * 2

    ds = ps.Dataset.range(40).map(fails_at_13).batch(4)
    it = iter(ds)
    before = [next(it) for _ in range(3)]
    assert_elements_equal(tuple(before), tuple(np.arange(12).reshape(3, 4) * 2))
    with pytest.raises(ValueError, match="element 13"):
        next(it)
    state = it.get_state()
    assert state["iterator"]["index"] == 4  # the failing batch counts as consumed
    rest = list(it)
    assert_elements_equal(tuple(rest), tuple(np.arange(16, 40).reshape(6, 4) * 2))
    resumed = iter(ds)
    resumed.set_state(state)
    assert_elements_equal(tuple(resumed), tuple(rest))
