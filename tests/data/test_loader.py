"""``Loader``: worker processes over a random-access pipeline, with exact, portable state."""

from __future__ import annotations

import collections
import gc
import json
import os
import random
import signal
import sys
import threading
import time

import numpy as np
import pytest

import pipestate as ps
from pipestate.testing import assert_elements_equal

pytestmark = pytest.mark.timeout(120)

Pair = collections.namedtuple("Pair", ["image", "label"])


def augment(x: np.int64) -> Pair:
    return Pair(np.full((2, 3), x, np.float32), x % 3)


def features(x: np.int64) -> dict[str, object]:
    return {"id": x, "name": np.str_("n" * int(x % 4)), "vec": np.arange(int(x % 3))}


def fails_at_11(x: np.int64) -> np.int64:
    if x == 11:
        raise ValueError("cannot decode element 11")
    return x


def sleepy(x: np.int64) -> np.int64:
    time.sleep(0.005)
    return x


def sleeps_forever_at_3(x: np.int64) -> np.int64:
    if x == 3:
        time.sleep(60)
    return x


class SlowToStart:
    """An identity map function that takes a second to unpickle: a worker's slow start-up."""

    def __call__(self, x: np.int64) -> np.int64:
        return x

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return _slowly_made, ()


def _slowly_made() -> SlowToStart:
    time.sleep(1.0)
    return SlowToStart()


def _take(iterator, count: int) -> list[object]:
    out = []
    for element in iterator:
        out.append(element)
        if len(out) == count:
            break
    return out


def _assert_same(actual: list[object], expected: list[object]) -> None:
    assert len(actual) == len(expected)
    for i, (a, b) in enumerate(zip(actual, expected)):
        assert_elements_equal(a, b, f"element {i}")


DATASETS = {
    "batched-namedtuple": lambda: ps.Dataset.range(50).map(augment).batch(4),
    "ragged-dicts": lambda: ps.Dataset.range(30).map(features),
    "shuffled-repeated": lambda: ps.Dataset.range(23).global_shuffle(seed=5).repeat(2).batch(5),
}


@pytest.mark.parametrize("make", DATASETS.values(), ids=DATASETS.keys())
@pytest.mark.parametrize("num_workers", [1, 3])
def test_same_elements_and_states_as_the_dataset(make, num_workers: int) -> None:
    ds = make()
    expected = list(ds)
    it = iter(ps.data.Loader(ds, num_workers=num_workers, chunk_size=2))
    plain = iter(ds)
    out = []
    for element in it:
        out.append(element)
        next(plain)
        assert it.get_state() == plain.get_state()
    it.close()
    _assert_same(out, expected)


@pytest.mark.parametrize("make", DATASETS.values(), ids=DATASETS.keys())
def test_restores_exactly_under_any_number_of_workers(make) -> None:
    ds = make()
    expected = list(ds)
    rng = random.Random(1)
    cuts = sorted(rng.sample(range(len(expected) + 1), 4))
    it = iter(ps.data.Loader(ds, num_workers=2, chunk_size=3))
    out: list[object] = []
    for cut in cuts:
        out.extend(_take(it, cut - len(out)))
        state = json.loads(json.dumps(it.get_state()))
        it.close()
        workers = rng.choice([0, 1, 3])
        it = iter(ps.data.Loader(ds, num_workers=workers, chunk_size=rng.choice([1, 4, None])))
        it.set_state(state)
    out.extend(it)
    _assert_same(out, expected)
    it.close()


def test_restore_at_every_position_with_another_worker_count() -> None:
    ds = ps.Dataset.range(40).map(augment).batch(3)
    expected = list(ds)
    it = iter(ps.data.Loader(ds, num_workers=2, chunk_size=2))
    states = [it.get_state()]
    for _ in it:
        states.append(it.get_state())
    it.close()
    restored = iter(ps.data.Loader(ds, num_workers=3, chunk_size=1))
    for position, state in enumerate(states):
        restored.set_state(state)
        assert restored.get_state() == state
        _assert_same(_take(restored, 2), expected[position : position + 2])
    restored.close()


def test_state_moves_between_loader_and_plain_iterator() -> None:
    ds = ps.Dataset.range(30).global_shuffle().batch(4)  # seed drawn per iterator, saved
    it = iter(ps.data.Loader(ds, num_workers=2))
    start = it.get_state()
    head = _take(it, 3)
    plain = iter(ds)
    plain.set_state(it.get_state())
    rest = list(plain)
    again = iter(ps.data.Loader(ds, num_workers=1))
    again.set_state(start)
    _assert_same(head + rest, list(again))
    it.close()
    again.close()


def test_restore_drops_chunks_in_flight() -> None:
    ds = ps.Dataset.range(200).map(sleepy)
    it = iter(ps.data.Loader(ds, num_workers=2, chunk_size=4, prefetch_factor=3))
    state = it.get_state()
    _take(it, 9)
    it.set_state(state)  # chunks computed for the first run are discarded as they arrive
    assert [int(x) for x in _take(it, 30)] == list(range(30))
    it.close()


def test_output_order_does_not_depend_on_chunk_timing() -> None:
    ds = ps.Dataset.range(60).map(sleepy)
    out = list(ps.data.Loader(ds, num_workers=3, chunk_size=1))
    assert [int(x) for x in out] == list(range(60))


def test_worker_exception_surfaces_with_the_remote_traceback() -> None:
    ds = ps.Dataset.range(20).map(fails_at_11)
    it = iter(ps.data.Loader(ds, num_workers=2, chunk_size=4))
    assert [int(x) for x in _take(it, 11)] == list(range(11))
    with pytest.raises(ValueError, match="cannot decode element 11") as info:
        next(it)
    assert "fails_at_11" in str(info.value.__cause__)  # the worker's traceback, as text
    assert any("Loader worker" in note for note in getattr(info.value, "__notes__", []))
    assert it.get_state()["iterator"]["index"] == 12  # past the element that raised
    assert [int(x) for x in it] == list(range(12, 20))  # as iter(ds): the error is not sticky
    it.close()


def test_killed_worker_raises_a_clear_error_and_the_state_stays_exact() -> None:
    ds = ps.Dataset.range(400).map(sleepy)
    it = iter(ps.data.Loader(ds, num_workers=2, chunk_size=5))
    got = [int(x) for x in _take(it, 6)]  # worker 1 starts once the first chunk is read
    os.kill(it._procs[1].pid, signal.SIGKILL)  # type: ignore[attr-defined]

    def read_all() -> None:
        for x in it:  # the elements received before the death count
            got.append(int(x))

    with pytest.raises(ps.data.LoaderWorkerError, match=r"worker 1 .*SIGKILL") as info:
        read_all()
    assert "set_state" in str(info.value)
    with pytest.raises(ps.data.LoaderWorkerError):  # until restored
        next(it)
    it.set_state(it.get_state())
    got.extend(int(x) for x in it)
    assert got == list(range(400))
    it.close()


def test_timeout_names_the_worker() -> None:
    # The clock starts once a worker has started, however long that takes on
    # a busy machine: only the chunk of element 3 can exceed the timeout.
    ds = ps.Dataset.range(10).map(sleeps_forever_at_3)
    it = iter(ps.data.Loader(ds, num_workers=2, chunk_size=1, timeout=0.5))
    got = []
    with pytest.raises(ps.data.LoaderWorkerError, match=r"worker 1 .*timeout=0.5"):  # noqa: PT012
        for x in it:
            got.append(int(x))
    assert got == [0, 1, 2]
    assert it.get_state()["iterator"]["index"] == 3
    it.close()


def test_timeout_does_not_count_the_workers_start_up() -> None:
    ds = ps.Dataset.range(6).map(SlowToStart())
    it = iter(ps.data.Loader(ds, num_workers=2, chunk_size=1, timeout=0.3))
    assert [int(x) for x in it] == list(range(6))
    it.close()


def _children() -> set[int]:
    import multiprocessing

    return {p.pid for p in multiprocessing.active_children() if p.name.startswith("pipestate")}


def _shm_blocks(prefix: str) -> list[str]:
    return [name for name in os.listdir("/dev/shm") if name.startswith(prefix)]


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs /dev/shm (Linux)")
def test_close_stops_the_workers_and_frees_shared_memory() -> None:
    it = iter(ps.data.Loader(ps.Dataset.range(1000).map(sleepy).batch(2), num_workers=2))
    next(it)
    prefix = it._blocks.prefix  # type: ignore[attr-defined]
    procs = list(it._procs)  # type: ignore[attr-defined]
    assert all(p.is_alive() for p in procs)
    time.sleep(0.1)
    assert _shm_blocks(prefix)  # results computed ahead, not read yet
    it.close()
    assert not any(p.is_alive() for p in procs)
    assert _shm_blocks(prefix) == []
    with pytest.raises(RuntimeError, match="closed"):
        next(it)


def test_garbage_collection_stops_the_workers() -> None:
    it = iter(ps.data.Loader(ps.Dataset.range(1000).map(sleepy), num_workers=2))
    next(it)
    procs = list(it._procs)  # type: ignore[attr-defined]
    del it
    gc.collect()
    assert not any(p.is_alive() for p in procs)


def test_workers_start_on_first_element() -> None:
    it = iter(ps.data.Loader(ps.Dataset.range(10), num_workers=2))
    it.set_state(it.get_state())
    assert not it._procs  # type: ignore[attr-defined]
    it.close()


def test_zero_workers_reads_in_this_process() -> None:
    ds = ps.Dataset.range(5)
    it = iter(ps.data.Loader(ds, num_workers=0))
    assert [int(x) for x in it] == list(range(5))


def test_len_and_repr() -> None:
    loader = ps.data.Loader(ps.Dataset.range(10).batch(3), num_workers=2)
    assert len(loader) == 4
    assert repr(loader).startswith("Loader(range(")
    assert loader.num_workers == 2
    assert ps.data.Loader(ps.Dataset.range(3), ps.data.AUTOTUNE).num_workers >= 1


def test_streaming_dataset_is_refused_with_a_suggestion() -> None:
    with pytest.raises(TypeError, match=r"random-access.*num_parallel_calls"):
        ps.data.Loader(ps.Dataset.range(10).filter(lambda x: x > 2))


@pytest.mark.parametrize("context", ["forkserver", "spawn"])
def test_unpicklable_function_is_explained(context: str) -> None:
    ds = ps.Dataset.range(10).map(lambda x: x)
    it = iter(ps.data.Loader(ds, num_workers=1, multiprocessing_context=context))
    with pytest.raises(TypeError, match="module level"):
        next(it)


def test_default_context_is_fork_while_single_threaded() -> None:
    loader = ps.data.Loader(ps.Dataset.range(3), num_workers=1)
    expected = "fork" if sys.platform.startswith("linux") else "spawn"
    if threading.active_count() == 1:
        assert loader.multiprocessing_context in {expected, "forkserver"}


def test_fork_context_takes_lambdas() -> None:
    ds = ps.Dataset.range(10).map(lambda x: x + 1)
    loader = ps.data.Loader(ds, num_workers=2, multiprocessing_context="fork")
    assert [int(x) for x in loader] == list(range(1, 11))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"num_workers": -3}, ValueError, "num_workers must be >= 0"),
        ({"num_workers": 1.5}, TypeError, "num_workers must be"),
        ({"prefetch_factor": 0}, ValueError, "prefetch_factor must be >= 1"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be >= 1"),
        ({"multiprocessing_context": "threads"}, ValueError, "multiprocessing_context"),
        ({"timeout": -1}, ValueError, "timeout"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        ps.data.Loader(ps.Dataset.range(3), **kwargs)  # type: ignore[arg-type]
