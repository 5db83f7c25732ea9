"""tf.data's ``list_files_test.py`` against pipestate and TensorFlow.

A pattern that matches nothing raises ``InvalidArgumentError`` "No files
matched pattern" in tf.data (testEmptyDirectory) and ``NotFoundError`` naming
the pattern in pipestate (docs/sources.md, ``list_files``); the test takes
each backend's error. testMultiplePatternsAsTensor gives the patterns as a
tensor; here they are a tuple (pipestate takes a str or a list / tuple).

Left out of tf.data's tests:
- tesEmptyDirectoryInitializer: disabled in tf.data itself (misspelt name).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ._base import Backend


def _touch(directory: Path, filenames: list[str]) -> None:
    for filename in filenames:
        (directory / filename).touch()


def _paths(directory: Path, filenames: list[str]) -> list[bytes]:
    return [str(directory / filename).encode() for filename in filenames]


@pytest.fixture
def tmp_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "files"
    directory.mkdir()
    return directory


def test_empty_directory(backend: Backend, tmp_dir: Path) -> None:
    error = backend.InvalidArgumentError if backend.is_tf else backend.NotFoundError
    with pytest.raises(error, match=r"[Nn]o files matched|match"):
        backend.outputs(backend.Dataset.list_files(str(tmp_dir / "*")))


def test_simple_directory(backend: Backend, tmp_dir: Path) -> None:
    filenames = ["a", "b", "c"]
    _touch(tmp_dir, filenames)
    dataset = backend.Dataset.list_files(str(tmp_dir / "*"))
    backend.assert_produces(dataset, _paths(tmp_dir, filenames), assert_items_equal=True)


def test_simple_directory_not_shuffled(backend: Backend, tmp_dir: Path) -> None:
    filenames = ["b", "c", "a"]
    _touch(tmp_dir, filenames)
    dataset = backend.Dataset.list_files(str(tmp_dir / "*"), shuffle=False)
    backend.assert_produces(dataset, _paths(tmp_dir, sorted(filenames)))


def test_fixed_seed_results_in_repeatable_order(backend: Backend, tmp_dir: Path) -> None:
    filenames = ["a", "b", "c"]
    _touch(tmp_dir, filenames)
    runs = [
        [
            bytes(name)
            for name in backend.outputs(
                backend.Dataset.list_files(str(tmp_dir / "*"), shuffle=True, seed=37)
            )
        ]
        for _ in range(3)
    ]
    # Each run gives the same names, perhaps not in expected's order, ...
    assert sorted(runs[0]) == sorted(_paths(tmp_dir, filenames))
    # ... but all runs give them in the same order.
    assert runs[0] == runs[1] == runs[2]


def test_simple_directory_initializer(backend: Backend, tmp_dir: Path) -> None:
    filenames = ["a", "b", "c"]
    _touch(tmp_dir, filenames)
    dataset = backend.Dataset.list_files(str(tmp_dir / "*"))
    backend.assert_produces(dataset, _paths(tmp_dir, filenames), assert_items_equal=True)


def test_file_suffixes(backend: Backend, tmp_dir: Path) -> None:
    filenames = ["a.txt", "b.py", "c.py", "d.pyc"]
    _touch(tmp_dir, filenames)
    dataset = backend.Dataset.list_files(str(tmp_dir / "*.py"))
    backend.assert_produces(dataset, _paths(tmp_dir, filenames[1:-1]), assert_items_equal=True)


def test_file_middles(backend: Backend, tmp_dir: Path) -> None:
    filenames = ["a.txt", "b.py", "c.pyc"]
    _touch(tmp_dir, filenames)
    dataset = backend.Dataset.list_files(str(tmp_dir / "*.py*"))
    backend.assert_produces(dataset, _paths(tmp_dir, filenames[1:]), assert_items_equal=True)


def test_no_shuffle(backend: Backend, tmp_dir: Path) -> None:
    filenames = ["a", "b", "c"]
    _touch(tmp_dir, filenames)
    dataset = backend.Dataset.list_files(str(tmp_dir / "*"), shuffle=False).repeat(2)
    names = [bytes(name) for name in backend.outputs(dataset)]
    assert sorted(names) == sorted(_paths(tmp_dir, filenames) * 2)
    # Each pass gives the names in the same order.
    assert names[:3] == names[3:]


@pytest.mark.parametrize("as_tuple", [False, True], ids=["as-list", "as-tensor"])
def test_multiple_patterns(backend: Backend, tmp_dir: Path, as_tuple: bool) -> None:
    filenames = ["a.txt", "b.py", "c.py", "d.pyc"]
    _touch(tmp_dir, filenames)
    patterns = [str(tmp_dir / pattern) for pattern in ["*.py", "*.txt"]]
    dataset = backend.Dataset.list_files(tuple(patterns) if as_tuple else patterns)
    backend.assert_produces(dataset, _paths(tmp_dir, filenames[:-1]), assert_items_equal=True)
