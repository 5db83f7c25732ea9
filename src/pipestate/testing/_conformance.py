"""Implementation of the conformance kit."""

from __future__ import annotations

import copy
import json
import random
import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from pipestate.data._structure import Element, describe, elements_equal
from pipestate.data.dataset import UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import DatasetIterator, State
from pipestate.testing import _state_structure, _variants
from pipestate.testing._variants import VARIANTS

DEFAULT_MAX_ELEMENTS = 200
VARIANT_MAX_ELEMENTS = 60
"""At most this many elements are read through each variant (the checks are quadratic)."""
VARIANT_MAX_POSITIONS = 30
"""Restores at most this many positions of each variant."""


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
        memory = fsspec.filesystem("memory")
        if memory.exists(directory.removeprefix("memory://")):
            memory.rm(directory.removeprefix("memory://"), recursive=True)
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


class _Walk(NamedTuple):
    """One iteration: elements, the states before each (and after the last), and more."""

    elements: list[Element]
    states: list[State]
    exhausted: bool
    structure: Any
    """The states' structure (``_state_structure``), merged over every position."""

    @property
    def seed(self) -> int | None:
        """The seed the iterator drew for the pipeline's ``seed=None`` ops, if any."""
        inner = self.states[0].get("iterator")
        seed = inner.get("seed") if isinstance(inner, dict) else None
        return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def _merge_structure(reference: Any, state: State, context: str) -> Any:
    """Merges ``state``'s structure into ``reference`` (``None``: the first state)."""
    found = _state_structure.structure(state)
    if reference is None:
        return found
    try:
        return _state_structure.merge(reference, found)
    except AssertionError as err:
        raise AssertionError(f"{context}: the state's structure changed: {err}") from None


def _walk(
    dataset: Dataset, max_elements: int, start: State | None = None, *, roundtrip: bool = False
) -> _Walk:
    """``walk``, starting from ``start`` when given, also merging the states' structures.

    The states are kept as ``get_state()`` returned them (copied) unless
    ``roundtrip``: the checks round-trip only those they restore.
    """
    iterator = iter(dataset)
    if start is not None:
        iterator.set_state(start)
    elements: list[Element] = []
    states: list[State] = []
    structure: Any = None
    exhausted = False
    while True:
        state = iterator.get_state()
        structure = _merge_structure(structure, state, f"{dataset!r} at position {len(elements)}")
        states.append(roundtrip_state(state) if roundtrip else copy.deepcopy(state))
        if len(elements) == max_elements:
            break
        try:
            elements.append(next(iterator))
        except StopIteration:
            exhausted = True
            # The state of an exhausted iterator is the one taken after the last
            # element; the one taken after the end must keep its structure too.
            structure = _merge_structure(
                structure, iterator.get_state(), f"{dataset!r} after the end"
            )
            break
    iterator.close()
    return _Walk(elements, states, exhausted, structure)


def walk(
    dataset: Dataset, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> tuple[list[Element], list[State], bool]:
    """Iterates once, saving the state before every element.

    Returns:
      ``(elements, states, exhausted)``: ``states[i]`` is the state before
      ``elements[i]``; ``states[-1]`` is the state after the last element
      read; ``exhausted`` tells whether the dataset ended within ``max_elements``.
    """
    elements, states, exhausted, _ = _walk(dataset, max_elements, roundtrip=True)
    return elements, states, exhausted


def _positions(count: int, max_positions: int | None) -> list[int]:
    if max_positions is None or count <= max_positions:
        return list(range(count))
    step = count / max_positions
    picked = {int(i * step) for i in range(max_positions)} | {0, 1, count - 2, count - 1}
    return sorted(p for p in picked if 0 <= p < count)


def _start_for(variant: Dataset, seed: int | None) -> State | None:
    """A start state for ``variant`` with the seed a reference run drew (``None``: no seed)."""
    if seed is None:
        return None
    with iter(variant) as iterator:
        state = iterator.get_state()
    inner = state.get("iterator")
    if not isinstance(inner, dict) or not isinstance(inner.get("seed"), int):
        return None
    inner["seed"] = seed
    return state


def _variant_limits(max_elements: int, max_positions: int | None) -> tuple[int, int]:
    positions = VARIANT_MAX_POSITIONS if max_positions is None else max_positions
    return min(max_elements, VARIANT_MAX_ELEMENTS), min(positions, VARIANT_MAX_POSITIONS)


def _assert_same_run(
    got: Sequence[Element], expected: Sequence[Element], name: str, variant: Dataset
) -> None:
    """The variant's uninterrupted run equals the dataset's (as far as the variant reads)."""
    _assert_sequences_equal(got, expected, f"{variant!r} (the {name} path) against the dataset")


def _restorable(
    dataset: Dataset, max_elements: int, max_positions: int | None, start: State | None
) -> _Walk:
    run = _walk(dataset, max_elements, start)
    elements, states, exhausted, structure = run
    if not dataset.draws_seed:
        with iter(dataset) as again:
            second = _take(again, len(elements))
        _assert_sequences_equal(second, elements, f"{dataset!r}: a second iteration")
    for position in _positions(len(states), max_positions):
        iterator = iter(dataset)
        if position % 2:
            _take(iterator, 1)  # set_state must discard what this iterator did
        iterator.set_state(roundtrip_state(states[position]))
        reported = iterator.get_state()
        if not _states_equal(reported, states[position]):
            raise AssertionError(
                f"{dataset!r}: state after set_state differs from the state restored at "
                f"position {position}:\n  restored: {states[position]!r:.400}\n"
                f"  reported: {reported!r:.400}"
            )
        context = f"{dataset!r} restored at {position}"
        structure = _merge_structure(structure, reported, context)
        rest = _take(iterator, len(elements) - position)
        _assert_sequences_equal(rest, elements[position:], context)
        if exhausted:
            _assert_ends(iterator, context)
            structure = _merge_structure(structure, iterator.get_state(), f"{context}, at the end")
        iterator.close()
    return run


def assert_restorable_at_every_position(
    dataset: Dataset,
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    max_positions: int | None = None,
    variants: Sequence[str] = VARIANTS,
) -> None:
    """Restores a fresh iterator from the state before every element (and after the last).

    Checks, for each position: the restored iterator reports exactly the state
    it was given; its continuation equals the uninterrupted run; restoring
    into an iterator that has already advanced discards its position; a
    state taken at the end restores an exhausted iterator; and the state keeps
    its structure at every position, after the end and after each restore
    (``docs/testing.md#state-structure``).

    Then the same on each variant (``"streaming"``: the ops' streaming
    iterators over inputs forced to stream; ``"prefetch"``: under
    ``prefetch(2)``), whose elements must equal the dataset's.

    Args:
      dataset: the pipeline under test.
      max_elements: how many elements to read (bounds infinite datasets).
      max_positions: restore from at most this many evenly spread positions
        (default: all of them).
      variants: the variants to check too; ``()`` checks the dataset alone.
        A variant reads at most ``VARIANT_MAX_ELEMENTS`` elements and restores
        at most ``VARIANT_MAX_POSITIONS`` positions.

    Raises:
      AssertionError: a check failed; the message names the pipeline and position.
      ValueError: an unknown variant name.
    """
    checked = _variants.variants(dataset, tuple(variants))
    reference = _restorable(dataset, max_elements, max_positions, None)
    limit, positions = _variant_limits(max_elements, max_positions)
    for name, variant in checked:
        run = _restorable(variant, limit, positions, _start_for(variant, reference.seed))
        _assert_same_run(run.elements, reference.elements[:limit], name, variant)


def _assert_ends(iterator: DatasetIterator, context: str) -> None:
    try:
        extra = next(iterator)
    except StopIteration:
        return
    raise AssertionError(
        f"{context}: expected the end of the data, got another element {extra!r:.200}"
    )


def _exhausted(dataset: Dataset, max_elements: int) -> None:
    with iter(dataset) as iterator:
        count = len(_take(iterator, max_elements))
        if count == max_elements:
            raise AssertionError(f"{dataset!r} did not end within {max_elements} elements")
        _assert_ends(iterator, f"{dataset!r} after {count} elements")
        state = roundtrip_state(iterator.get_state())
    with iter(dataset) as fresh:
        fresh.set_state(state)
        _assert_ends(fresh, f"{dataset!r} restored from an exhausted state")
        _assert_ends(fresh, f"{dataset!r} restored from an exhausted state, second call")
        if not _states_equal(roundtrip_state(fresh.get_state()), state):
            raise AssertionError(f"{dataset!r}: an exhausted state does not survive a round trip")


def assert_exhausted_restores_exhausted(
    dataset: Dataset, *, max_elements: int = 10_000, variants: Sequence[str] = VARIANTS
) -> None:
    """A state saved after the end restores an iterator that is at the end, twice over.

    The same on each variant (see :func:`assert_restorable_at_every_position`).
    """
    checked = _variants.variants(dataset, tuple(variants))
    _exhausted(dataset, max_elements)
    for _, variant in checked:
        _exhausted(variant, max_elements)


def _chained(
    dataset: Dataset, max_elements: int, seed: int, resumes: int, start: State | None
) -> _Walk:
    run = _walk(dataset, max_elements, start)
    elements, states, exhausted, structure = run
    rng = random.Random(seed)
    cuts = sorted(rng.randrange(len(elements) + 1) for _ in range(resumes))
    iterator = iter(dataset)
    # The walk's start: seedless ops drew their seeds there.
    iterator.set_state(roundtrip_state(states[0]))
    out: list[Element] = []
    for cut in cuts:
        out.extend(_take(iterator, cut - len(out)))
        state = iterator.get_state()
        structure = _merge_structure(structure, state, f"{dataset!r} resumed at {len(out)}")
        state = roundtrip_state(state)
        iterator.close()
        iterator = iter(dataset)
        iterator.set_state(state)
    out.extend(_take(iterator, len(elements) - len(out)))
    _assert_sequences_equal(out, elements, f"{dataset!r} with resumes at {cuts}")
    if exhausted:
        _assert_ends(iterator, f"{dataset!r} after chained resumes")
    iterator.close()
    return run


def assert_chained_resumes(
    dataset: Dataset,
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    seed: int = 0,
    resumes: int = 8,
    variants: Sequence[str] = VARIANTS,
) -> None:
    """Save, restore into a fresh iterator, advance, save, restore ... equals one run.

    The same on each variant, whose elements must equal the dataset's (see
    :func:`assert_restorable_at_every_position`).
    """
    checked = _variants.variants(dataset, tuple(variants))
    reference = _chained(dataset, max_elements, seed, resumes, None)
    limit = min(max_elements, VARIANT_MAX_ELEMENTS)
    for name, variant in checked:
        run = _chained(variant, limit, seed, resumes, _start_for(variant, reference.seed))
        _assert_same_run(run.elements, reference.elements[:limit], name, variant)


def _length(dataset: Dataset, max_elements: int) -> int:
    """The cardinality, counted by iterating (up to ``max_elements + 1``) when unknown."""
    n = dataset.cardinality()
    if n == UNKNOWN_CARDINALITY:
        with iter(dataset) as counting:
            n = len(_take(counting, max_elements + 1))
    return n


def _epoch_boundaries(
    dataset: Dataset, epochs: int, n: int, max_elements: int, seed: int | None
) -> _Walk | None:
    """Restores around the boundaries; ``None`` where the passes are too long to check."""
    repeated = dataset.repeat(epochs)
    known = dataset.cardinality() >= 0
    limit = n * epochs if known else max_elements
    run = _walk(repeated, limit + 1, _start_for(repeated, seed))
    elements, states = run.elements, run.states
    if len(elements) == n * epochs:
        positions: set[int] = set()
        for boundary in range(0, n * epochs + 1, max(n, 1)):
            positions |= {max(0, boundary - 1), boundary, min(len(elements), boundary + 1)}
    elif not known:
        # The passes differ in length (a filter after a reshuffling op, or seeds
        # drawn per iterator): the boundaries are unknown, so restore everywhere.
        if not run.exhausted:
            return None
        positions = set(range(len(states)))
    else:
        raise AssertionError(f"{repeated!r}: got {len(elements)} elements, expected {n * epochs}")
    for position in sorted(positions):
        with iter(repeated) as iterator:
            iterator.set_state(roundtrip_state(states[position]))
            rest = _take(iterator, len(elements) - position + 1)
        _assert_sequences_equal(
            rest, elements[position:], f"{repeated!r} restored at {position} (epoch boundary)"
        )
    return run


def assert_epoch_boundaries(
    dataset: Dataset,
    *,
    epochs: int = 3,
    max_elements: int = 600,
    variants: Sequence[str] = VARIANTS,
) -> None:
    """Restores around every epoch boundary of ``dataset.repeat(epochs)``.

    Skipped (returns) for infinite datasets; a dataset of unknown length is
    counted first (and skipped if longer than ``max_elements``); where its
    passes turn out to differ in length, every position of the repetition is
    restored instead. The same on each variant, whose elements must equal the
    dataset's (see :func:`assert_restorable_at_every_position`).
    """
    checked = _variants.variants(dataset, tuple(variants))
    n = _length(dataset, max_elements)
    if n < 0 or n * epochs > max_elements:
        return
    reference = _epoch_boundaries(dataset, epochs, n, max_elements, None)
    if reference is None:
        return
    for name, variant in checked:
        run = _epoch_boundaries(variant, epochs, n, max_elements, reference.seed)
        if run is None:
            raise AssertionError(
                f"{variant.repeat(epochs)!r} (the {name} path) has more than {max_elements} "
                f"elements; the dataset's repetition has {len(reference.elements)}"
            )
        _assert_same_run(run.elements, reference.elements, name, variant.repeat(epochs))


def assert_conformant(
    dataset: Dataset,
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    max_positions: int | None = None,
    variants: Sequence[str] = VARIANTS,
) -> None:
    """Runs every check of the kit on ``dataset`` and on each of its ``variants``.

    Restores at every position (with the state's structure), chained resumes,
    the exhausted state (for finite datasets), and epoch boundaries under
    ``repeat``; each also through the ops' streaming iterators and under
    ``prefetch`` (``variants``; ``()`` checks the dataset alone).
    """
    assert_restorable_at_every_position(
        dataset, max_elements=max_elements, max_positions=max_positions, variants=variants
    )
    assert_chained_resumes(dataset, max_elements=max_elements, variants=variants)
    n = _length(dataset, max_elements)
    if 0 <= n <= max_elements:
        assert_exhausted_restores_exhausted(
            dataset, max_elements=max_elements + 1, variants=variants
        )
    assert_epoch_boundaries(dataset, variants=variants)
