"""``Loader`` raises the errors of a pipeline exactly where, and as, ``iter(dataset)`` does.

The reference is tf.data's behaviour, which the plain iterator follows: an
element whose computation raises is raised in its place, counts as consumed
(the state is past it), and the next ``next()`` returns the element after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import pipestate as ps
from pipestate.testing import assert_elements_equal

pytestmark = pytest.mark.timeout(120)


def fails_at_3_mod_7(x: np.int64) -> np.int64:
    if x % 7 == 3:
        raise ValueError(f"cannot decode element {int(x)}")
    return x


def ranged(x: np.int64) -> np.ndarray:
    return np.arange(x)


PIPELINES: dict[str, Callable[[], ps.Dataset]] = {
    "map": lambda: ps.Dataset.range(20).map(fails_at_3_mod_7),
    "map-batch": lambda: ps.Dataset.range(20).map(fails_at_3_mod_7).batch(4),
    "map-batch-remainder": lambda: ps.Dataset.range(23).map(fails_at_3_mod_7).batch(5),
    # Batches whose elements differ in shape can't be stacked: the batch raises.
    "ragged-batch": lambda: (
        ps.Dataset.from_tensor_slices(np.array([1, 1, 2, 2, 2, 2, 3, 1, 3, 4, 4, 4]))
        .map(ranged)
        .batch(3)
    ),
}

Event = tuple[str, Any, dict[str, Any]]


def _events(it: Iterator[Any], count: int | None = None) -> list[Event]:
    """What each ``next()`` gives (an element, or an error's type and message), and the state.

    Reads to the end, or ``count`` outcomes.
    """
    limit = 100 if count is None else count
    events: list[Event] = []
    for _ in range(limit):
        try:
            element = next(it)
        except StopIteration:
            return events
        except Exception as err:
            outcome: Event = ("error", (type(err), str(err)), it.get_state())  # type: ignore[attr-defined]
        else:
            outcome = ("element", element, it.get_state())  # type: ignore[attr-defined]
        events.append(outcome)
    if count is not None:
        return events
    raise AssertionError(f"more than {limit} outcomes: an error keeps being raised")


def _assert_same_events(actual: list[Event], expected: list[Event]) -> None:
    assert [kind for kind, _, _ in actual] == [kind for kind, _, _ in expected]
    for i, ((kind, got, got_state), (_, want, want_state)) in enumerate(zip(actual, expected)):
        if kind == "error":
            assert got == want, f"outcome {i}"  # same exception type, same message
        else:
            assert_elements_equal(got, want, f"outcome {i}")
        assert got_state == want_state, f"state after outcome {i}"


def _loader(ds: ps.Dataset, num_workers: int, chunk_size: int | None) -> Any:
    return iter(ps.data.Loader(ds, num_workers=num_workers, chunk_size=chunk_size))


@pytest.mark.parametrize("make", PIPELINES.values(), ids=PIPELINES.keys())
@pytest.mark.parametrize(
    ("num_workers", "chunk_size"),
    [(0, None), (1, 4), (2, 3), (2, None)],
    ids=["in-process", "1-worker", "2-workers", "2-workers-adaptive-chunks"],
)
def test_errors_raise_in_place_and_do_not_stick(
    make: Callable[[], ps.Dataset], num_workers: int, chunk_size: int | None
) -> None:
    ds = make()
    expected = _events(iter(ds))
    assert any(kind == "error" for kind, _, _ in expected)  # the pipeline does fail somewhere
    assert any(kind == "element" for kind, _, _ in expected)
    it = _loader(ds, num_workers, chunk_size)
    try:
        _assert_same_events(_events(it), expected)
    finally:
        it.close()


@pytest.mark.parametrize("make", PIPELINES.values(), ids=PIPELINES.keys())
@pytest.mark.parametrize("num_workers", [0, 2])
def test_after_a_restore_errors_match_the_plain_iterator(
    make: Callable[[], ps.Dataset], num_workers: int
) -> None:
    ds = make()
    plain = iter(ds)
    states = [plain.get_state()]
    expected = _events(plain)
    states.extend(state for _, _, state in expected)
    it = _loader(ds, num_workers, 2)
    try:
        _events(it, count=3)  # workers running, chunks in flight: the restore drops them
        # Restore at every position, including just after each error and at the end.
        for position, state in enumerate(states):
            it.set_state(state)
            _assert_same_events(_events(it), expected[position:])
    finally:
        it.close()


def test_state_after_an_error_restores_past_it_in_a_fresh_loader() -> None:
    ds = ps.Dataset.range(20).map(fails_at_3_mod_7).batch(4)
    it = _loader(ds, 2, 1)
    with pytest.raises(ValueError, match="cannot decode element 3"):
        next(it)
    state = it.get_state()
    it.close()
    again = _loader(ds, 1, None)
    try:
        again.set_state(state)
        assert np.asarray(next(again)).tolist() == [4, 5, 6, 7]
    finally:
        again.close()


def test_an_error_on_the_last_element_ends_the_stream() -> None:
    ds = ps.Dataset.range(18).map(fails_at_3_mod_7)  # 17 is the last one, and fails
    it = _loader(ds, 2, 4)
    try:
        out = []
        errors = []
        while True:
            try:
                out.append(int(next(it)))
            except StopIteration:
                break
            except ValueError as err:
                errors.append(str(err))
        assert out == [x for x in range(18) if x % 7 != 3]
        assert errors == [f"cannot decode element {x}" for x in (3, 10, 17)]
        assert it.get_state()["iterator"]["index"] == 18
    finally:
        it.close()


def _passed_through(element: Any) -> Any:
    return element


@pytest.mark.parametrize("make", PIPELINES.values(), ids=PIPELINES.keys())
@pytest.mark.parametrize("num_workers", [0, 2], ids=["in-process", "2-workers"])
def test_with_a_collate_fn_errors_are_raised_in_place_too(make: Any, num_workers: int) -> None:
    """In this process, pure pipelines are read ahead in blocks: errors still come in place."""
    ds = make()
    loader = ps.data.Loader(ds, num_workers=num_workers, collate_fn=_passed_through, chunk_size=3)
    it = iter(loader)
    _assert_same_events(_events(it), _events(iter(ds)))
    it.close()
