from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.data import _element_reader, _element_store, _element_writer
from pipestate.errors import DataLossError, InvalidArgumentError, StateMismatchError
from pipestate.testing import (
    assert_conformant,
    assert_elements_equal,
    assert_restorable_at_every_position,
)

D = ps.Dataset
_names = itertools.count()


def ints(ds: Any) -> list[int]:
    return [int(x) for x in ds]


def memory_url(label: str) -> str:
    return f"memory://cache-tests/{label}-{next(_names)}/c"


class Counted:
    """A map function that counts its calls (to see what the cache recomputes)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: Any) -> Any:
        self.calls += 1
        return x * 10


def test_memory_cache_fills_once_and_is_read_by_later_passes() -> None:
    f = Counted()
    ds = D.range(5).map(f).cache()
    assert ints(ds.repeat(3)) == [0, 10, 20, 30, 40] * 3
    assert f.calls == 5
    assert ints(ds) == [0, 10, 20, 30, 40]  # a new iterator reads the cache too
    assert f.calls == 5
    assert ds.cardinality() == 5


def test_file_cache_fills_once_and_a_new_pipeline_reads_the_files(tmp_path: Path) -> None:
    f = Counted()
    prefix = str(tmp_path / "cache")
    assert ints(D.range(6).map(f).cache(prefix).repeat(2)) == [0, 10, 20, 30, 40, 50] * 2
    assert f.calls == 6
    names = sorted(os.listdir(tmp_path))
    assert names[-1] == "cache.manifest.json"
    assert len(names) == 3
    g = Counted()  # the fingerprint names the function's class: the same pipeline
    assert ints(D.range(6).map(g).cache(prefix)) == [0, 10, 20, 30, 40, 50]
    assert g.calls == 0


def test_a_partial_pass_never_publishes() -> None:
    f = Counted()
    ds = D.range(6).map(f).cache()
    assert ints(ds.take(3)) == [0, 10, 20]
    assert ints(ds) == [0, 10, 20, 30, 40, 50]  # the partial pass did not fill the cache
    calls = f.calls
    assert calls >= 9
    assert ints(ds) == [0, 10, 20, 30, 40, 50]
    assert f.calls == calls


def test_a_partial_file_pass_never_publishes(tmp_path: Path) -> None:
    prefix = str(tmp_path / "c")
    ds = D.range(6).cache(prefix)
    assert ints(ds.take(3)) == [0, 1, 2]
    assert not (tmp_path / "c.manifest.json").exists()
    assert ints(ds) == list(range(6))
    assert (tmp_path / "c.manifest.json").exists()


def test_input_error_stops_filling_and_is_raised() -> None:
    fail = {"on": True}

    def maybe_fail(x: Any) -> Any:
        if fail["on"] and int(x) == 3:
            raise RuntimeError("boom at 3")
        return x

    ds = D.range(6).map(maybe_fail).cache()
    it = iter(ds)
    assert ints(itertools.islice(it, 3)) == [0, 1, 2]
    with pytest.raises(RuntimeError, match="boom at 3"):
        next(it)
    assert ints(it) == [4, 5]  # the pass continues, uncached
    assert it.get_state()["iterator"]["mode"] == "pass"
    fail["on"] = False
    assert ints(ds) == list(range(6))  # nothing was published with a hole in it


def test_shuffle_below_the_cache_is_frozen_by_it() -> None:
    ds = D.range(20).shuffle(20, seed=4).cache().repeat(3)
    out = ints(ds)
    assert out[:20] == out[20:40] == out[40:]
    assert sorted(out[:20]) == list(range(20))


def test_restore_during_cached_pass_reads_the_file_without_recomputing(tmp_path: Path) -> None:
    f = Counted()
    ds = D.range(50).map(f).cache(str(tmp_path / "c")).repeat(2)
    it = iter(ds)
    first = ints(itertools.islice(it, 70))
    state = it.get_state()
    assert state["iterator"]["parent"] == {
        "mode": "read",
        "count": 20,
        "file": None,
        "bytes": 0,
        "source": state["iterator"]["parent"]["source"],
        "parent": None,
        "seed": None,
    }
    calls = f.calls
    fresh = iter(D.range(50).map(f).cache(str(tmp_path / "c")).repeat(2))
    fresh.set_state(json.loads(json.dumps(state)))
    assert ints(fresh) == list(range(200, 500, 10))
    assert f.calls == calls
    assert first == list(range(0, 500, 10)) + list(range(0, 200, 10))


def test_restore_mid_fill_keeps_what_was_written(tmp_path: Path) -> None:
    f = Counted()
    prefix = str(tmp_path / "c")
    it = iter(D.range(30).map(f).cache(prefix))
    ints(itertools.islice(it, 12))
    state = json.loads(json.dumps(it.get_state()))
    it.close()  # the writer goes away (as in a crash): its file stays
    assert state["iterator"]["mode"] == "fill"
    assert state["iterator"]["count"] == 12
    g = Counted()
    resumed = iter(D.range(30).map(g).cache(prefix))
    resumed.set_state(state)
    assert resumed.get_state() == state
    assert ints(resumed) == list(range(120, 300, 10))
    assert g.calls == 18  # the 12 stored elements were not computed again
    h = Counted()
    assert ints(D.range(30).map(h).cache(prefix)) == list(range(0, 300, 10))
    assert h.calls == 0


def test_restore_mid_fill_while_the_writer_lives_passes_through(tmp_path: Path) -> None:
    prefix = str(tmp_path / "c")
    ds = D.range(10).cache(prefix)
    it = iter(ds)
    ints(itertools.islice(it, 4))
    state = it.get_state()
    other = iter(ds)
    other.set_state(state)
    assert ints(other) == [4, 5, 6, 7, 8, 9]  # the live writer's file is not touched
    assert other.get_state()["iterator"]["mode"] == "pass"
    assert ints(it) == [4, 5, 6, 7, 8, 9]
    assert ints(ds) == list(range(10))
    assert (tmp_path / "c.manifest.json").exists()


def test_memory_read_restored_in_a_new_process_recomputes_up_to_the_position() -> None:
    f = Counted()
    ds = D.range(8).map(f).cache().repeat(2)
    it = iter(ds)
    ints(itertools.islice(it, 11))
    state = json.loads(json.dumps(it.get_state()))
    f2 = Counted()
    rebuilt = D.range(8).map(f2).cache().repeat(2)  # a new process has an empty cache
    fresh = iter(rebuilt)
    fresh.set_state(state)
    assert fresh.get_state() == state
    assert ints(fresh) == [30, 40, 50, 60, 70]
    assert f2.calls == 8  # recomputed once, and the cache filled
    assert ints(rebuilt) == [0, 10, 20, 30, 40, 50, 60, 70] * 2
    assert f2.calls == 8


def test_memory_fill_restored_passes_through_and_a_later_pass_fills() -> None:
    f = Counted()
    ds = D.range(6).map(f).cache()
    it = iter(ds)
    ints(itertools.islice(it, 2))
    state = it.get_state()
    fresh = iter(ds)
    fresh.set_state(state)
    assert ints(fresh) == [20, 30, 40, 50]
    assert fresh.get_state()["iterator"]["mode"] == "pass"
    calls = f.calls
    assert ints(ds) == [0, 10, 20, 30, 40, 50]  # fills: the restored pass did not
    assert f.calls == calls + 6
    assert ints(ds) == [0, 10, 20, 30, 40, 50]
    assert f.calls == calls + 6


@pytest.mark.parametrize("where", ["memory", "memory-url", "local"])
@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda d, c: c(d.range(9).map(lambda x: x * 3)), id="map"),
        pytest.param(lambda d, c: c(d.range(0)), id="empty"),
        pytest.param(lambda d, c: c(d.range(12).filter(lambda x: x % 3 > 0)), id="filter"),
        pytest.param(
            lambda d, c: c(
                d.from_tensor_slices({"v": np.arange(8.0), "s": np.array([b"a", b"bc"] * 4)})
            ),
            id="dict",
        ),
        pytest.param(lambda d, c: c(d.range(10)).batch(3), id="then-batch"),
        pytest.param(lambda d, c: c(d.range(5)).repeat(2), id="repeat-outside"),
        pytest.param(lambda d, c: c(d.range(6).shuffle(6, seed=1)), id="shuffled"),
        pytest.param(lambda d, c: c(d.range(6).global_shuffle()), id="seedless"),
        pytest.param(lambda d, c: c(d.range(3).repeat()).take(8), id="infinite"),
    ],
)
def test_conformance(build: Any, where: str, tmp_path: Path) -> None:
    labels = itertools.count()

    def cache(ds: ps.Dataset) -> ps.Dataset:
        if where == "memory":
            return ds.cache()
        if where == "memory-url":
            return ds.cache(memory_url("conformance"))
        return ds.cache(str(tmp_path / f"c{next(labels)}"))

    ds = build(D, cache)
    # A file cache belongs to one input pipeline: the kit's streaming variant
    # rebuilds the input (another fingerprint), so it runs on memory caches only.
    variants = ("prefetch",) if where != "memory" else ("streaming", "prefetch")
    assert_conformant(ds, max_elements=30, variants=variants)


def test_file_cache_of_another_pipeline_is_refused(tmp_path: Path) -> None:
    prefix = str(tmp_path / "c")
    ints(D.range(4).cache(prefix))
    with pytest.raises(InvalidArgumentError, match=r"holds the elements of another pipeline"):
        iter(D.range(5).cache(prefix))


def full4(x: Any) -> Any:
    return np.full(4, x)


def _filled(tmp_path: Path) -> tuple[str, Path]:
    prefix = str(tmp_path / "c")
    list(D.range(20).map(full4).cache(prefix))
    data = next(p for p in tmp_path.iterdir() if p.name.startswith("c.data-"))
    return prefix, data


def test_corrupt_data_file_names_the_file_and_offset(tmp_path: Path) -> None:
    prefix, data = _filled(tmp_path)
    raw = bytearray(data.read_bytes())
    raw[200] ^= 0xFF
    data.write_bytes(bytes(raw))
    ds = D.range(20).map(full4).cache(prefix)
    with pytest.raises(DataLossError, match=r"c\.data-[0-9a-f]+-00000\.records.*byte offset \d+"):
        list(ds)


def test_truncated_data_file_is_a_data_loss_error(tmp_path: Path) -> None:
    prefix, data = _filled(tmp_path)
    data.write_bytes(data.read_bytes()[:-30])
    ds = D.range(20).map(full4).cache(prefix)
    with pytest.raises(DataLossError, match=r"truncated"):
        list(ds)


def test_corrupt_manifest_and_index_are_data_loss_errors(tmp_path: Path) -> None:
    prefix, _ = _filled(tmp_path)
    index = next(p for p in tmp_path.iterdir() if p.name.startswith("c.index-"))
    raw = bytearray(index.read_bytes())
    raw[5] ^= 1
    index.write_bytes(bytes(raw))
    with pytest.raises(DataLossError, match=r"c\.index-.*checksum"):
        iter(D.range(20).map(full4).cache(prefix))
    (tmp_path / "c.manifest.json").write_text("{not json")
    with pytest.raises(DataLossError, match=r"c\.manifest\.json.*not valid JSON"):
        iter(D.range(20).map(full4).cache(prefix))


def test_malformed_states_name_the_op(tmp_path: Path) -> None:
    ds = D.range(5).cache(str(tmp_path / "c"))
    it = iter(ds)
    next(it)
    good = it.get_state()
    for key, value, message in [
        ("mode", "write", r"cache: state\['mode'\] must be one of"),
        ("file", "../../etc", r"cache: state\['file'\] must be None or"),
        ("bytes", -1, r"cache: state\['bytes'\]=-1 is out of range"),
        ("parent", None, r"cache: state\['parent'\] must be a dict while filling"),
    ]:
        bad = json.loads(json.dumps(good))
        bad["iterator"][key] = value
        with pytest.raises(StateMismatchError, match=message):
            it.set_state(bad)
    assert ints(it) == [1, 2, 3, 4]


def test_read_state_past_the_end_is_refused() -> None:
    ds = D.range(3).cache()
    ints(ds)
    it = iter(ds)
    state = it.get_state()
    state["iterator"]["count"] = 9
    with pytest.raises(StateMismatchError, match=r"count'\]=9 is past the end of the stored 3"):
        it.set_state(state)


def test_arguments_are_checked() -> None:
    with pytest.raises(TypeError, match=r"cache: a file name must be a str, bytes or"):
        D.range(3).cache(3)
    with pytest.raises(TypeError, match=r"cache: name must be a non-empty string"):
        D.range(3).cache(name="")
    assert "name='kept'" in repr(D.range(3).cache(name="kept"))


def test_elements_that_cant_be_stored_raise_a_type_error(tmp_path: Path) -> None:
    ds = D.range(3).map(lambda x: {1: x}).cache(str(tmp_path / "c"))
    with pytest.raises(TypeError, match=r"cache: can only store dict elements with str keys"):
        ints(ds)


# ------------------------------------------------------------------ SIGKILL mid-fill
_FILLER = textwrap.dedent(
    """
    import json, sys, time
    import pipestate as ps
    prefix, state_path = sys.argv[1], sys.argv[2]
    def slow(x):
        return x * 10
    it = iter(ps.Dataset.range(400).map(slow).cache(prefix))
    for i, x in enumerate(it):
        if i % 25 == 24:
            with open(state_path + ".tmp", "w") as f:
                json.dump(it.get_state(), f)
            import os; os.replace(state_path + ".tmp", state_path)
        if i == 100:
            print("ready", flush=True)
        if i >= 100:
            time.sleep(0.002)
    """
)


def slow(x: Any) -> Any:
    return x * 10


def test_sigkill_during_a_fill_then_a_resumed_run_gets_exactly_the_elements(
    tmp_path: Path,
) -> None:
    prefix, state_path = str(tmp_path / "c"), tmp_path / "state.json"
    script = tmp_path / "filler.py"
    script.write_text(_FILLER)
    env = {**os.environ, "PYTHONPATH": str(Path(ps.__file__).parent.parent)}
    child = subprocess.Popen(
        [sys.executable, str(script), prefix, str(state_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not (tmp_path / "c.manifest.json").exists()
    location = _element_store.Location(prefix + ".")
    with pytest.raises(ps.errors.NotFoundError):
        _element_reader.StoredElements.open(location, "cache")
    state = json.loads(state_path.read_text())
    done = state["iterator"]["count"]
    assert done >= 100
    ds = D.range(400).map(slow).cache(prefix)
    resumed = iter(ds)
    resumed.set_state(state)
    assert ints(resumed) == list(range(done * 10, 4000, 10))
    assert resumed.get_state()["iterator"]["mode"] == "pass"  # at the end, published
    assert (tmp_path / "c.manifest.json").exists()
    calls: list[int] = []

    def counted(x: Any) -> Any:
        calls.append(int(x))
        return x * 10

    counted.__qualname__ = "slow"  # the same pipeline, with a function that counts
    assert ints(D.range(400).map(counted).cache(prefix)) == list(range(0, 4000, 10))
    assert calls == []


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.
PROPERTY_OP = (
    st.just(lambda ds: ds.cache()),
    st.builds(lambda n: lambda ds: ds.cache(memory_url(f"property{n}")), st.integers(0, 3)),
)


def test_elements_round_trip_exactly(tmp_path: Path) -> None:
    from collections import namedtuple

    Pair = namedtuple("Pair", ["left", "right"])
    element = (
        np.float16(1.5),
        {"s": np.bytes_(b"ab\x00c"), "z": np.zeros((2, 0, 3), np.complex64)},
        Pair(np.array([True, False]), np.array([[1, 2]], ">i4")),
    )
    ds = D.from_tensors(element).cache(str(tmp_path / "c"))
    ints_ = list(ds)
    stored = list(D.from_tensors(element).cache(str(tmp_path / "c")))
    assert_elements_equal(ints_[0][:2], element[:2])
    assert_elements_equal(stored[0][:2], element[:2])
    assert type(stored[0][2]).__name__ == "Pair"
    assert stored[0][2]._fields == ("left", "right")
    assert np.array_equal(stored[0][2].right, element[2].right)


def test_a_memory_cache_is_shared_by_iterators_that_draw_other_seeds() -> None:
    ds = D.range(10).shuffle(10).cache()  # seed=None: each iterator draws its own
    first = ints(itertools.islice(iter(ds), 10))  # all read, the end not seen: published
    second = iter(ds)
    assert ints(second) == first
    state = json.loads(json.dumps(iter(ds).get_state()))
    assert state["iterator"]["mode"] == "read"
    rebuilt = D.range(10).shuffle(10).cache()  # a new process: no cache, other seeds
    fresh = iter(rebuilt)
    with pytest.raises(StateMismatchError, match=r"filled by another iterator .* can't be"):
        fresh.set_state(state)
    assert len(ints(fresh)) == 10  # the failed restore left the iterator as it was


def test_known_cardinality_publishes_at_the_last_element(tmp_path: Path) -> None:
    ds = D.range(4).cache(str(tmp_path / "c"))
    it = iter(ds)
    assert ints(itertools.islice(it, 4)) == [0, 1, 2, 3]
    assert (tmp_path / "c.manifest.json").exists()
    with pytest.raises(StopIteration):
        next(it)


def test_a_pickled_cache_starts_empty_and_fills_its_own() -> None:
    import pickle

    f = Counted()
    ds = D.range(4).map(f).cache()
    assert ints(ds) == [0, 10, 20, 30]
    copy = pickle.loads(pickle.dumps(ds))  # as in another process
    assert copy._memory.get(ds._parents[0].fingerprint) is None
    assert ints(copy) == [0, 10, 20, 30]
    assert ints(copy) == [0, 10, 20, 30]


def test_files_of_dead_writers_are_removed_once_the_cache_is_complete(tmp_path: Path) -> None:
    prefix = str(tmp_path / "c")
    ds = D.range(10).cache(prefix)
    dead = iter(ds)
    ints(itertools.islice(dead, 4))
    dead.close()  # as a killed process: its file stays, unlocked
    live = iter(ds)
    ints(itertools.islice(live, 2))  # a live writer: its file is locked
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("c.data-")]) == 2
    assert ints(ds) == list(range(10))  # a third pass completes the cache
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len([n for n in names if n.startswith("c.data-")]) == 2  # the store's and the live one
    assert ints(live) == list(range(2, 10))  # the live writer finishes, and drops its file
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("c.data-")]) == 1


def test_a_damaged_record_is_raised_at_its_element_and_reading_goes_on(tmp_path: Path) -> None:
    prefix, data = _filled(tmp_path)
    ds = D.range(20).map(full4).cache(prefix)
    stored = _element_reader.StoredElements.open(_element_store.Location(prefix + "."), "cache")
    offset = int(stored.offsets[7])
    raw = bytearray(data.read_bytes())
    raw[offset + 20] ^= 0xFF  # inside element 7's data
    data.write_bytes(bytes(raw))
    it = iter(ds)
    assert [int(x[0]) for x in itertools.islice(it, 7)] == list(range(7))
    with pytest.raises(DataLossError, match=rf"byte offset {offset}: corrupted record"):
        next(it)
    assert [int(x[0]) for x in it] == list(range(8, 20))


def test_memory_cached_arrays_are_read_only() -> None:
    ds = D.range(3).map(lambda x: np.full(2, x)).cache()
    first = list(ds)
    with pytest.raises(ValueError, match="read-only"):
        first[0][0] = 7  # would change what the next pass reads
    assert [int(x[0]) for x in ds] == [0, 1, 2]


@pytest.mark.parametrize("n", [0, 1, 9])
def test_restore_at_every_position_of_a_fill_takes_the_file_over(tmp_path: Path, n: int) -> None:
    calls: list[int] = []

    def counted(x: Any) -> Any:
        calls.append(int(x))
        return x * 10

    counted.__qualname__ = "slow"  # the same pipeline as with slow, counting its calls
    for position in range(n + 1):
        prefix = str(tmp_path / f"c{position}")
        it = iter(D.range(n).map(slow).cache(prefix))
        head = ints(itertools.islice(it, position))
        state = json.loads(json.dumps(it.get_state()))
        it.close()
        calls.clear()
        resumed = iter(D.range(n).map(counted).cache(prefix))
        resumed.set_state(state)
        assert head + ints(resumed) == list(range(0, 10 * n, 10))
        assert all(c >= position for c in calls)  # nothing stored was computed again
        calls.clear()
        assert ints(D.range(n).map(counted).cache(prefix)) == list(range(0, 10 * n, 10))
        assert calls == []


@pytest.mark.parametrize("where", ["memory", "local"])
def test_restore_at_every_position_of_a_cached_pass(tmp_path: Path, where: str) -> None:
    ds = D.range(9).map(lambda x: x * 3).cache("" if where == "memory" else str(tmp_path / "c"))
    assert ints(ds) == list(range(0, 27, 3))  # fills
    with iter(ds) as it:
        assert it.get_state()["iterator"]["mode"] == "read"
    assert_restorable_at_every_position(ds, variants=("prefetch",))


def test_a_failing_write_passes_every_element_on_and_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import errno

    original = _element_writer.ElementWriter.write

    def full_disk(self: Any, element: Any, shard: int = 0) -> None:
        if self.count == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        original(self, element, shard)

    monkeypatch.setattr(_element_writer.ElementWriter, "write", full_disk)
    with caplog.at_level("WARNING", logger="pipestate.data"):
        assert ints(D.range(6).cache(str(tmp_path / "c"))) == list(range(6))
    assert "No space left on device" in caplog.text
    assert not (tmp_path / "c.manifest.json").exists()


def test_a_failing_publish_passes_every_element_on_and_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(self: Any, fingerprint: str, extra: Any = None) -> None:
        raise OSError("read-only file system")

    monkeypatch.setattr(_element_writer.ElementWriter, "finish", fail)
    with caplog.at_level("WARNING", logger="pipestate.data"):
        assert ints(D.range(4).cache(str(tmp_path / "c"))) == [0, 1, 2, 3]
    assert "could not be published: read-only file system" in caplog.text
    assert not (tmp_path / "c.manifest.json").exists()
