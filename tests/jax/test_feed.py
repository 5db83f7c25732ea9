"""``pipestate.jax.device_prefetch``: batches on devices, ahead of the caller, exactly once."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from jax.sharding import Mesh, NamedSharding, SingleDeviceSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import pipestate as ps  # noqa: E402
from pipestate.errors import ExternalStateError, StateMismatchError  # noqa: E402
from pipestate.jax import DeviceIterator, device_prefetch  # noqa: E402

THREAD_NAME = "pipestate-device-prefetch"


@pytest.fixture(scope="module")
def mesh() -> Mesh:
    assert len(jax.devices()) == 8, "tests/conftest.py sets eight CPU devices"
    return Mesh(np.array(jax.devices()), ("batch",))


def _record(x: Any) -> dict[str, np.ndarray]:
    return {"x": np.full(3, x, np.float32), "y": np.int32(x)}


def random_access(n: int = 40) -> ps.Dataset:
    return ps.Dataset.range(n).map(_record).batch(8, drop_remainder=True)


def shuffled(n: int = 40) -> ps.Dataset:
    return ps.Dataset.range(n).global_shuffle(seed=3).map(_record).batch(8, drop_remainder=True)


def streaming(n: int = 60) -> ps.Dataset:
    return (
        ps.Dataset.range(n)
        .shuffle(7, seed=5)
        .filter(lambda x: x % 3 != 0)
        .map(_record)
        .batch(8, drop_remainder=True)
    )


PIPELINES: dict[str, Callable[[], ps.Dataset]] = {
    "random_access": random_access,
    "global_shuffle": shuffled,
    "buffer_shuffle_filter": streaming,
}


def host(batches: list[Any]) -> list[Any]:
    """Device batches as NumPy pytrees, for comparison."""
    return [jax.tree_util.tree_map(np.asarray, batch) for batch in batches]


def assert_same(actual: list[Any], expected: list[Any]) -> None:
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(host(actual), expected)):
        assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(e), i
        for got, want in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(e)):
            np.testing.assert_array_equal(got, want, err_msg=f"batch {i}")


def states_equal(a: Any, b: Any) -> bool:
    """Whether two iterator states are equal, arrays compared by value."""
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(states_equal(a[k], b[k]) for k in a)
        )
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(states_equal, a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(a, b)) and np.asarray(a).dtype == np.asarray(b).dtype
    return type(a) is type(b) and a == b


def feeder_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


# ------------------------------------------------------------------ placement


def test_default_device_delivers_the_pipelines_batches() -> None:
    expected = list(random_access())
    with device_prefetch(random_access()) as batches:
        got = list(batches)
    assert_same(got, expected)
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree_util.tree_leaves(got))
    assert got[0]["x"].sharding == SingleDeviceSharding(jax.devices()[0])


def test_a_device_places_every_leaf_on_it() -> None:
    device = jax.devices()[3]
    with device_prefetch(random_access(), device, size=1) as batches:
        batch = next(batches)
    assert batch["x"].devices() == {device}
    assert batch["y"].devices() == {device}


@pytest.mark.parametrize("thread", [True, False], ids=["thread", "inline"])
def test_named_sharding_splits_the_batch_over_eight_devices(mesh: Mesh, thread: bool) -> None:
    sharding = NamedSharding(mesh, P("batch"))
    expected = list(random_access())
    with device_prefetch(random_access(), sharding, size=2, thread=thread) as batches:
        got = list(batches)
    assert_same(got, expected)
    for batch in got:
        assert batch["x"].sharding == sharding
        assert batch["y"].sharding == sharding
        shards = batch["x"].addressable_shards
        assert len(shards) == 8
        assert {shard.data.shape for shard in shards} == {(1, 3)}


def test_a_pytree_of_shardings_places_each_subtree(mesh: Mesh) -> None:
    split = NamedSharding(mesh, P("batch"))
    replicated = NamedSharding(mesh, P())
    ds = random_access().map(lambda b: (b, b["y"] * 2))
    with device_prefetch(ds, (split, replicated)) as batches:
        (record, doubled) = next(batches)
    assert record["x"].sharding == split
    assert record["y"].sharding == split
    assert doubled.sharding == replicated
    np.testing.assert_array_equal(np.asarray(doubled), np.arange(8) * 2)
    # A full tree of shardings, one per leaf, with devices among them.
    device = jax.devices()[1]
    with device_prefetch(random_access(), {"x": split, "y": device}) as batches:
        batch = next(batches)
    assert batch["x"].sharding == split
    assert batch["y"].devices() == {device}


def test_shardings_across_processes_assemble_the_local_parts(mesh: Mesh, monkeypatch: Any) -> None:
    from pipestate.jax import _feed

    # One process can't make a sharding that spans processes; the path that
    # serves one is taken here for every leaf whose sharding is the split one.
    split = NamedSharding(mesh, P("batch"))
    assembled: list[Any] = []
    assemble = _feed._assemble

    def spy(sharding: Any, local: Any) -> Any:
        assembled.append(np.shape(local))
        return assemble(sharding, local)

    monkeypatch.setattr(_feed, "_spans_processes", lambda sharding: sharding == split)
    monkeypatch.setattr(_feed, "_assemble", spy)
    expected = list(random_access())
    device = jax.devices()[2]
    with device_prefetch(random_access(), {"x": split, "y": device}) as batches:
        got = list(batches)
    assert_same(got, expected)
    assert assembled == [(8, 3)] * len(expected)
    for batch in got:
        assert batch["x"].sharding == split
        assert batch["y"].devices() == {device}


def test_a_sharding_tree_that_is_no_prefix_of_the_batch_is_refused(mesh: Mesh) -> None:
    split = NamedSharding(mesh, P("batch"))
    with (
        device_prefetch(random_access(), {"x": split, "z": split}) as batches,
        pytest.raises(ValueError, match="not a prefix of the batch's structure"),
    ):
        next(batches)


# ------------------------------------------------------------ state semantics


def run_with_restore(
    make: Callable[[], ps.Dataset], position: int, size: int, thread: bool
) -> list[Any]:
    """Batches ``position`` from a fresh iterator, then the rest after a restore in a new one."""
    first = device_prefetch(make(), size=size, thread=thread)
    head = [next(first) for _ in range(position)]
    state = first.get_state()
    # Reading on moves the wrapped iterator further than the saved state says.
    for _ in range(2):
        next(first, None)
    first.close()
    second = device_prefetch(make(), size=size, thread=thread)
    second.set_state(state)
    tail = list(second)
    second.close()
    return head + tail


@pytest.mark.parametrize("size", [1, 2, 4])
@pytest.mark.parametrize("thread", [True, False], ids=["thread", "inline"])
@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_restore_at_every_position_matches_an_uninterrupted_run(
    name: str, thread: bool, size: int
) -> None:
    make = PIPELINES[name]
    expected = list(make())
    assert len(expected) >= 4
    for position in range(len(expected) + 1):
        assert_same(run_with_restore(make, position, size, thread), expected)


@pytest.mark.parametrize("thread", [True, False], ids=["thread", "inline"])
def test_restore_in_place_drops_the_batches_read_ahead(thread: bool) -> None:
    expected = list(shuffled())
    batches = device_prefetch(shuffled(), size=4, thread=thread)
    got = [next(batches), next(batches)]
    state = batches.get_state()
    next(batches)
    batches.set_state(state)
    got += list(batches)
    assert_same(got, expected)
    # After the end: a restore starts reading again.
    batches.set_state(state)
    assert_same([next(batches)], expected[2:3])
    batches.close()


@pytest.mark.parametrize("make", [shuffled, streaming], ids=["global_shuffle", "streaming"])
def test_the_state_is_the_pipelines_and_restores_into_a_plain_iterator(
    make: Callable[[], ps.Dataset],
) -> None:
    ds = make()
    expected = list(ds)
    with device_prefetch(ds, size=4) as batches:
        next(batches)
        next(batches)
        state = batches.get_state()
    plain = iter(ds)
    for _ in range(2):
        next(plain)
    assert states_equal(state, plain.get_state())
    resumed = iter(ds)
    resumed.set_state(state)
    assert_same([jax.tree_util.tree_map(jax.numpy.asarray, b) for b in resumed], expected[2:])
    # And the other way: a plain iterator's state restores into a DeviceIterator.
    with device_prefetch(ds, size=2) as batches:
        batches.set_state(plain.get_state())
        assert_same(list(batches), expected[2:])


def costly_state() -> ps.Dataset:
    """A buffer shuffle after a filter: its state saves the buffer's elements (~1 MB)."""
    return (
        ps.Dataset.range(300)
        .map(lambda x: np.full(1024, x, np.float32))
        .filter(lambda x: x[0] % 7 != 0)
        .shuffle(250, seed=2)
        .batch(2)
    )


@pytest.mark.parametrize("thread", [True, False], ids=["thread", "inline"])
def test_a_costly_state_is_taken_now_and_then_and_found_by_reading_again(thread: bool) -> None:
    expected = list(costly_state())
    batches = device_prefetch(costly_state(), size=2, thread=thread)
    head = [next(batches) for _ in range(len(expected) // 2)]
    assert batches._source.every > 1  # taking the state after every batch would dominate
    state = batches.get_state()
    assert (
        batches.get_state()["iterator"]["parent"]["produced"]
        == state["iterator"]["parent"]["produced"]
    )
    batches.close()
    resumed = device_prefetch(costly_state(), size=2, thread=thread)
    resumed.set_state(state)
    assert_same(head + list(resumed), expected)
    resumed.close()
    # Every position: the state found by reading again is the one taken directly.
    plain = iter(costly_state())
    batches = device_prefetch(costly_state(), size=3, thread=thread)
    for position in range(len(expected) + 1):
        assert states_equal(batches.get_state(), plain.get_state()), position
        if position < len(expected):
            next(batches)
            next(plain)
    batches.close()


def test_pipelines_that_may_reorder_take_every_state() -> None:
    from pipestate.jax._feed import _replayable

    assert _replayable(costly_state())
    ds = costly_state().map(lambda x: x, num_parallel_calls=2, deterministic=False)
    assert not _replayable(ds)
    unordered = costly_state().map(lambda x: x, num_parallel_calls=2)
    assert _replayable(unordered)
    options = ps.data.Options()
    options.deterministic = False
    assert not _replayable(iter(unordered.with_options(options)).dataset)
    with device_prefetch(ds, size=2) as batches:
        for _ in range(20):
            next(batches)
        assert batches._source.every == 1


def test_a_refused_state_changes_nothing() -> None:
    expected = list(random_access())
    batches = device_prefetch(random_access(), size=4)
    first = next(batches)
    saved = batches.get_state()
    foreign = iter(ps.Dataset.range(5)).get_state()
    with pytest.raises(StateMismatchError):
        batches.set_state(foreign)
    assert batches.get_state() == saved
    assert_same([first, *batches], expected)
    batches.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(0, 70),
    batch_size=st.integers(1, 9),
    size=st.integers(1, 5),
    thread=st.booleans(),
    global_shuffle=st.booleans(),
    cuts=st.lists(st.integers(0, 12), max_size=4),
)
def test_any_number_of_restores_delivers_every_batch_once(
    n: int, batch_size: int, size: int, thread: bool, global_shuffle: bool, cuts: list[int]
) -> None:
    ds = ps.Dataset.range(n)
    ds = ds.global_shuffle(seed=11) if global_shuffle else ds.shuffle(5, seed=11)
    ds = ds.batch(batch_size)
    expected = list(ds)
    got: list[Any] = []
    batches = device_prefetch(ds, size=size, thread=thread)
    for cut in sorted(cuts):
        while len(got) < min(cut, len(expected)):
            got.append(next(batches))
        state = batches.get_state()
        next(batches, None)  # read on, past what the state describes
        batches.close()
        batches = device_prefetch(ds, size=size, thread=thread)
        batches.set_state(state)
    got += list(batches)
    batches.close()
    assert_same(got, expected)


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_saves_and_restores_the_position(tmp_path: Any, mesh: Mesh) -> None:
    sharding = NamedSharding(mesh, P("batch"))
    expected = list(shuffled())
    batches = device_prefetch(shuffled(), sharding, size=3)
    head = [next(batches) for _ in range(2)]
    path = ps.Checkpoint(data=batches).save(str(tmp_path / "ckpt"))
    next(batches)  # progress after the save is not kept
    batches.close()
    fresh = device_prefetch(shuffled(), sharding, size=3)
    ps.Checkpoint(data=fresh).restore(path).assert_consumed()
    tail = list(fresh)
    assert all(b["x"].sharding == sharding for b in tail)
    assert_same(head + tail, expected)
    fresh.close()


def test_checkpoint_manager_keeps_the_position_of_each_save(tmp_path: Any) -> None:
    expected = list(streaming())
    batches = device_prefetch(streaming(), size=2)
    manager = ps.CheckpointManager(ps.Checkpoint(data=batches), str(tmp_path), max_to_keep=2)
    next(batches)
    manager.save()
    next(batches)
    manager.save()
    next(batches)
    batches.close()
    for path, done in zip(manager.checkpoints, [1, 2]):
        fresh = device_prefetch(streaming(), size=2)
        ps.Checkpoint(data=fresh).restore(path).assert_consumed()
        assert_same(list(fresh), expected[done:])
        fresh.close()


def test_the_marker_follows_the_wrapped_iterator() -> None:
    from pipestate.checkpoint._distributed import is_per_rank, reshards

    with device_prefetch(random_access()) as batches:
        assert is_per_rank(batches)
        assert reshards(batches)
    with device_prefetch(StatefulCounter(4)) as batches:
        assert is_per_rank(batches)
        assert not reshards(batches)


class StatefulCounter:
    """An iterator outside pipestate with the Stateful protocol."""

    def __init__(self, stop: int) -> None:
        self.position = 0
        self.stop = stop
        self.closed = False

    def __iter__(self) -> StatefulCounter:
        return self

    def __next__(self) -> np.ndarray:
        if self.position == self.stop:
            raise StopIteration
        self.position += 1
        return np.arange(2, dtype=np.float32) + self.position

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = int(state["position"])

    def close(self) -> None:
        self.closed = True


def test_other_stateful_iterators_and_loaders_are_wrapped(tmp_path: Any) -> None:
    counter = StatefulCounter(6)
    batches = device_prefetch(counter, size=3)
    assert float(next(batches)[0]) == 1.0
    state = batches.get_state()
    assert state == {"position": 1}
    with pytest.raises(ValueError, match="external_state_policy"):
        batches.get_state(external_state_policy="ignore")
    path = ps.Checkpoint(data=batches).save(str(tmp_path / "ckpt"))
    assert [float(b[0]) for b in batches] == [2.0, 3.0, 4.0, 5.0, 6.0]
    ps.Checkpoint(data=batches).restore(path)
    assert float(next(batches)[0]) == 2.0
    batches.close()
    assert counter.closed

    loader = ps.data.Loader(random_access(), num_workers=0)
    expected = list(random_access())
    with device_prefetch(loader, size=2) as batches:
        next(batches)
        state = batches.get_state()
    with device_prefetch(iter(loader), size=2) as batches:
        batches.set_state(state)
        assert_same(list(batches), expected[1:])


def test_external_state_is_reported_when_the_state_is_asked_for() -> None:
    ds = ps.Dataset.from_generator(
        lambda: (np.full(2, i, np.float32) for i in range(6)),
        output_signature=ps.data.TensorSpec((2,), np.float32),
    ).batch(2)
    with device_prefetch(ds, size=2) as batches:
        assert len(list(batches)) == 3  # reading never asks for the state's policy
        with pytest.raises(ExternalStateError):
            batches.get_state()
        assert batches.get_state(external_state_policy="ignore")["version"] == 1


# --------------------------------------------------------------------- errors


def failing(at: int) -> ps.Dataset:
    def check(x: np.ndarray) -> np.ndarray:
        if x == at:
            raise KeyError(f"record {at} is damaged")
        return x

    return ps.Dataset.range(20).map(check).batch(4)


def outcomes(iterator: Any) -> list[Any]:
    """Every batch and error of an iterator, reading on after errors, up to its end."""
    seen: list[Any] = []
    for _ in range(50):
        try:
            batch = next(iterator)
        except StopIteration:
            return seen
        except Exception as err:
            seen.append((type(err), str(err)))
        else:
            seen.append(np.asarray(batch).tolist())
    raise AssertionError("no end")


@pytest.mark.parametrize("size", [1, 3])
@pytest.mark.parametrize("thread", [True, False], ids=["thread", "inline"])
def test_a_pipeline_error_surfaces_at_its_batch_with_its_type(size: int, thread: bool) -> None:
    expected = outcomes(iter(failing(9)))
    assert (KeyError, "'record 9 is damaged'") in expected
    with device_prefetch(failing(9), size=size, thread=thread) as batches:
        assert outcomes(batches) == expected
    # The failing batch counts as consumed, as in the pipeline: a state taken
    # right after the error resumes after it.
    with device_prefetch(failing(9), size=size, thread=thread) as batches:
        for _ in range(2):
            next(batches)
        with pytest.raises(KeyError, match="record 9"):
            next(batches)
        state = batches.get_state()
    plain = iter(failing(9))
    plain.set_state(state)
    with device_prefetch(failing(9), size=size, thread=thread) as batches:
        batches.set_state(state)
        assert outcomes(batches) == outcomes(plain)


class StateUnavailableError(Exception):
    """A wrapped iterator's get_state() failing."""


class Flaky:
    """Batches 1..stop whose get_state() (or read) raises on the calls numbered in ``fail``."""

    def __init__(
        self, stop: int = 8, *, state_fails: set[int] = frozenset(), error: Any = None
    ) -> None:
        self.position = 0
        self.stop = stop
        self.calls = 0
        self.state_fails = state_fails
        self.error = error or StateUnavailableError
        self.read_fails: set[int] = set()

    def __iter__(self) -> Flaky:
        return self

    def __next__(self) -> np.ndarray:
        if self.position + 1 in self.read_fails:  # before it moves on: nothing consumed
            self.read_fails.discard(self.position + 1)
            raise self.error(f"read of batch {self.position + 1} interrupted")
        if self.position == self.stop:
            raise StopIteration
        self.position += 1
        return np.full(2, self.position, np.float32)

    def get_state(self) -> dict[str, int]:
        self.calls += 1
        if self.calls in self.state_fails:
            raise self.error(f"state unavailable at call {self.calls}")
        return {"position": self.position}

    def set_state(self, state: dict[str, int]) -> None:
        self.position = int(state["position"])


def outcomes_and_states(batches: DeviceIterator) -> list[Any]:
    """Each batch's first value (or the error), with get_state() after it, up to the end."""
    seen: list[Any] = []
    for _ in range(50):
        try:
            batch = next(batches)
        except StopIteration:
            return seen
        except (Exception, KeyboardInterrupt) as err:  # not pytest's timeout
            seen.append((type(err).__name__, str(err), batches.get_state()["position"]))
        else:
            seen.append((int(np.asarray(batch)[0]), batches.get_state()["position"]))
    raise AssertionError("no end")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("size", [1, 2, 3])
@pytest.mark.parametrize("thread", [True, False], ids=["thread", "inline"])
@pytest.mark.parametrize(
    "fails", [{2}, {4}, {4, 5}, {9}], ids=["first", "third", "third_twice", "last"]
)
def test_a_failed_state_is_raised_at_its_batch_and_the_batch_kept(
    fails: set[int], thread: bool, size: int
) -> None:
    # Call 1 is the state at the start, call k + 1 the state after batch k; after a
    # failure the state is asked for again before the batch is returned.
    batch = min(fails) - 1
    errors = [("StateUnavailableError", f"state unavailable at call {c}", batch - 1) for c in fails]
    expected = [(k, k) for k in range(1, batch)] + sorted(errors, key=lambda e: e[1])
    expected += [(k, k) for k in range(batch, 9)]
    with device_prefetch(Flaky(8, state_fails=fails), size=size, thread=thread) as batches:
        assert outcomes_and_states(batches) == expected


@pytest.mark.timeout(30)
@pytest.mark.parametrize("thread", [True, False], ids=["thread", "inline"])
def test_a_restore_after_a_failed_state_resumes_exactly(thread: bool) -> None:
    with device_prefetch(Flaky(8, state_fails={5}), size=2, thread=thread) as batches:
        assert [int(np.asarray(next(batches))[0]) for _ in range(3)] == [1, 2, 3]
        with pytest.raises(StateUnavailableError):
            next(batches)
        state = batches.get_state()
        assert state == {"position": 3}
        assert int(np.asarray(next(batches))[0]) == 4
        batches.set_state(state)
        assert [int(np.asarray(b)[0]) for b in batches] == [4, 5, 6, 7, 8]


@pytest.mark.timeout(30)
def test_the_thread_never_dies_without_waking_the_caller(monkeypatch: Any) -> None:
    from pipestate.jax import _feed

    produce = _feed._Producer.produce
    calls = []

    def broken(self: Any) -> Any:
        calls.append(threading.current_thread().name)
        if len(calls) == 3:
            raise MemoryError("no memory for the item")
        return produce(self)

    monkeypatch.setattr(_feed._Producer, "produce", broken)
    with device_prefetch(Flaky(8), size=2) as batches:
        assert int(np.asarray(next(batches))[0]) == 1
        assert int(np.asarray(next(batches))[0]) == 2
        with pytest.raises(MemoryError, match="no memory for the item"):
            next(batches)
        assert calls[2] == THREAD_NAME
        assert batches._producer.worker is None
        assert int(np.asarray(next(batches))[0]) == 3


@pytest.mark.timeout(30)
@pytest.mark.parametrize("where", ["read", "state", "device_put"])
def test_a_keyboard_interrupt_while_reading_ahead_keeps_every_batch(
    where: str, monkeypatch: Any
) -> None:
    from pipestate.jax import _feed

    wrapped = Flaky(8, error=KeyboardInterrupt)
    if where == "read":
        wrapped.read_fails = {4}
    elif where == "state":
        wrapped.state_fails = {5}  # after batch 4
    else:
        put = _feed.jax.device_put
        count = []

        def interrupted(value: Any, *args: Any) -> Any:
            count.append(1)
            if len(count) == 4:
                raise KeyboardInterrupt("put of batch 4 interrupted")
            return put(value, *args)

        monkeypatch.setattr(_feed.jax, "device_put", interrupted)
    with device_prefetch(wrapped, size=2, thread=False) as batches:
        # The first next() reads batches 1-3, the second reads batch 4 ahead and is
        # interrupted: raised at once, batch 4 is read (or put) again by the next one.
        assert outcomes_and_states(batches) == [
            (1, 1),
            ("KeyboardInterrupt", INTERRUPTED[where], 1),
            *[(k, k) for k in range(2, 9)],
        ]


INTERRUPTED = {
    "read": "read of batch 4 interrupted",
    "state": "state unavailable at call 5",
    "device_put": "put of batch 4 interrupted",
}


@pytest.mark.timeout(30)
def test_a_keyboard_interrupt_before_the_thread_starts_keeps_the_batch() -> None:
    wrapped = Flaky(4, state_fails={2}, error=KeyboardInterrupt)  # after batch 1
    with device_prefetch(wrapped, size=2, thread=True) as batches:
        assert outcomes_and_states(batches) == [
            ("KeyboardInterrupt", "state unavailable at call 2", 0),
            *[(k, k) for k in range(1, 5)],
        ]


def test_leaves_without_a_device_type_are_refused_by_path() -> None:
    ds = ps.Dataset.from_tensor_slices(
        {"ids": np.arange(4), "text": np.array(["a", "b", "c", "d"])}
    ).batch(2)
    with (
        device_prefetch(ds) as batches,
        pytest.raises(TypeError, match=r"leaf batch\['text'\] is an array of dtype \|S1"),
    ):
        next(batches)
    # Iterators outside pipestate may hold anything.
    items = Replay([(np.array([{"a": 1}], dtype=object),), {"ids": np.arange(2), "name": "x"}])
    with device_prefetch(items, thread=False) as batches:
        with pytest.raises(TypeError, match=r"leaf batch\[0\] is an array of dtype object"):
            next(batches)
        with pytest.raises(TypeError, match=r"leaf batch\['name'\] is a str 'x'"):
            next(batches)
        assert next(batches, None) is None


class Replay:
    """A list of elements behind the Stateful protocol."""

    def __init__(self, elements: list[Any]) -> None:
        self.elements = elements
        self.position = 0

    def __next__(self) -> Any:
        if self.position == len(self.elements):
            raise StopIteration
        self.position += 1
        return self.elements[self.position - 1]

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = state["position"]


def test_a_batch_the_mesh_does_not_divide_names_the_leaf(mesh: Mesh) -> None:
    sharding = NamedSharding(mesh, P("batch"))
    ds = ps.Dataset.range(10).map(_record).batch(5)
    with (
        device_prefetch(ds, sharding) as batches,
        pytest.raises(ValueError, match=r"batch\['x'\] of shape \(5, 3\)") as info,
    ):
        next(batches)
    assert info.value.__cause__ is not None  # JAX's own error, chained


def test_64_bit_integers_jax_would_wrap_are_refused() -> None:
    assert not jax.config.jax_enable_x64
    ds = ps.Dataset.from_tensor_slices({"id": np.array([1, 2, 2**40, 3])}).batch(2)
    with device_prefetch(ds, size=1) as batches:
        first = next(batches)
        assert first["id"].dtype == np.int32  # JAX's 32-bit mode, for values that fit
        np.testing.assert_array_equal(np.asarray(first["id"]), [1, 2])
        with pytest.raises(OverflowError, match=r"leaf batch\['id'\] of dtype int64 holds"):
            next(batches)


F32_MAX = float(np.finfo(np.float32).max)


@pytest.mark.parametrize("thread", [True, False], ids=["thread", "inline"])
def test_64_bit_floats_jax_would_make_infinite_are_refused(thread: bool) -> None:
    assert not jax.config.jax_enable_x64
    elements = [
        {"x": np.array([1.0000000001, 3.0])},  # rounds to float32, as JAX does
        {"x": np.array([1.0000000001, 1e300])},
        {"x": np.array([np.inf, -np.inf, np.nan, F32_MAX * (1 + 1e-9), -1e38])},
        {"x": np.array([-1e39, 2.0, 1e40])},
        {"x": 1e300},
        {"x": np.array([1 + 1e300j])},
        {"x": np.complex128(1e-3 + 2j)},
    ]
    with device_prefetch(Replay(elements), size=2, thread=thread) as batches:
        first = next(batches)["x"]
        assert first.dtype == np.float32
        np.testing.assert_array_equal(np.asarray(first), np.float32([1.0, 3.0]))
        with pytest.raises(
            OverflowError,
            match=r"leaf batch\['x'\] of dtype float64 holds 1 finite value beyond float32's "
            r"range \(first: 1e\+300\); JAX without 64-bit mode stores it as float32, where it "
            r"would become infinite. Enable 64-bit mode \(jax.config.update\('jax_enable_x64'",
        ):
            next(batches)
        kept = np.asarray(next(batches)["x"])  # infinities and NaN stay, the largest rounds
        np.testing.assert_array_equal(kept, np.float32([np.inf, -np.inf, np.nan, F32_MAX, -1e38]))
        with pytest.raises(OverflowError, match=r"holds 2 finite values .*\(first: -1e\+39\)"):
            next(batches)
        with pytest.raises(OverflowError, match=r"batch\['x'\] of a Python float holds 1 finite"):
            next(batches)
        with pytest.raises(OverflowError, match=r"dtype complex128 .* beyond complex64's range"):
            next(batches)
        last = next(batches)["x"]
        assert last.dtype == np.complex64
        assert next(batches, None) is None


def test_python_ints_beyond_int32_are_refused_like_64_bit_integers() -> None:
    elements: list[Any] = [(2**31 - 1, [-(2**31)]), (1, [2, 2**40]), np.int64(-(2**40)), 3]
    with device_prefetch(Replay(elements), thread=False) as batches:
        first = next(batches)
        assert first[0].dtype == np.int32
        assert (int(first[0]), int(first[1][0])) == (2**31 - 1, -(2**31))
        with pytest.raises(
            OverflowError,
            match=r"leaf batch\[1\]\[1\] of a Python int holds the value 1099511627776, outside "
            r"int32's range; JAX without 64-bit mode stores it as int32 and would wrap it",
        ):
            next(batches)
        with pytest.raises(OverflowError, match=r"leaf batch of dtype int64 holds the value -1"):
            next(batches)
        assert int(next(batches)) == 3


def test_64_bit_mode_puts_64_bit_leaves_as_they_are() -> None:
    elements: list[Any] = [{"f": np.array([1e300]), "i": 2**40}, {"i": 2**70}]
    with jax.enable_x64(True), device_prefetch(Replay(elements), thread=False) as batches:
        first = next(batches)
        assert first["f"].dtype == np.float64
        assert float(first["f"][0]) == 1e300
        assert int(first["i"]) == 2**40
        # JAX's own OverflowError, naming the leaf.
        with pytest.raises(OverflowError, match=r"could not put leaf batch\['i'\]") as info:
            next(batches)
        assert isinstance(info.value.__cause__, OverflowError)
        assert "too large to convert to int64" in str(info.value)


class DeviceLostError(RuntimeError):
    """An error of the transfer itself."""


class TwoArgumentError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)


@pytest.mark.parametrize(
    ("error", "rewritten"),
    [
        (DeviceLostError("device 0 is gone"), True),
        (OSError("pinned memory exhausted"), True),
        (TwoArgumentError(7, "no"), False),
    ],
    ids=["runtime_error_subclass", "os_error", "two_arguments"],
)
def test_a_transfer_error_keeps_its_type_and_names_the_leaf(
    error: Exception, rewritten: bool, monkeypatch: Any
) -> None:
    from pipestate.jax import _feed

    put = _feed.jax.device_put

    def failing_put(value: Any, *args: Any) -> Any:
        leaves = jax.tree_util.tree_leaves(value)
        if any(np.asarray(leaf).shape == (5,) for leaf in leaves):
            raise error
        return put(value, *args)

    monkeypatch.setattr(_feed.jax, "device_put", failing_put)
    elements = [{"a": np.zeros(2), "b": np.zeros(5)}, {"a": np.ones(2), "b": np.ones(3)}]
    with device_prefetch(Replay(elements), thread=False) as batches:
        with pytest.raises(type(error)) as info:
            next(batches)
        assert type(info.value) is type(error)
        if rewritten:
            assert str(info.value).startswith(
                "device_prefetch: could not put leaf batch['b'] of shape (5,) and dtype "
                f"float64 on the default device: {type(error).__name__}: {error}"
            )
            assert info.value.__cause__ is error
        else:
            assert info.value is error
        np.testing.assert_array_equal(np.asarray(next(batches)["b"]), np.ones(3))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"size": 0}, ValueError, "size must be >= 1"),
        ({"size": -2}, ValueError, "size must be >= 1"),
        ({"size": 1.5}, TypeError, "size must be an int"),
        ({"size": True}, TypeError, "size must be an int"),
        ({"thread": "yes"}, TypeError, "thread must be a bool"),
        ({"sharding": "cpu"}, TypeError, "sharding must be None, a jax.Device"),
        ({"sharding": {"x": None}}, TypeError, "sharding must be None, a jax.Device"),
        ({"sharding": [jax.devices()[0], 3]}, TypeError, "got a leaf 3"),
    ],
    ids=lambda value: str(value)[:30],
)
def test_bad_arguments_are_refused_by_name(kwargs: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        device_prefetch(random_access(), **kwargs)


def test_iterables_without_a_state_are_refused() -> None:
    with pytest.raises(TypeError, match="iterable must be a pipestate Dataset"):
        device_prefetch([np.zeros(2)])
    with pytest.raises(TypeError, match="iterable must be a pipestate Dataset"):
        device_prefetch(iter([np.zeros(2)]))
    closed = iter(random_access())
    closed.close()
    with pytest.raises(ValueError, match="is closed"):
        device_prefetch(closed)
    with (
        device_prefetch(random_access()) as batches,
        pytest.raises(TypeError, match="already a DeviceIterator"),
    ):
        device_prefetch(batches)


# -------------------------------------------------------------- background work


def test_close_stops_the_thread_and_closes_the_pipeline() -> None:
    before = len(feeder_threads())
    batches = device_prefetch(ps.Dataset.range(10**6).batch(4), size=4)
    next(batches)
    assert len(feeder_threads()) == before + 1
    wrapped = batches.iterator
    batches.close()
    assert len(feeder_threads()) == before
    with pytest.raises(RuntimeError, match="is closed"):
        next(batches)
    with pytest.raises(RuntimeError, match="is closed"):
        batches.get_state()
    with pytest.raises(RuntimeError, match="is closed"):
        next(wrapped)
    batches.close()  # idempotent


def test_an_iterator_dropped_without_close_stops_its_thread() -> None:
    before = len(feeder_threads())
    batches: DeviceIterator | None = device_prefetch(ps.Dataset.range(10**6).batch(4), size=2)
    assert batches is not None
    next(batches)
    assert len(feeder_threads()) == before + 1
    batches = None
    gc.collect()
    for thread in feeder_threads():
        thread.join(timeout=5)
    assert len(feeder_threads()) == before


def test_the_thread_reads_at_most_size_batches_ahead() -> None:
    read: list[int] = []

    def note(x: np.ndarray) -> np.ndarray:
        read.append(int(x))
        return x

    ds = ps.Dataset.from_generator(lambda: iter(range(100)), output_signature=None)
    ds = ds.map(note, stateful=True)
    with device_prefetch(ds, size=3) as batches:
        assert int(next(batches)) == 0
        for _ in range(200):  # let the thread fill its buffer
            if len(read) >= 4:
                break
            threading.Event().wait(0.005)
        threading.Event().wait(0.02)
        assert len(read) == 4  # the one returned and three ahead


def test_repr_shows_the_settings() -> None:
    with device_prefetch(random_access(), jax.devices()[0], size=3, thread=False) as batches:
        text = repr(batches)
    assert text.startswith("DeviceIterator(IndexIterator(range(")
    assert "size=3" in text
    assert "thread=False" in text
    assert repr(jax.devices()[0]) in text


# ----------------------------------------------------------------------- docs

DOCS = Path(__file__).parents[2] / "docs" / "jax.md"


def feeding_example() -> str:
    """The first Python example of docs/jax.md's "Feeding devices" section."""
    section = DOCS.read_text().split("## Feeding devices", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_docs_example_resumes_bit_for_bit(tmp_path: Path, monkeypatch: Any) -> None:
    code = feeding_example()
    loop = "for batch in batches:"
    assert code.count(loop) == 1
    (tmp_path / "whole").mkdir()
    (tmp_path / "stopped").mkdir()
    monkeypatch.chdir(tmp_path / "whole")
    whole: dict[str, Any] = {}
    exec(compile(code, "docs/jax.md", "exec"), whole)
    monkeypatch.chdir(tmp_path / "stopped")
    # Stopped after 50 steps (the last save was at step 40), then run again.
    stopped = code.replace(loop, "for batch in __import__('itertools').islice(batches, 50):")
    exec(compile(stopped, "docs/jax.md", "exec"), {})
    resumed: dict[str, Any] = {}
    exec(compile(code, "docs/jax.md", "exec"), resumed)
    assert resumed["ckpt"].step == whole["ckpt"].step == 96
    np.testing.assert_array_equal(np.asarray(resumed["w"]), np.asarray(whole["w"]))


def run_example(code: str, where: Path) -> subprocess.Popen[str]:
    where.mkdir(exist_ok=True)
    script = where / "train.py"
    script.write_text(code + "\nnp.save('w.npy', np.asarray(w))\n")
    return subprocess.Popen(
        [sys.executable, str(script)],
        cwd=where,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def test_the_docs_example_killed_mid_run_resumes_bit_for_bit(tmp_path: Path) -> None:
    code = feeding_example()
    save = "        manager.save()\n"
    assert code.count(save) == 1
    whole = run_example(code, tmp_path / "whole")
    # A run that reports its saves and takes its time, killed after its second save.
    slow = code.replace(save, save + "        print('saved', ckpt.step, flush=True)\n").replace(
        "    w = train_step(w, batch)\n", "    w = train_step(w, batch)\n    time.sleep(0.01)\n"
    )
    killed = run_example("import time\n" + slow, tmp_path / "killed")
    assert killed.stdout is not None
    for line in killed.stdout:
        if line.strip() == "saved 40":
            killed.send_signal(signal.SIGKILL)
            break
    assert killed.wait(timeout=60) == -signal.SIGKILL
    assert not (tmp_path / "killed" / "w.npy").exists()
    resumed = run_example(code, tmp_path / "killed")
    assert resumed.wait(timeout=120) == 0
    assert whole.wait(timeout=120) == 0
    np.testing.assert_array_equal(
        np.load(tmp_path / "killed" / "w.npy"), np.load(tmp_path / "whole" / "w.npy")
    )


def test_make_saveable_from_iterator_takes_a_device_iterator(tmp_path: Path) -> None:
    ds = ps.Dataset.range(40).global_shuffle(seed=1).batch(4)
    batches = device_prefetch(ds, size=3)
    ckpt = ps.Checkpoint(input=ps.data.make_saveable_from_iterator(batches))
    seen = [np.asarray(next(batches)).tolist() for _ in range(3)]
    path = ckpt.save(str(tmp_path / "ckpt"))
    after = [np.asarray(b).tolist() for b in batches]
    fresh = device_prefetch(ds, size=3)
    ps.Checkpoint(input=ps.data.make_saveable_from_iterator(fresh)).restore(path).assert_consumed()
    assert [np.asarray(b).tolist() for b in fresh] == after
    assert sorted(x for batch in seen + after for x in batch) == list(range(40))
    # The saveable's policy applies to the pipeline it wraps.
    generated = ps.Dataset.from_generator(lambda: iter(range(4)), output_signature=None)
    with pytest.raises(ValueError, match="from_generator"):
        ps.data.make_saveable_from_iterator(device_prefetch(generated.batch(2)))
    with pytest.raises(ValueError, match="or a device_prefetch iterator of one"):
        ps.data.make_saveable_from_iterator(object())
