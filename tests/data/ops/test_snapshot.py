from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.errors import NotFoundError
from pipestate.testing import (
    assert_conformant,
    assert_restorable_at_every_position,
    roundtrip_state,
)

D = ps.Dataset
_names = itertools.count()


def memory_dir(label: str) -> str:
    return f"memory://snapshot-tests/{label}-{next(_names)}"


def ints(ds: Any) -> list[int]:
    return [int(x) for x in ds]


class Counted:
    """A map function that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: Any) -> Any:
        self.calls += 1
        return x * 10


def test_first_run_writes_later_runs_read(tmp_path: Path) -> None:
    f = Counted()
    ds = D.range(8).map(f).snapshot(str(tmp_path / "snap"))
    assert ints(ds) == list(range(0, 80, 10))
    calls = f.calls
    assert calls >= 8
    (directory,) = os.listdir(tmp_path / "snap")
    assert directory == D.range(8).map(f).fingerprint
    g = Counted()  # a new run: the same pipeline, a fresh function
    assert ints(D.range(8).map(g).snapshot(str(tmp_path / "snap"))) == list(range(0, 80, 10))
    assert g.calls == 0
    # The snapshot directory is a saved dataset.
    assert ints(D.load(str(tmp_path / "snap" / directory))) == list(range(0, 80, 10))


def test_another_pipeline_writes_a_new_snapshot(tmp_path: Path) -> None:
    path = str(tmp_path / "snap")
    assert ints(D.range(4).snapshot(path)) == [0, 1, 2, 3]
    assert ints(D.range(6).snapshot(path)) == [0, 1, 2, 3, 4, 5]
    assert len(os.listdir(path)) == 2
    assert ints(D.range(4).snapshot(path)) == [0, 1, 2, 3]


def test_restore_while_writing_continues_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "snap")
    it = iter(D.range(40).map(Counted()).snapshot(path))
    ints(itertools.islice(it, 15))
    state = json.loads(json.dumps(it.get_state()))
    it.close()
    assert state["iterator"]["mode"] == "fill"
    g = Counted()
    resumed = iter(D.range(40).map(g).snapshot(path))
    resumed.set_state(state)
    assert ints(resumed) == list(range(150, 400, 10))
    assert g.calls == 25
    h = Counted()
    assert ints(D.range(40).map(h).snapshot(path)) == list(range(0, 400, 10))
    assert h.calls == 0


def test_restore_while_reading_is_one_index(tmp_path: Path) -> None:
    path = str(tmp_path / "snap")
    ds = D.range(30).snapshot(path)
    ints(ds)
    it = iter(ds)
    ints(itertools.islice(it, 12))
    state = it.get_state()
    assert state["iterator"] == {
        "mode": "read",
        "count": 12,
        "file": None,
        "bytes": 0,
        "source": state["iterator"]["source"],
        "parent": None,
        "seed": None,
    }
    fresh = iter(D.range(30).snapshot(path))
    fresh.set_state(state)
    assert ints(fresh) == list(range(12, 30))


def test_shard_func_and_reader_func(tmp_path: Path) -> None:
    path = str(tmp_path / "snap")

    def by_shard(shards: ps.Dataset) -> ps.Dataset:
        return shards.flat_map(lambda shard: shard)

    ds = D.range(9).snapshot(path, shard_func=lambda x: x % 2, reader_func=by_shard)
    assert ints(ds) == list(range(9))  # written in the input's order
    assert ints(ds) == [0, 2, 4, 6, 8, 1, 3, 5, 7]  # read through reader_func
    it = iter(ds)
    ints(itertools.islice(it, 6))
    fresh = iter(ds)
    fresh.set_state(json.loads(json.dumps(it.get_state())))
    assert ints(fresh) == [3, 5, 7]
    assert_conformant(ds, max_elements=20, variants=())


def test_read_restore_through_reader_func_needs_the_snapshot(tmp_path: Path) -> None:
    path = str(tmp_path / "snap")
    ds = D.range(5).snapshot(path, reader_func=lambda s: s.flat_map(lambda x: x))
    ints(ds)
    it = iter(ds)
    next(it)
    state = it.get_state()
    for name in os.listdir(path):
        for file in os.listdir(Path(path) / name):
            os.remove(Path(path) / name / file)
    fresh = iter(
        D.range(5).snapshot(str(tmp_path / "snap"), reader_func=lambda s: s.flat_map(lambda x: x))
    )
    with pytest.raises(NotFoundError, match=r"through its reader_func, and the store is gone"):
        fresh.set_state(state)


@pytest.mark.parametrize("compression", ["AUTO", None, "GZIP"])
@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda d, s: s(d.range(10).map(lambda x: x * 2)), id="map"),
        pytest.param(lambda d, s: s(d.range(0)), id="empty"),
        pytest.param(lambda d, s: s(d.range(12).filter(lambda x: x % 3 > 0)).batch(2), id="filter"),
        pytest.param(lambda d, s: s(d.range(5)).repeat(2), id="repeat-outside"),
        pytest.param(lambda d, s: s(d.range(3).repeat()).take(7), id="infinite"),
    ],
)
def test_conformance(build: Any, compression: str | None, tmp_path: Path) -> None:
    ds = build(D, lambda x: x.snapshot(str(tmp_path / "snap"), compression=compression))
    assert_conformant(ds, max_elements=30, variants=("prefetch",))
    remote = build(D, lambda x: x.snapshot(memory_dir("conformance"), compression=compression))
    assert_conformant(remote, max_elements=30, variants=("prefetch",))


def test_streaming_and_prefetch_paths_read_the_same_snapshot() -> None:
    ds = D.range(10).map(lambda x: x + 1).snapshot(memory_dir("variants"))
    # Each variant rebuilds the input (another fingerprint: its own snapshot).
    assert_conformant(ds, max_elements=20)


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match=r"snapshot: compression 'SNAPPY' is not available"):
        D.range(3).snapshot("memory://x", compression="SNAPPY")
    with pytest.raises(ValueError, match=r"snapshot: compression must be one of"):
        D.range(3).snapshot("memory://x", compression="LZ4")
    with pytest.raises(TypeError, match=r"snapshot: reader_func must be callable or None"):
        D.range(3).snapshot("memory://x", reader_func=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"snapshot: shard_func must be callable or None"):
        D.range(3).snapshot("memory://x", shard_func="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"snapshot: path must be a str or os.PathLike"):
        D.range(3).snapshot(None)
    with pytest.raises(TypeError, match=r"snapshot: name must be a non-empty string"):
        D.range(3).snapshot("memory://x", name=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"snapshot: shard_func .* must return a scalar integer"):
        ints(D.range(3).snapshot(memory_dir("bad"), shard_func=lambda x: "a"))


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.
PROPERTY_OP = st.builds(
    lambda compression: lambda ds: ds.snapshot(memory_dir("property"), compression=compression),
    st.sampled_from(["AUTO", "GZIP"]),
)


def test_reader_func_is_checked_when_built() -> None:
    with pytest.raises(TypeError, match=r"snapshot: reader_func .* it raised TypeError"):
        D.range(3).snapshot(memory_dir("bad"), reader_func=lambda shards: shards + 1)
    with pytest.raises(TypeError, match=r"snapshot: reader_func .* must return a Dataset, got int"):
        D.range(3).snapshot(memory_dir("bad"), reader_func=lambda shards: 1)


def test_a_failing_shard_func_is_raised_and_the_pass_stops_writing() -> None:
    path = memory_dir("failing")

    def shard(x: Any) -> int:
        if int(x) == 2:
            raise ValueError("no shard for 2")
        return 0

    it = iter(D.range(5).snapshot(path, shard_func=shard))
    assert ints(itertools.islice(it, 2)) == [0, 1]
    with pytest.raises(ValueError, match="no shard for 2"):
        next(it)
    assert ints(it) == [3, 4]  # the element after the failing one, as everywhere
    assert it.get_state()["iterator"]["mode"] == "pass"
    with pytest.raises(NotFoundError):
        D.load(f"{path}/{D.range(5).fingerprint}")


def test_a_reader_func_that_shuffles_without_a_seed_restores_exactly() -> None:
    path = memory_dir("seedless-reader")

    def reader(shards: ps.Dataset) -> ps.Dataset:
        return shards.flat_map(lambda s: s).shuffle(4)

    ds = D.range(12).snapshot(path, shard_func=lambda x: x % 3, reader_func=reader)
    assert ints(ds) == list(range(12))  # the writing pass
    it = iter(ds)
    head = ints(itertools.islice(it, 5))
    state = roundtrip_state(it.get_state())  # the shuffle's buffer: arrays, not JSON
    rest = ints(it)
    assert sorted(head + rest) == list(range(12))
    fresh = iter(D.range(12).snapshot(path, shard_func=lambda x: x % 3, reader_func=reader))
    fresh.set_state(state)
    assert ints(fresh) == rest


@pytest.mark.parametrize("reader", [None, lambda shards: shards.flat_map(lambda s: s)])
def test_restore_at_every_position_of_a_reading_pass(tmp_path: Path, reader: Any) -> None:
    ds = D.range(10).snapshot(
        str(tmp_path / "snap"), shard_func=lambda x: x % 3, reader_func=reader
    )
    ints(ds)  # writes
    with iter(ds) as it:
        assert it.get_state()["iterator"]["mode"] == "read"
    assert_restorable_at_every_position(ds, variants=("prefetch",))


def test_restore_at_every_position_of_a_writing_pass(tmp_path: Path) -> None:
    for position in range(8):
        path = str(tmp_path / f"snap{position}")
        it = iter(D.range(7).snapshot(path))
        head = ints(itertools.islice(it, position))
        state = json.loads(json.dumps(it.get_state()))
        it.close()
        resumed = iter(D.range(7).snapshot(path))
        resumed.set_state(state)
        assert head + ints(resumed) == list(range(7))
        assert ints(D.load(f"{path}/{D.range(7).fingerprint}")) == list(range(7))


def test_a_snapshot_directory_written_by_save_is_read_and_restores() -> None:
    path = memory_dir("saved-into")
    D.range(6).save(f"{path}/{D.range(6).fingerprint}")
    ds = D.range(6).snapshot(path)
    it = iter(ds)
    assert ints(itertools.islice(it, 2)) == [0, 1]
    state = json.loads(json.dumps(it.get_state()))
    assert state["iterator"]["mode"] == "read"
    fresh = iter(D.range(6).snapshot(path))
    fresh.set_state(state)
    assert ints(fresh) == [2, 3, 4, 5]
