"""Implementation of the conformance kit."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipestate.data._structure import Element, describe, elements_equal
from pipestate.data.dataset import UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import DatasetIterator, State

DEFAULT_MAX_ELEMENTS = 200


def assert_elements_equal(actual: Element, expected: Element, context: str = "") -> None:
    """Asserts exact equality of two elements: structure, types, dtypes, shapes, values."""
    if not elements_equal(actual, expected):
        where = f" ({context})" if context else ""
        raise AssertionError(
            f"elements differ{where}:\n  actual:   {describe(actual)} {actual!r:.300}\n"
            f"  expected: {describe(expected)} {expected!r:.300}"
        )


def _assert_sequences_equal(
    actual: Sequence[Element], expected: Sequence[Element], context: str
) -> None:
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert_elements_equal(a, e, f"{context}, element {i}")
    if len(actual) != len(expected):
        raise AssertionError(f"{context}: got {len(actual)} elements, expected {len(expected)}")


class _StateHolder:
    """Holds a state for a checkpoint round trip (PyTorch's Stateful protocol)."""

    _state_dict_is_numpy = True  # restored as NumPy values, like an iterator's state

    def __init__(self, state: State | None) -> None:
        self.state = state

    def state_dict(self) -> State | None:
        return self.state

    def load_state_dict(self, state: State) -> None:
        self.state = state


def roundtrip_state(state: State) -> State:
    """The state as another process would read it back.

    Through JSON when it can be; a state holding arrays (a saved buffer) goes
    through a real ``pipestate.Checkpoint`` in a temporary directory instead.
    """
    try:
        return json.loads(json.dumps(state))  # type: ignore[no-any-return]
    except TypeError:
        pass
    import fsspec

    from pipestate.checkpoint import Checkpoint

    # An in-memory filesystem: the format and its readers are exercised, the disk is not.
    directory = f"memory://pipestate-kit/{uuid.uuid4().hex}"
    try:
        path = Checkpoint(holder=_StateHolder(state)).write(f"{directory}/state")
        holder = _StateHolder(None)
        Checkpoint(holder=holder).read(path).assert_consumed()
    finally:
        fsspec.filesystem("memory").rm(directory.removeprefix("memory://"), recursive=True)
    assert holder.state is not None
    return holder.state


def _states_equal(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_states_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_states_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return elements_equal(np.asarray(a), np.asarray(b))
    return bool(a == b) and type(a) is type(b)


def _take(iterator: DatasetIterator, count: int | None) -> list[Element]:
    out: list[Element] = []
    while count is None or len(out) < count:
        try:
            out.append(next(iterator))
        except StopIteration:
            break
    return out


def walk(
    dataset: Dataset, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> tuple[list[Element], list[State], bool]:
    """Iterates once, saving the state before every element.

    Returns:
      ``(elements, states, exhausted)``: ``states[i]`` is the state before
      ``elements[i]``; ``states[-1]`` is the state after the last element
      read; ``exhausted`` tells whether the dataset ended within ``max_elements``.
    """
    iterator = iter(dataset)
    elements: list[Element] = []
    states: list[State] = []
    exhausted = False
    while len(elements) < max_elements:
        states.append(roundtrip_state(iterator.get_state()))
        try:
            elements.append(next(iterator))
        except StopIteration:
            exhausted = True
            break
    else:
        states.append(roundtrip_state(iterator.get_state()))
    if exhausted:
        # The state of an exhausted iterator is the one taken after the last element.
        states = states[: len(elements) + 1]
    iterator.close()
    return elements, states, exhausted


def _positions(count: int, max_positions: int | None) -> list[int]:
    if max_positions is None or count <= max_positions:
        return list(range(count))
    step = count / max_positions
    picked = {int(i * step) for i in range(max_positions)} | {0, 1, count - 2, count - 1}
    return sorted(p for p in picked if 0 <= p < count)


def assert_restorable_at_every_position(
    dataset: Dataset,
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    max_positions: int | None = None,
) -> None:
    """Restores a fresh iterator from the state before every element (and after the last).

    Checks, for each position: the restored iterator reports exactly the state
    it was given; its continuation equals the uninterrupted run; restoring
    into an iterator that has already advanced discards its position; and a
    state taken at the end restores an exhausted iterator.

    Args:
      dataset: the pipeline under test.
      max_elements: how many elements to read (bounds infinite datasets).
      max_positions: restore from at most this many evenly spread positions
        (default: all of them).
    """
    elements, states, exhausted = walk(dataset, max_elements)
    if not dataset.draws_seed:
        _assert_sequences_equal(
            _take(iter(dataset), len(elements)), elements, f"{dataset!r}: a second iteration"
        )
    for position in _positions(len(states), max_positions):
        iterator = iter(dataset)
        if position % 2:
            _take(iterator, 1)  # set_state must discard what this iterator did
        iterator.set_state(roundtrip_state(states[position]))
        if not _states_equal(roundtrip_state(iterator.get_state()), states[position]):
            raise AssertionError(
                f"{dataset!r}: state after set_state differs from the state restored at "
                f"position {position}:\n  restored: {states[position]!r:.400}\n"
                f"  reported: {iterator.get_state()!r:.400}"
            )
        rest = _take(iterator, len(elements) - position)
        _assert_sequences_equal(rest, elements[position:], f"{dataset!r} restored at {position}")
        if exhausted:
            _assert_ends(iterator, f"{dataset!r} restored at {position}")
        iterator.close()


def _assert_ends(iterator: DatasetIterator, context: str) -> None:
    try:
        extra = next(iterator)
    except StopIteration:
        return
    raise AssertionError(
        f"{context}: expected the end of the data, got another element {extra!r:.200}"
    )


def assert_exhausted_restores_exhausted(dataset: Dataset, *, max_elements: int = 10_000) -> None:
    """A state saved after the end restores an iterator that is at the end, twice over."""
    iterator = iter(dataset)
    count = len(_take(iterator, max_elements))
    if count == max_elements:
        raise AssertionError(f"{dataset!r} did not end within {max_elements} elements")
    _assert_ends(iterator, f"{dataset!r} after {count} elements")
    state = roundtrip_state(iterator.get_state())
    fresh = iter(dataset)
    fresh.set_state(state)
    _assert_ends(fresh, f"{dataset!r} restored from an exhausted state")
    _assert_ends(fresh, f"{dataset!r} restored from an exhausted state, second call")
    if not _states_equal(roundtrip_state(fresh.get_state()), state):
        raise AssertionError(f"{dataset!r}: an exhausted state does not survive a round trip")


def assert_chained_resumes(
    dataset: Dataset,
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    seed: int = 0,
    resumes: int = 8,
) -> None:
    """Save, restore into a fresh iterator, advance, save, restore ... equals one run."""
    elements, states, exhausted = walk(dataset, max_elements)
    rng = random.Random(seed)
    cuts = sorted(rng.randrange(len(elements) + 1) for _ in range(resumes))
    iterator = iter(dataset)
    iterator.set_state(states[0])  # the walk's start: seedless ops drew their seeds there
    out: list[Element] = []
    for cut in cuts:
        out.extend(_take(iterator, cut - len(out)))
        state = roundtrip_state(iterator.get_state())
        iterator.close()
        iterator = iter(dataset)
        iterator.set_state(state)
    out.extend(_take(iterator, len(elements) - len(out)))
    _assert_sequences_equal(out, elements, f"{dataset!r} with resumes at {cuts}")
    if exhausted:
        _assert_ends(iterator, f"{dataset!r} after chained resumes")


def assert_epoch_boundaries(dataset: Dataset, *, epochs: int = 3, max_elements: int = 600) -> None:
    """Restores around every epoch boundary of ``dataset.repeat(epochs)``.

    Skipped (returns) for infinite datasets; a dataset of unknown length is
    counted first (and skipped if longer than ``max_elements``).
    """
    n = dataset.cardinality()
    if n == UNKNOWN_CARDINALITY:
        with iter(dataset) as counting:
            n = len(_take(counting, max_elements + 1))
    if n < 0 or n * epochs > max_elements:
        return
    repeated = dataset.repeat(epochs)
    elements, states, _ = walk(repeated, n * epochs + 1)
    if len(elements) != n * epochs:
        raise AssertionError(f"{repeated!r}: got {len(elements)} elements, expected {n * epochs}")
    for boundary in range(0, n * epochs + 1, max(n, 1)):
        for position in {max(0, boundary - 1), boundary, min(len(elements), boundary + 1)}:
            iterator = iter(repeated)
            iterator.set_state(states[position])
            rest = _take(iterator, len(elements) - position + 1)
            _assert_sequences_equal(
                rest, elements[position:], f"{repeated!r} restored at {position} (epoch boundary)"
            )


def assert_conformant(
    dataset: Dataset,
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    max_positions: int | None = None,
) -> None:
    """Runs every check of the kit on ``dataset``.

    Restores at every position, chained resumes, the exhausted state (for
    finite datasets), and epoch boundaries under ``repeat``.
    """
    assert_restorable_at_every_position(
        dataset, max_elements=max_elements, max_positions=max_positions
    )
    assert_chained_resumes(dataset, max_elements=max_elements)
    n = dataset.cardinality()
    if n == UNKNOWN_CARDINALITY:
        with iter(dataset) as counting:
            n = len(_take(counting, max_elements + 1))
    if 0 <= n <= max_elements:
        assert_exhausted_restores_exhausted(dataset, max_elements=max_elements + 1)
    assert_epoch_boundaries(dataset)
