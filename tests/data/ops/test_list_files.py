from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest

import pipestate as ps
from pipestate.errors import NotFoundError, StateMismatchError
from pipestate.testing import assert_conformant

NAMES = [f"f{i:02d}.txt" for i in range(20)]


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    for name in NAMES:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "other.csv").write_bytes(b"")
    (tmp_path / "sub.txt").mkdir()  # a directory matching the glob is not a file
    return tmp_path


@pytest.fixture
def memory_dir() -> Iterator[str]:
    fs = fsspec.filesystem("memory")
    root = "/pipestate-list-files"
    for name in ("b.txt", "a.txt", "c.csv"):
        fs.pipe(f"{root}/{name}", b"")
    yield f"memory://{root}"
    fs.rm(root, recursive=True)


def _names(ds: ps.Dataset) -> list[str]:
    return [bytes(x).decode() for x in ds]


def test_sorted_matches_as_bytes(directory: Path) -> None:
    ds = ps.Dataset.list_files(str(directory / "*.txt"), shuffle=False)
    elements = list(ds)
    assert all(type(x) is np.bytes_ for x in elements)
    assert _names(ds) == [str(directory / name) for name in NAMES]
    assert len(ds) == ds.cardinality() == 20
    assert bytes(ds[3]).endswith(b"f03.txt")


def test_several_patterns_are_merged_sorted_and_deduplicated(directory: Path) -> None:
    ds = ps.Dataset.list_files(
        [str(directory / "f1*.txt"), directory / "*.csv", str(directory / "f0[0-2].txt")],
        shuffle=False,
    )
    expected = [*(f"f0{i}.txt" for i in range(3)), *(f"f1{i}.txt" for i in range(10))]
    assert _names(ds) == sorted(str(directory / n) for n in [*expected, "other.csv"])
    both = ps.Dataset.list_files((str(directory / "*.csv"), str(directory / "*")), shuffle=False)
    assert len(both) == 21


def test_a_plain_path_matches_itself(directory: Path) -> None:
    assert _names(ps.Dataset.list_files(directory / "f05.txt")) == [str(directory / "f05.txt")]


def test_memory_filesystem(memory_dir: str) -> None:
    ds = ps.Dataset.list_files(f"{memory_dir}/*.txt", shuffle=False)
    assert _names(ds) == [f"memory://{memory_dir[9:]}/a.txt", f"memory://{memory_dir[9:]}/b.txt"]
    with fsspec.open(_names(ds)[0], "rb") as f:  # the names open as they are
        assert f.read() == b""


def test_shuffle_is_deterministic_with_a_seed(directory: Path) -> None:
    pattern = str(directory / "*.txt")
    a = _names(ps.Dataset.list_files(pattern, seed=1))
    assert a == _names(ps.Dataset.list_files(pattern, seed=1))
    assert a != _names(ps.Dataset.list_files(pattern, seed=2))
    assert a != sorted(a)
    assert sorted(a) == _names(ps.Dataset.list_files(pattern, shuffle=False))
    assert _names(ps.Dataset.list_files(pattern, shuffle=True, seed=1)) == a


def test_reshuffles_each_epoch(directory: Path) -> None:
    ds = ps.Dataset.list_files(str(directory / "*.txt"), seed=7).repeat(3)
    epochs = [_names(ds)[i * 20 : (i + 1) * 20] for i in range(3)]
    assert all(sorted(epoch) == sorted(epochs[0]) for epoch in epochs)
    assert len({tuple(epoch) for epoch in epochs}) == 3


def test_seedless_shuffle_draws_per_iterator_and_saves_the_seed(directory: Path) -> None:
    ds = ps.Dataset.list_files(str(directory / "*.txt"))
    first, second = iter(ds), iter(ds)
    a = [bytes(next(first)) for _ in range(20)]
    assert a != [bytes(next(second)) for _ in range(20)]
    fresh = iter(ds)
    state = fresh.get_state()
    assert isinstance(state["iterator"]["seed"], int)
    order = [bytes(x) for x in fresh]
    restored = iter(ds)
    restored.set_state(state)
    assert [bytes(x) for x in restored] == order


def test_state_is_one_index(directory: Path) -> None:
    it = iter(ps.Dataset.list_files(str(directory / "*.txt"), seed=1))
    next(it), next(it)
    assert it.get_state()["iterator"] == {"index": 2, "seed": None}


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"shuffle": False}, id="sorted"),
        pytest.param({"seed": 3}, id="seeded"),
        pytest.param({}, id="seedless"),
    ],
)
def test_conformance(directory: Path, kwargs: dict[str, Any]) -> None:
    ds = ps.Dataset.list_files(str(directory / "*.txt"), **kwargs)
    assert_conformant(ds)
    assert_conformant(ds.batch(6))


def test_no_match(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"list_files: no files matched pattern '.*\*.nope'"):
        ps.Dataset.list_files(str(tmp_path / "*.nope"))
    with pytest.raises(FileNotFoundError, match=r"no files matched pattern \['.*a', '.*b'\]"):
        ps.Dataset.list_files([str(tmp_path / "a"), str(tmp_path / "b")])
    (tmp_path / "d").mkdir()
    with pytest.raises(NotFoundError):  # a directory is not a file
        ps.Dataset.list_files(str(tmp_path / "d"))


def test_a_changed_directory_is_detected_on_restore(directory: Path) -> None:
    pattern = str(directory / "*.txt")
    ds = ps.Dataset.list_files(pattern, seed=1)
    it = iter(ds)
    next(it)
    state = json.loads(json.dumps(it.get_state()))
    rest = [bytes(x) for x in it]
    (directory / "f99.txt").write_bytes(b"")
    changed = ps.Dataset.list_files(pattern, seed=1)
    assert "matched='21 files, digest " in repr(changed)
    with pytest.raises(
        StateMismatchError,
        match=r"op #0 'list_files' had different settings than this dataset's "
        r"list_files\(.*matched='21 files, digest [0-9a-f]+'\)",
    ):
        iter(changed).set_state(state)
    # matches are taken when the dataset is made: the earlier dataset is unchanged
    restored = iter(ds)
    restored.set_state(state)
    assert [bytes(x) for x in restored] == rest


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"file_pattern": 3}, TypeError, "list_files: file_pattern must be a glob"),
        ({"file_pattern": [3]}, TypeError, "list_files: a file name must be a str"),
        ({"file_pattern": []}, ValueError, "file_pattern is an empty list"),
        ({"file_pattern": "x", "shuffle": 1}, TypeError, "shuffle must be a bool or None, got 1"),
        ({"file_pattern": "x", "seed": "1"}, TypeError, "seed must be an integer, got str"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        ps.Dataset.list_files(**kwargs)


# --------------------------------------------------------------- TensorFlow parity
def test_same_names_as_tensorflow(directory: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    for pattern in (str(directory / "*.txt"), [str(directory / "f1*"), str(directory / "*.csv")]):
        theirs = list(tf.data.Dataset.list_files(pattern, shuffle=False).as_numpy_iterator())
        ours = [bytes(x) for x in ps.Dataset.list_files(pattern, shuffle=False)]
        assert ours == [name for name in theirs if not name.endswith(b"sub.txt")]
    shuffled = list(tf.data.Dataset.list_files(str(directory / "f*.txt")).as_numpy_iterator())
    ours = [bytes(x) for x in ps.Dataset.list_files(str(directory / "f*.txt"))]
    assert sorted(ours) == sorted(shuffled)
