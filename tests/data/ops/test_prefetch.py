from __future__ import annotations

import gc
import itertools
import time
import traceback

import numpy as np
import pytest

import pipestate as ps
from pipestate.data._mode import ModeChooser
from pipestate.testing import assert_conformant, assert_elements_equal, walk

from ._threads import (  # noqa: F401  (an autouse fixture)
    no_threads_left_from_other_tests,
    pipestate_threads,
    wait_for_no_threads,
)

pytestmark = pytest.mark.timeout(60)


def double(x: np.int64) -> np.int64:
    return x * 2


def is_even(x: np.int64) -> bool:
    return bool(x % 2 == 0)


def fails_at_five(x: np.int64) -> np.int64:
    if x == 5:
        raise KeyError("element five is bad")
    return x


PIPELINES = {
    "random-access": lambda: ps.Dataset.range(25),
    "map-batch": lambda: ps.Dataset.range(30).map(double).batch(4),
    "seedless-shuffle": lambda: ps.Dataset.range(20).global_shuffle().batch(3),
    "streaming-filter": lambda: ps.Dataset.range(30).filter(is_even),
    "streaming-shuffle": lambda: ps.Dataset.range(40).filter(is_even).shuffle(6, seed=3).batch(3),
    "nested": lambda: ps.Dataset.range(30).prefetch(3).filter(is_even).map(double),
    "infinite": lambda: ps.Dataset.range(4).repeat(),
}


@pytest.mark.parametrize("make", PIPELINES.values(), ids=PIPELINES.keys())
@pytest.mark.parametrize("buffer_size", [1, 4, ps.data.AUTOTUNE], ids=["1", "4", "autotune"])
def test_conformance(make, buffer_size: int) -> None:
    assert_conformant(make().prefetch(buffer_size), max_elements=40)


@pytest.mark.parametrize("make", PIPELINES.values(), ids=PIPELINES.keys())
def test_same_elements_and_states_as_without_prefetch(make) -> None:
    ds = make()
    plain_elements, plain_states, _ = walk(ds, 40)
    elements, states, _ = walk(ds.prefetch(2), 40)
    assert len(elements) == len(plain_elements)
    if ds.draws_seed:  # each walk draws its own seed
        return
    for a, b in zip(elements, plain_elements):
        assert_elements_equal(a, b)
    np.testing.assert_equal(states, plain_states)


def test_state_restores_with_and_without_prefetch() -> None:
    ds = ps.Dataset.range(50).filter(is_even).shuffle(5, seed=1)
    assert ds.prefetch(3).fingerprint == ds.fingerprint
    with_prefetch = iter(ds.prefetch(3))
    head = [next(with_prefetch) for _ in range(7)]
    plain = iter(ds)
    plain.set_state(with_prefetch.get_state())
    assert_elements_equal(head + list(plain), list(ds))
    again = iter(ds.prefetch(ps.data.AUTOTUNE))
    again.set_state(plain.get_state())
    with pytest.raises(StopIteration):
        next(again)


@pytest.mark.parametrize(
    "make", [PIPELINES["map-batch"], PIPELINES["streaming-filter"]], ids=["random", "streaming"]
)
def test_prefetched_elements_are_not_in_the_state(make) -> None:
    ds = make()
    it = iter(ds.prefetch(100))
    first = next(it)
    time.sleep(0.2)  # let the background thread run far ahead
    plain = iter(ds)
    next(plain)
    np.testing.assert_equal(it.get_state(), plain.get_state())
    assert_elements_equal(first, next(iter(ds)))
    it.close()


def test_set_state_drops_the_buffer() -> None:
    ds = ps.Dataset.range(100).filter(is_even).prefetch(10)
    it = iter(ds)
    state = it.get_state()
    for _ in range(20):
        next(it)
    it.set_state(state)
    assert [int(x) for x in it] == list(range(0, 100, 2))


def test_buffer_size_zero_is_the_input_itself() -> None:
    ds = ps.Dataset.range(10).filter(is_even)
    it = iter(ds.prefetch(0))
    assert [int(x) for x in it] == [0, 2, 4, 6, 8]
    assert not pipestate_threads()


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(ps.Dataset.range(10).map(fails_at_five), id="random-access"),
        pytest.param(
            ps.Dataset.range(10).filter(lambda x: True).map(fails_at_five), id="streaming"
        ),
    ],
)
def test_worker_exception_surfaces_with_its_traceback(ds: ps.Dataset) -> None:
    plain = iter(ds)
    for _ in range(5):
        next(plain)
    with pytest.raises(KeyError):
        next(plain)
    it = iter(ds.prefetch(2))
    got = [int(next(it)) for _ in range(5)]
    assert got == [0, 1, 2, 3, 4]
    with pytest.raises(KeyError, match="element five is bad") as info:
        next(it)
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "fails_at_five" in frames  # raised in the worker, shown at the consumer
    assert any("pipestate" in note for note in getattr(info.value, "__notes__", []))
    # As without prefetch (and in tf.data): the failing element is consumed and the next follows.
    np.testing.assert_equal(it.get_state(), plain.get_state())
    assert [int(x) for x in it] == [int(x) for x in plain] == [6, 7, 8, 9]
    it.close()


def test_close_stops_the_thread() -> None:
    it = iter(ps.Dataset.range(1_000_000).filter(is_even).map(slow).prefetch(8))
    consume_with_work(it, 200)
    assert pipestate_threads()
    it.close()
    assert not pipestate_threads()
    with pytest.raises(RuntimeError, match="closed"):
        next(it)


def consume_with_work(it: ps.data.DatasetIterator, count: int, seconds: float = 0.001) -> list:  # type: ignore[type-arg]
    """Reads ``count`` elements, doing ``seconds`` of work of its own after each (a train step)."""
    out = []
    for _ in range(count):
        out.append(next(it))
        time.sleep(seconds)
    return out


def test_garbage_collection_stops_the_thread() -> None:
    it = iter(ps.Dataset.range(1_000_000).map(slow).prefetch(8))
    consume_with_work(it, 200)
    assert pipestate_threads()
    del it
    gc.collect()
    assert not wait_for_no_threads()


def test_repeated_restores_do_not_leak_threads() -> None:
    ds = ps.Dataset.range(1000).filter(is_even).prefetch(4)
    it = iter(ds)
    state = it.get_state()
    for _ in range(30):
        next(it)
        it.set_state(state)
    assert len(pipestate_threads()) <= 1
    it.close()
    assert not pipestate_threads()


def test_stays_random_access() -> None:
    ds = ps.Dataset.range(10).map(double).prefetch(2)
    assert len(ds) == 10
    assert ds[3] == 6
    assert ds.batch(4).cardinality() == 3


def test_repr_shows_buffer_size() -> None:
    assert repr(ps.Dataset.range(3).prefetch(5)).endswith(".prefetch(buffer_size=5)")


@pytest.mark.parametrize(
    ("buffer_size", "error", "message"),
    [
        (-2, ValueError, "buffer_size must be >= 0 or pipestate.data.AUTOTUNE"),
        ("2", TypeError, "buffer_size must be a positive integer or pipestate.data.AUTOTUNE"),
        (True, TypeError, "buffer_size must be"),
    ],
)
def test_bad_buffer_size(buffer_size: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        ps.Dataset.range(3).prefetch(buffer_size)  # type: ignore[arg-type]


def slow(x: np.int64) -> np.int64:
    time.sleep(0.001)  # work that releases the GIL, as NumPy or I/O would
    return x


def test_a_lone_thread_runs_when_it_beats_computing_inline() -> None:
    ds = ps.Dataset.range(1_000_000).map(slow).prefetch(4)
    it = iter(ds)
    idle = [int(next(it)) for _ in range(10)]  # no work of its own yet: computed inline
    assert not pipestate_threads()
    busy = [int(x) for x in consume_with_work(it, 200)]  # a training step: the thread pays
    assert pipestate_threads()
    state = it.get_state()
    assert idle + busy == list(range(210))
    restored = iter(ds)
    restored.set_state(state)
    assert [int(next(restored)) for _ in range(10)] == list(range(210, 220))
    it.close()
    restored.close()
    assert not wait_for_no_threads()


def test_an_idle_consumer_gets_elements_computed_inline() -> None:
    ds = ps.Dataset.range(1_000_000).map(double).prefetch(4)
    it = iter(ds)
    values = list(itertools.islice(it, 300_000))  # a loop with no work of its own
    assert [int(v) for v in values] == [2 * i for i in range(300_000)]
    assert it.get_state()["iterator"]["index"] == 300_000
    it.close()
    assert not wait_for_no_threads()


def run_windows(chooser: ModeChooser, windows: list[tuple[float, float]], now: float) -> float:
    """Feeds ``chooser`` windows of (elements per second, consumer's own share), 10 chunks each."""
    step = ModeChooser.WINDOW_SECONDS / 10
    for rate, own in windows:
        for _ in range(11):
            if chooser.inline:
                chooser.note_inline(own * step, step)
            chooser.count(int(rate * step))
            now += step
            if chooser.switch_due(now):
                break
    return now


def test_mode_chooser_keeps_an_idle_consumer_inline() -> None:
    chooser = ModeChooser()
    run_windows(chooser, [(1e6, 0.01)] * 40, 0.0)
    assert chooser.inline  # no own work to overlap: the thread is never tried


def test_mode_chooser_keeps_the_thread_only_when_it_is_faster() -> None:
    chooser = ModeChooser()
    now = run_windows(chooser, [(1000.0, 0.5)] * 2, 0.0)  # half the time is a training step
    assert not chooser.inline  # so the thread is tried
    now = run_windows(chooser, [(2000.0, 0.0)] * 2, now)  # and it is twice as fast: kept
    assert not chooser.inline
    chooser = ModeChooser()
    now = run_windows(chooser, [(1000.0, 0.5)] * 2, 0.0)
    assert not chooser.inline
    run_windows(chooser, [(1050.0, 0.0)] * 2, now)  # 5 % faster is not enough: back inline
    assert chooser.inline


def test_an_error_after_a_restore_rewinds_to_the_restored_stream() -> None:
    ds = ps.Dataset.range(10).filter(lambda x: True).map(fails_at_five).prefetch(2)
    it = iter(ds)
    assert [int(next(it)) for _ in range(3)] == [0, 1, 2]
    early = it.get_state()
    assert int(next(it)) == 3
    it.set_state(early)  # read inline: the rewind point must be the restored one
    assert int(next(it)) == 3
    assert int(next(it)) == 4
    with pytest.raises(KeyError, match="element five is bad"):
        next(it)
    state = it.get_state()
    plain = iter(ps.Dataset.range(10).filter(lambda x: True).map(fails_at_five))
    for _ in range(5):
        next(plain)
    with pytest.raises(KeyError):
        next(plain)
    np.testing.assert_equal(state["iterator"], plain.get_state()["iterator"])
    fresh = iter(ds)
    fresh.set_state(state)
    assert [int(x) for x in fresh] == [6, 7, 8, 9]  # restored past the failing element
    assert [int(x) for x in it] == [6, 7, 8, 9]
    it.close()
    fresh.close()
