"""Streaming inputs for the tests of the ops that also have a random-access path.

Over a random-access input those ops compute element ``i`` by index and the
pipeline saves one index; over these inputs each runs its streaming iterator,
which reads its input's iterator and nests the input's state under
``"parent"`` (``"parents"`` for several inputs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

import pipestate as ps
from pipestate.testing import assert_elements_equal

IGNORE = ps.data.Options(external_state_policy="ignore")


def keep_all(x: Any) -> bool:
    """A filter predicate that keeps every element."""
    return True


def filtered(n: int) -> ps.Dataset:
    """``range(n)`` through a ``filter`` that keeps everything: a streaming input."""
    return ps.Dataset.range(n).filter(keep_all)


def count_to(n: int) -> Iterator[np.int64]:
    """``range(n)``'s elements from a Python generator."""
    for i in range(n):
        yield np.int64(i)


def generated(n: int) -> ps.Dataset:
    """``range(n)`` from a generator: a streaming source (its external state ignored)."""
    return ps.Dataset.from_generator(count_to, args=(n,)).with_options(IGNORE)


STREAMING_INPUTS: dict[str, Callable[[int], ps.Dataset]] = {
    "filtered": filtered,
    "generated": generated,
}
"""The streaming inputs, by the ids tests parametrize them with."""


def filtered_state(index: int) -> dict[str, Any]:
    """The state of ``filtered(n)`` (as an op's input) after ``index`` elements."""
    return {"parent": {"index": index, "seed": None}, "seed": None}


def assert_paths_agree(op: Callable[[ps.Dataset], ps.Dataset], n: int) -> list[Any]:
    """``op`` over every streaming ``range(n)`` yields what it yields over ``range(n)``.

    Returns the elements.
    """
    random_access = op(ps.Dataset.range(n))
    expected = tuple(random_access)
    for name, make in STREAMING_INPUTS.items():
        ds = op(make(n))
        assert not ds._random_access, f"{ds!r} over the {name} input is random access"
        assert_elements_equal(tuple(ds), expected, f"{ds!r} against {random_access!r}")
    return list(expected)


def assert_agree(streaming: ps.Dataset, random_access: ps.Dataset) -> list[Any]:
    """A pipeline with a streaming input yields the elements of its random-access twin."""
    assert not streaming._random_access, f"{streaming!r} is random access"
    assert random_access._random_access, f"{random_access!r} is not random access"
    expected = tuple(random_access)
    assert_elements_equal(tuple(streaming), expected, f"{streaming!r} against {random_access!r}")
    return list(expected)


def state_after(ds: ps.Dataset, count: int) -> dict[str, Any]:
    """The iterator part of ``ds``'s state after ``count`` elements."""
    with iter(ds) as iterator:
        for _ in range(count):
            next(iterator)
        return iterator.get_state()["iterator"]  # type: ignore[no-any-return]
