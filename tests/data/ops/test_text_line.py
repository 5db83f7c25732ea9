from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import fsspec.implementations.local
import numpy as np
import pytest

import pipestate as ps
from pipestate.errors import DataLossError, NotFoundError, StateMismatchError
from pipestate.testing import assert_conformant, assert_elements_equal

CONTENTS = {
    "a.txt": b"alpha\nbeta\r\ngamma",  # mixed terminators, last line unterminated
    "b.txt": b"",  # empty file
    "c.txt": b"\n\nafter two empty lines\n",  # empty lines
    "d.txt": b"tab\tand\rlone CR\r\n\r\nend\r",  # \r inside a line (dropped, as tf), at the end
    "e.txt": b"single",
}
EXPECTED = [
    b"alpha",
    b"beta",
    b"gamma",
    b"",
    b"",
    b"after two empty lines",
    b"tab\tandlone CR",
    b"",
    b"end",
    b"single",
]


def _write(directory: Path, contents: dict[str, bytes] = CONTENTS) -> list[str]:
    for name, data in contents.items():
        (directory / name).write_bytes(data)
    return [str(directory / name) for name in contents]


def _lines(ds: ps.Dataset) -> list[bytes]:
    return [bytes(line) for line in ds]


@pytest.fixture
def files(tmp_path: Path) -> list[str]:
    return _write(tmp_path)


@pytest.fixture
def memory_dir() -> Iterator[str]:
    fs = fsspec.filesystem("memory")
    root = "/pipestate-text-line"
    yield f"memory://{root}"
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_lines_without_terminators_in_file_order(files: list[str]) -> None:
    ds = ps.data.TextLineDataset(files)
    lines = list(ds)
    assert all(type(line) is np.bytes_ for line in lines)
    assert [bytes(line) for line in lines] == EXPECTED
    assert ds.cardinality() == ps.data.UNKNOWN_CARDINALITY


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(b"", [], id="empty"),
        pytest.param(b"\n", [b""], id="one-empty-line"),
        pytest.param(b"a\n", [b"a"], id="terminated"),
        pytest.param(b"a", [b"a"], id="unterminated"),
        pytest.param(b"a\r\n", [b"a"], id="crlf"),
        pytest.param(b"a\r", [b"a"], id="trailing-cr"),
        pytest.param(b"a\n\r", [b"a"], id="lone-cr-at-end-is-no-line"),
        pytest.param(b"a\r\r\n", [b"a"], id="every-cr-dropped"),
        pytest.param(b"a\rb\n", [b"ab"], id="cr-inside-a-line-dropped"),
        pytest.param(b"x\n\r\r", [b"x"], id="only-crs-at-end-is-no-line"),
        pytest.param(b"\r\r\n", [b""], id="only-crs-then-lf-is-an-empty-line"),
        pytest.param(b"\x00\xff\n", [b"\x00\xff"], id="binary"),
    ],
)
def test_line_splitting(tmp_path: Path, data: bytes, expected: list[bytes]) -> None:
    path = tmp_path / "f.txt"
    path.write_bytes(data)
    assert _lines(ps.data.TextLineDataset(str(path))) == expected


def test_filename_types(files: list[str]) -> None:
    one = [b"alpha", b"beta", b"gamma"]
    assert _lines(ps.data.TextLineDataset(Path(files[0]))) == one
    assert _lines(ps.data.TextLineDataset(files[0].encode())) == one
    assert _lines(ps.data.TextLineDataset(tuple(files))) == EXPECTED
    assert _lines(ps.data.TextLineDataset(np.array(files))) == EXPECTED
    assert _lines(ps.data.TextLineDataset([])) == []
    assert ps.data.TextLineDataset([]).cardinality() == 0


def test_filenames_from_a_dataset(files: list[str], tmp_path: Path) -> None:
    listed = ps.Dataset.list_files(str(tmp_path / "*.txt"), shuffle=False)
    assert _lines(ps.data.TextLineDataset(listed)) == EXPECTED
    names = ps.Dataset.from_tensor_slices(np.array(files[:1]))
    assert _lines(ps.data.TextLineDataset(names)) == [b"alpha", b"beta", b"gamma"]


def test_batches_of_lines_keep_every_byte(files: list[str]) -> None:
    batches = list(ps.data.TextLineDataset(files).batch(4))
    assert [bytes(x) for batch in batches for x in batch] == EXPECTED
    assert batches[0].dtype == np.dtype("S5")


@pytest.mark.parametrize("compression", ["GZIP", "ZLIB"])
def test_compressed(tmp_path: Path, compression: str) -> None:
    compress = gzip.compress if compression == "GZIP" else zlib.compress
    paths = []
    for name, data in CONTENTS.items():
        path = tmp_path / f"{name}.z"
        path.write_bytes(compress(data))
        paths.append(str(path))
    ds = ps.data.TextLineDataset(paths, compression_type=compression, buffer_size=7)
    assert _lines(ds) == EXPECTED
    assert_conformant(ds)


def test_memory_filesystem(memory_dir: str) -> None:
    fs = fsspec.filesystem("memory")
    for name, data in CONTENTS.items():
        fs.pipe(f"{memory_dir}/{name}", data)
    names = [f"{memory_dir}/{name}" for name in CONTENTS]
    assert _lines(ps.data.TextLineDataset(names)) == EXPECTED
    listed = ps.Dataset.list_files(f"{memory_dir}/*.txt", shuffle=False)
    assert _lines(ps.data.TextLineDataset(listed)) == EXPECTED
    assert_conformant(ps.data.TextLineDataset(listed))


Build = Callable[[list[str], Path], ps.Dataset]

PIPELINES: dict[str, Build] = {
    "files": lambda files, d: ps.data.TextLineDataset(files),
    "one-file": lambda files, d: ps.data.TextLineDataset(files[2]),
    "empty-files-only": lambda files, d: ps.data.TextLineDataset([files[1], files[1]]),
    "list-files-sorted": lambda files, d: ps.data.TextLineDataset(
        ps.Dataset.list_files(str(d / "*.txt"), shuffle=False)
    ),
    "list-files-shuffled": lambda files, d: ps.data.TextLineDataset(
        ps.Dataset.list_files(str(d / "*.txt"), seed=3)
    ),
    "list-files-seedless": lambda files, d: ps.data.TextLineDataset(
        ps.Dataset.list_files(str(d / "*.txt"))
    ),
    "repeat": lambda files, d: ps.data.TextLineDataset(files).repeat(2),
    "repeat-reshuffles-files": lambda files, d: ps.data.TextLineDataset(
        ps.Dataset.list_files(str(d / "*.txt"), seed=5).repeat(3)
    ),
    "shuffle-lines": lambda files, d: ps.data.TextLineDataset(files[:3]).shuffle(3, seed=1),
    "batch": lambda files, d: ps.data.TextLineDataset(files).batch(3),
    "take": lambda files, d: ps.data.TextLineDataset(files).take(4),
    "interleave-files": lambda files, d: ps.Dataset.list_files(str(d / "*.txt"), seed=2).interleave(
        ps.data.TextLineDataset, cycle_length=2
    ),
}


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_conformance(files: list[str], tmp_path: Path, name: str) -> None:
    assert_conformant(PIPELINES[name](files, tmp_path))


def test_conformance_many_files(tmp_path: Path) -> None:
    contents = {
        f"f{i:02d}.txt": b"".join(b"%d-%d\n" % (i, j) for j in range(i % 4)) for i in range(30)
    }
    files = _write(tmp_path, contents)
    ds = ps.data.TextLineDataset(files)
    assert len(_lines(ds)) == sum(i % 4 for i in range(30))
    assert_conformant(ds, max_positions=40)


def test_state_layouts(files: list[str], tmp_path: Path) -> None:
    it = iter(ps.data.TextLineDataset(files))
    next(it)
    assert it.get_state()["iterator"] == {"file_index": 0, "offset": 6, "seed": None}
    for _ in range(3):
        next(it)
    assert it.get_state()["iterator"] == {"file_index": 2, "offset": 1, "seed": None}

    listed = ps.Dataset.list_files(str(tmp_path / "*.txt"), shuffle=False)
    it = iter(ps.data.TextLineDataset(listed))
    assert it.get_state()["iterator"] == {
        "parent": {"index": 0, "seed": None},
        "file": None,
        "offset": 0,
        "seed": None,
    }
    next(it)
    assert it.get_state()["iterator"] == {
        "parent": {"index": 1, "seed": None},
        "file": files[0],
        "offset": 6,
        "seed": None,
    }


class _CountingFile(io.FileIO):
    """A file that counts the bytes the OS hands back."""

    bytes_read: ClassVar[int] = 0
    opened: ClassVar[list[_CountingFile]] = []

    def __init__(self, path: str, mode: str) -> None:
        super().__init__(path, mode)
        _CountingFile.opened.append(self)

    def readinto(self, buffer: Any) -> int | None:
        n = super().readinto(buffer)
        _CountingFile.bytes_read += n or 0
        return n

    def readall(self) -> bytes:
        data = super().readall()
        _CountingFile.bytes_read += len(data)
        return data


@pytest.fixture
def count_bytes(monkeypatch: pytest.MonkeyPatch) -> type[_CountingFile]:
    """Routes fsspec's local file opens through ``_CountingFile``."""

    def counting_open(path: str, mode: str = "rb", **kwargs: Any) -> Any:
        assert mode == "rb"
        return io.BufferedReader(_CountingFile(path, "r"))

    monkeypatch.setattr(fsspec.implementations.local, "open", counting_open, raising=False)
    _CountingFile.bytes_read = 0
    _CountingFile.opened = []
    return _CountingFile


def test_restore_seeks_instead_of_rereading(
    tmp_path: Path, count_bytes: type[_CountingFile]
) -> None:
    path = tmp_path / "big.txt"
    path.write_bytes(b"".join(b"line %06d %s\n" % (i, b"x" * 40) for i in range(20_000)))
    size = path.stat().st_size
    ds = ps.data.TextLineDataset(str(path))
    it = iter(ds)
    for _ in range(19_000):
        next(it)
    state = json.loads(json.dumps(it.get_state()))
    assert count_bytes.bytes_read > 0.9 * size  # the counter sees the reading

    count_bytes.bytes_read = 0
    restored = iter(ds)
    restored.set_state(state)
    assert count_bytes.bytes_read == 0  # set_state itself opens nothing
    assert bytes(next(restored)).startswith(b"line 019000 ")
    assert count_bytes.bytes_read <= 16 * 1024  # one buffer, not the 19 000 lines before
    assert size > 1_000_000


def test_restored_file_shorter_than_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_bytes(b"one\ntwo\nthree\n")
    ds = ps.data.TextLineDataset(str(path))
    it = iter(ds)
    next(it), next(it)
    state = it.get_state()
    path.write_bytes(b"one\n")
    restored = iter(ds)
    restored.set_state(state)
    with pytest.raises(StateMismatchError, match=r"byte 8 of .*f.txt', but the file has only 4"):
        next(restored)


@pytest.mark.parametrize(
    ("inner", "message"),
    [
        ({"file_index": 6, "offset": 0, "seed": None}, r"state\['file_index'\]=6 is out of range"),
        ({"file_index": 5, "offset": 3, "seed": None}, r"state\['offset'\]=3 is out of range"),
        ({"file_index": 0, "offset": -1, "seed": None}, r"state\['offset'\]=-1 is out of range"),
        ({"file_index": 0, "seed": None}, "iterator state keys"),
    ],
)
def test_malformed_states(files: list[str], inner: dict[str, Any], message: str) -> None:
    ds = ps.data.TextLineDataset(files)
    it = iter(ds)
    next(it)
    state = it.get_state()
    with pytest.raises(StateMismatchError, match=message):
        it.set_state({**state, "iterator": inner})
    assert bytes(next(it)) == b"beta"  # the previous position is kept


def test_malformed_state_with_a_names_dataset(files: list[str]) -> None:
    ds = ps.data.TextLineDataset(ps.Dataset.from_tensor_slices(np.array(files)))
    it = iter(ds)
    state = it.get_state()
    bad = {**state["iterator"], "file": 3}
    with pytest.raises(StateMismatchError, match=r"state\['file'\] must be a file name or None"):
        it.set_state({**state, "iterator": bad})
    bad = {**state["iterator"], "offset": 5}
    with pytest.raises(StateMismatchError, match=r"state\['offset'\]=5 is out of range \[0, 0\]"):
        it.set_state({**state, "iterator": bad})


def test_fingerprint_covers_filenames_and_compression(files: list[str]) -> None:
    it = iter(ps.data.TextLineDataset(files))
    state = it.get_state()
    with pytest.raises(StateMismatchError, match="op #0 'text_line' had different settings"):
        iter(ps.data.TextLineDataset(files[:2])).set_state(state)
    with pytest.raises(StateMismatchError, match="text_line"):
        iter(ps.data.TextLineDataset(files, "GZIP")).set_state(state)
    # buffer_size changes speed only: a state restores across it
    iter(ps.data.TextLineDataset(files, buffer_size=10)).set_state(state)


def test_long_name_lists_are_summarised_in_repr(tmp_path: Path) -> None:
    names = [str(tmp_path / f"{i}.txt") for i in range(100)]
    text = repr(ps.data.TextLineDataset(names))
    assert text.startswith("text_line(filenames='100 files (0.txt ... 99.txt, digest ")
    assert len(text) < 120


def test_missing_file(tmp_path: Path) -> None:
    ds = ps.data.TextLineDataset(str(tmp_path / "nope.txt"))
    with pytest.raises(NotFoundError, match=r"text_line: file '.*nope.txt' does not exist"):
        next(iter(ds))
    with pytest.raises(FileNotFoundError):
        next(iter(ds))


def test_a_missing_file_counts_as_read(files: list[str], tmp_path: Path) -> None:
    names = [files[0], str(tmp_path / "absent.txt"), files[4]]
    it = iter(ps.data.TextLineDataset(names))
    assert [bytes(next(it)) for _ in range(3)] == [b"alpha", b"beta", b"gamma"]
    with pytest.raises(NotFoundError):
        next(it)
    state = it.get_state()
    assert state["iterator"]["file_index"] == 2
    assert bytes(next(it)) == b"single"  # the next file follows the missing one
    restored = iter(ps.data.TextLineDataset(names))
    restored.set_state(state)
    assert _lines(restored) == [b"single"]


def test_a_damaged_compressed_file_counts_as_read(tmp_path: Path) -> None:
    damaged, good = tmp_path / "damaged.gz", tmp_path / "good.gz"
    damaged.write_bytes(gzip.compress(b"x\n" * 1000)[:-30])
    good.write_bytes(gzip.compress(b"good\n"))
    it = iter(ps.data.TextLineDataset([str(damaged), str(good)], "GZIP"))
    with pytest.raises(DataLossError):
        list(it)
    assert _lines(it) == [b"good"]


def test_damaged_compressed_file(tmp_path: Path) -> None:
    path = tmp_path / "f.gz"
    path.write_bytes(gzip.compress(b"one\ntwo\n" * 1000)[:-30])
    with pytest.raises(DataLossError, match=r"f.gz' is not valid GZIP data near uncompressed"):
        list(ps.data.TextLineDataset(str(path), "GZIP"))


def test_damaged_compressed_file_found_while_restoring(tmp_path: Path) -> None:
    path = tmp_path / "f.gz"
    data = gzip.compress(b"line\n" * 10_000)
    path.write_bytes(data)
    ds = ps.data.TextLineDataset(str(path), "GZIP")
    it = iter(ds)
    for _ in range(9_000):
        next(it)
    state = it.get_state()
    path.write_bytes(data[: len(data) // 2])
    restored = iter(ds)
    restored.set_state(state)
    with pytest.raises(DataLossError, match="not valid GZIP data near uncompressed byte offset"):
        next(restored)


def test_names_dataset_of_other_elements() -> None:
    ds = ps.data.TextLineDataset(ps.Dataset.range(2))
    with pytest.raises(TypeError, match="text_line: a file name must be a str, bytes or os"):
        next(iter(ds))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"filenames": 3}, TypeError, "text_line: filenames must be a file name, a list"),
        ({"filenames": ["a", 3]}, TypeError, "a file name must be a str, bytes or os.PathLike"),
        ({"filenames": "a", "compression_type": "gzip"}, ValueError, "compression_type must be"),
        ({"filenames": "a", "compression_type": 1}, ValueError, "compression_type must be"),
        ({"filenames": "a", "buffer_size": -1}, ValueError, "buffer_size must be >= 0"),
        ({"filenames": "a", "buffer_size": 1.5}, TypeError, "buffer_size must be an integer"),
        ({"filenames": "a", "num_parallel_reads": 0}, ValueError, "num_parallel_reads must be"),
        ({"filenames": "a", "num_parallel_reads": "2"}, TypeError, "num_parallel_reads must be"),
        ({"filenames": "a", "name": 7}, TypeError, "name must be a non-empty string"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        ps.data.TextLineDataset(**kwargs)


def test_files_are_closed(files: list[str], count_bytes: type[_CountingFile]) -> None:
    it = iter(ps.data.TextLineDataset(files))
    for _ in range(4):  # into the third file, past the empty second one
        next(it)
    assert [f.closed for f in count_bytes.opened] == [True, True, False]
    it.close()
    assert all(f.closed for f in count_bytes.opened)


# --------------------------------------------------------------- TensorFlow parity
@pytest.mark.parametrize("compression", ["", "GZIP", "ZLIB"])
def test_same_lines_as_tensorflow(tmp_path: Path, compression: str) -> None:
    tf = pytest.importorskip("tensorflow")
    compress = {"": bytes, "GZIP": gzip.compress, "ZLIB": zlib.compress}[compression]
    contents = {**CONTENTS, "f.txt": b"x\n\r\r", "g.txt": b"\r\n\r\n", "h.txt": b"a\rb\r\r\n"}
    paths = []
    for name, data in contents.items():
        (tmp_path / name).write_bytes(compress(data))
        paths.append(str(tmp_path / name))
    theirs = list(tf.data.TextLineDataset(paths, compression_type=compression).as_numpy_iterator())
    ours = list(ps.data.TextLineDataset(paths, compression_type=compression))
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert_elements_equal(a, np.bytes_(b))


@pytest.mark.parametrize("reads", [2, 3, ps.data.AUTOTUNE])
def test_parallel_reads_take_one_line_of_each_open_file_in_turn(tmp_path: Path, reads: int) -> None:
    names = _write(
        tmp_path,
        {f"{f}.txt": b"".join(b"%d-%d\n" % (f, i) for i in range(f % 3 + 1)) for f in range(6)},
    )
    cycle = 4 if reads == ps.data.AUTOTUNE else reads
    expected = ps.Dataset.from_tensor_slices(names).interleave(
        ps.data.TextLineDataset, cycle_length=cycle, block_length=1
    )
    ds = ps.data.TextLineDataset(names, num_parallel_reads=reads, name="lines")
    assert _lines(ds) == _lines(expected)
    assert sorted(_lines(ds)) == sorted(_lines(ps.data.TextLineDataset(names)))
    assert_conformant(ds)
    assert "num_parallel_reads" in repr(ds)
    assert "name='lines'" in repr(ds)


def test_parallel_reads_of_a_names_dataset_restore(files: list[str]) -> None:
    ds = ps.data.TextLineDataset(
        ps.Dataset.from_tensor_slices(files).repeat(2), num_parallel_reads=3
    )
    assert sorted(_lines(ds)) == sorted(EXPECTED * 2)
    assert_conformant(ds)
