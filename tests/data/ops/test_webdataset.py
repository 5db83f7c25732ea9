from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.data._record_index import write_index_file
from pipestate.data._shards import expand_braces
from pipestate.data._webdataset import SHARD_INDEX
from pipestate.errors import DataLossError, NotFoundError, StateMismatchError, UnavailableError
from pipestate.testing import assert_conformant, roundtrip_state

from .._faulty_fs import FaultyMemoryFileSystem, faulty
from ._tars import (
    expected_samples,
    plain,
    sample_members,
    tar_bytes,
    unique_name,
    write_shards,
    write_tar,
)

__all__ = ["faulty"]

COUNTS = [3, 0, 5, 2]


def _samples(ds: ps.Dataset) -> list[dict[str, bytes]]:
    return [plain(sample) for sample in ds]


@pytest.fixture
def shards(tmp_path: Path) -> list[str]:
    return write_shards(str(tmp_path), COUNTS)


@pytest.fixture
def memory_dir() -> Iterator[str]:
    root = f"/pipestate-wds-{unique_name()}"
    yield f"memory://{root}"
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


# ------------------------------------------------------------------ elements
def test_samples_in_shard_order(shards: list[str]) -> None:
    values = list(ps.Dataset.from_webdataset(shards))
    assert all(type(v) is np.bytes_ for sample in values for v in sample.values())
    assert [plain(v) for v in values] == expected_samples(shards, COUNTS)
    assert list(values[0]) == ["__key__", "__url__", "txt", "cls"]


def test_brace_notation_and_glob(tmp_path: Path, shards: list[str]) -> None:
    expected = expected_samples(shards, COUNTS)
    braces = ps.Dataset.from_webdataset(str(tmp_path / "shard-{000..003}.tar"))
    assert _samples(braces) == expected
    glob = ps.Dataset.from_webdataset(str(tmp_path / "shard-*.tar"))
    assert _samples(glob) == expected


@pytest.mark.parametrize(
    "pattern",
    [
        "a{1..3}b",
        "s-{000..012}.tar",
        "{07..10}",
        "{a..e..2}{1,2}",
        "x{4..1}",
        "{2..-1}",
        "py{2.{5..7},3.{2,3}}",
        "{a}{}{,x}",
        r"lit\{1..2\}",
        "{Z..b}",
        "no-braces",
    ],
)
def test_brace_expansion_is_braceexpands(pattern: str) -> None:
    braceexpand = pytest.importorskip("braceexpand")
    assert expand_braces(pattern) == list(braceexpand.braceexpand(pattern))


def test_grouping_follows_webdataset_rules(tmp_path: Path) -> None:
    long_key = "d" * 120 + "/k"  # > 100 characters: a pax (or GNU) long name
    members: list[tuple[str, bytes | None]] = [
        ("dir", None),  # a directory: skipped
        ("__meta__", b"shard metadata"),  # metadata: skipped
        ("a/x.seg.PNG", b"1"),  # key a/x, field seg.png (lower-cased)
        ("a/x.txt", b"2"),
        ("__skip__/y.txt", b"m"),  # under a metadata directory: skipped
        ("a/x.json", b""),  # the same sample: the skipped member between does not split it
        ("a.b/y.txt", b"3"),  # dots in a directory name do not count
        (f"{long_key}.txt", b"\x00\x00"),
        ("a/x.txt", b"4"),  # the key again, not consecutive: a new sample
    ]
    for tar_format in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        url = write_tar(str(tmp_path / f"g{tar_format}.tar"), members, tar_format)
        assert _samples(ps.Dataset.from_webdataset([url])) == [
            {"__key__": b"a/x", "__url__": url.encode(), "seg.png": b"1", "txt": b"2", "json": b""},
            {"__key__": b"a.b/y", "__url__": url.encode(), "txt": b"3"},
            {"__key__": long_key.encode(), "__url__": url.encode(), "txt": b"\x00\x00"},
            {"__key__": b"a/x", "__url__": url.encode(), "txt": b"4"},
        ]


def test_same_samples_as_the_webdataset_package(tmp_path: Path) -> None:
    wds = pytest.importorskip("webdataset")
    urls = []
    for i in range(3):  # shards written by webdataset's own writer
        url = str(tmp_path / f"w-{i}.tar")
        with wds.TarWriter(url) as writer:
            for k in range(4):
                writer.write(
                    {"__key__": f"w{i}/{k}", "txt": f"text {i} {k}", "cls": k, "bin": bytes(k)}
                )
        urls.append(url)
    members: list[tuple[str, bytes | None]] = [
        ("top", None),
        ("__info__", b"x"),
        ("q/" + "n" * 150 + ".Data.BIN", b"\x00" * 700),
        ("q/z.a.b.c", b"abc"),
        ("q/z.d", b""),
    ]
    urls.append(write_tar(str(tmp_path / "gnu.tar"), members, tarfile.GNU_FORMAT))
    urls.append(write_tar(str(tmp_path / "pax.tar"), members, tarfile.PAX_FORMAT))
    urls.append(write_tar(str(tmp_path / "empty.tar"), []))
    ours = _samples(ps.Dataset.from_webdataset(urls))
    theirs = [plain(s) for s in wds.WebDataset(urls, shardshuffle=False)]
    assert ours == theirs
    assert len(ours) == 12 + 2 + 2


# --------------------------------------------------------------- conformance
PIPELINES: dict[str, Any] = {
    "shards": lambda urls: ps.Dataset.from_webdataset(urls),
    "one-shard": lambda urls: ps.Dataset.from_webdataset(urls[2:3]),
    "empty-shard": lambda urls: ps.Dataset.from_webdataset(urls[1:2]),
    "shuffled": lambda urls: ps.Dataset.from_webdataset(urls, shuffle_shards=True, seed=3),
    "drawn-seed-repeat": lambda urls: ps.Dataset.from_webdataset(urls, True).repeat(2),
    "map-batch": lambda urls: ps.Dataset.from_webdataset(urls).map(lambda s: s["txt"]).batch(3),
}


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_conformance(shards: list[str], name: str) -> None:
    assert_conformant(PIPELINES[name](shards))


def test_conformance_on_memory_filesystem(memory_dir: str) -> None:
    urls = write_shards(memory_dir, [2, 3])
    ds = ps.Dataset.from_webdataset(f"{memory_dir}/shard-{{000..001}}.tar")
    assert _samples(ds) == expected_samples(urls, [2, 3])
    assert_conformant(ds)


def test_state_layout(shards: list[str]) -> None:
    it = iter(ps.Dataset.from_webdataset(shards))
    next(it), next(it)
    # two samples of two members: each a 512-byte header and its data padded to 512
    assert it.get_state()["iterator"] == {"shard": 0, "offset": 4096, "samples": 2, "seed": None}
    for _ in range(3):
        next(it)  # into the third shard: the empty second one is passed
    assert it.get_state()["iterator"]["shard"] == 2
    assert it.get_state()["iterator"]["samples"] == 5
    assert list(it)
    assert it.get_state()["iterator"] == {
        "shard": 4,
        "offset": 0,
        "samples": 10,
        "seed": None,
    }


def test_shuffled_shards_differ_per_epoch_and_seed(tmp_path: Path) -> None:
    counts = [1] * 12
    urls = write_shards(str(tmp_path), counts)
    ds = ps.Dataset.from_webdataset(urls, shuffle_shards=True, seed=5).repeat(2)
    keys = [bytes(s["__key__"]) for s in ds]
    first, second = keys[:12], keys[12:]
    assert (
        sorted(first)
        == sorted(second)
        == sorted(k["__key__"] for k in expected_samples(urls, counts))
    )
    assert first != second  # a new order per pass
    other = [bytes(s["__key__"]) for s in ps.Dataset.from_webdataset(urls, True, seed=6)]
    assert other != first
    drawn = iter(ps.Dataset.from_webdataset(urls, shuffle_shards=True))
    assert isinstance(drawn.get_state()["iterator"]["seed"], int)


# -------------------------------------------------------- restore cost: seeks
def test_restore_reads_no_earlier_shard_or_member(
    memory_dir: str, faulty: type[FaultyMemoryFileSystem]
) -> None:
    counts = [40, 40, 40]
    write_shards(memory_dir, counts)
    url = memory_dir.replace("memory://", "faultymem://") + "/shard-{000..002}.tar"
    options = ps.data.ReadOptions(block_size=4096, read_ahead=1)
    ds = ps.Dataset.from_webdataset(url, read_options=options)
    it = iter(ds)
    for _ in range(40 + 30):  # into the second shard, member 60 of 80
        next(it)
    state = roundtrip_state(it.get_state())
    expected = [plain(s) for s in it]

    faulty.reset()
    restored = iter(ds)
    restored.set_state(state)
    assert faulty.reads == []  # set_state opens nothing
    assert plain(next(restored)) == expected[0]
    offset = state["iterator"]["offset"]
    assert faulty.bytes_read("shard-000") == 0
    # reads start at the saved member's block: nothing of the 60 members before it
    assert {start for path, start, _ in faulty.reads} <= {
        offset // 4096 * 4096,
        offset // 4096 * 4096 + 4096,
    }
    assert [plain(s) for s in restored] == expected[1:]


def test_restore_after_earlier_shards_are_deleted(tmp_path: Path) -> None:
    urls = write_shards(str(tmp_path), [4, 4, 4])
    ds = ps.Dataset.from_webdataset(urls)
    it = iter(ds)
    for _ in range(6):
        next(it)
    state = roundtrip_state(it.get_state())
    expected = _samples(it)
    os.remove(urls[0])  # a restore never opens the shards before the saved one
    restored = iter(ds)
    restored.set_state(state)
    assert _samples(restored) == expected
    fresh = iter(ds)
    with pytest.raises(NotFoundError, match=r"webdataset: file .*shard-000.tar' does not exist"):
        next(fresh)


# ----------------------------------------------------------------- S3 and remote
def test_s3(s3_server: Any) -> None:
    options = s3_server.storage_options
    prefix = f"s3://pipestate-test/wds-{unique_name()}"
    urls = write_shards(prefix, [3, 4], storage_options=options)
    ds = ps.Dataset.from_webdataset(
        f"{prefix}/shard-*.tar",
        storage_options=options,
        read_options=ps.data.ReadOptions(block_size=1024),
    )
    assert _samples(ds) == expected_samples(urls, [3, 4])
    assert_conformant(ds, variants=())
    assert "secret" not in repr(ds)
    assert "testing" not in repr(ds)


def test_transient_failures_are_retried(
    memory_dir: str, faulty: type[FaultyMemoryFileSystem]
) -> None:
    urls = write_shards(memory_dir, [5])
    url = urls[0].replace("memory://", "faultymem://")
    options = ps.data.ReadOptions(block_size=1024, attempts=4, backoff=0.001)
    ds = ps.Dataset.from_webdataset([url], read_options=options)
    faulty.reset(failures=3, error=TimeoutError)
    assert [s["txt"] for s in _samples(ds)] == [s["txt"] for s in expected_samples(urls, [5])]
    faulty.reset(failures=4)
    # no read-ahead: the failures all fall on the first block's request
    options = ps.data.ReadOptions(block_size=1024, read_ahead=0, attempts=4, backoff=0.001)
    ds = ps.Dataset.from_webdataset([url], read_options=options)
    with pytest.raises(
        UnavailableError,
        match=r"webdataset: reading bytes 0-1024 of .*shard-000.tar' failed 4 time\(s\)",
    ) as info:
        list(ds)
    assert isinstance(info.value.__cause__, ConnectionError)


# -------------------------------------------------------------- damaged shards
def _shard(tmp_path: Path, name: str = "bad.tar", count: int = 3) -> tuple[str, bytes]:
    data = tar_bytes(
        sample_members([(f"k{i}", {"txt": b"t" * 600}) for i in range(count)]), tarfile.USTAR_FORMAT
    )
    path = tmp_path / name
    path.write_bytes(data)
    return str(path), data


# with ustar: each member is a 512-byte header and 1024 bytes of data (600 padded)
@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (
            lambda d: d[: 1536 + 100],
            DataLossError,
            r"truncated tar header at byte offset 1536 of .*bad.tar': 100 of 512",
        ),
        (
            lambda d: d[: 1536 + 512 + 10],
            DataLossError,
            r"truncated tar member 'k1.txt' at byte offset 1536 of .*bad.tar'",
        ),
        (
            lambda d: d[: 3 * 1536],
            DataLossError,
            r"'.*bad.tar' ends at byte offset 4608 without the tar end-of-archive block",
        ),
        (
            lambda d: d[:1536] + bytes([d[1536] ^ 1]) + d[1537:],
            DataLossError,
            r"damaged tar header at byte offset 1536 of .*bad.tar'",
        ),
        (
            lambda d: b"",
            DataLossError,
            r"'.*bad.tar' ends at byte offset 0 without the tar end-of-archive block",
        ),
        (lambda d: b"not a tar file" * 100, DataLossError, r"damaged tar header at byte offset 0"),
    ],
    ids=[
        "truncated-header",
        "truncated-data",
        "no-end-block",
        "bad-checksum",
        "empty-file",
        "not-tar",
    ],
)
def test_damaged_shards(tmp_path: Path, change: Any, error: type[Exception], message: str) -> None:
    path, data = _shard(tmp_path)
    Path(path).write_bytes(change(data))
    with pytest.raises(error, match=f"webdataset: {message}"):
        list(ps.Dataset.from_webdataset([path]))


def test_samples_before_the_damage_are_delivered(tmp_path: Path) -> None:
    path, data = _shard(tmp_path)
    Path(path).write_bytes(data[:3072] + bytes([data[3072] ^ 1]) + data[3073:])
    it = iter(ps.Dataset.from_webdataset([path]))
    assert bytes(next(it)["__key__"]) == b"k0"
    # k1 ends where the damaged header starts: it can't be known complete before
    with pytest.raises(DataLossError, match="damaged tar header at byte offset 3072"):
        next(it)


def _with_header_field(data: bytes, offset: int, field: slice, value: bytes) -> bytes:
    """``data`` with a field of the header at ``offset`` replaced, its checksum made valid."""
    header = bytearray(data[offset : offset + 512])
    header[field] = value
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % tarfile.calc_chksums(bytes(header))[0]
    return data[:offset] + bytes(header) + data[offset + 512 :]


@pytest.mark.parametrize(
    ("size", "message"),
    [
        (b"\xff" * 12, "damaged tar header at byte offset 3072 .*a negative size -1"),
        (b"77777777777\0", "truncated tar member 'k2.txt' at byte offset 3072 .*8589934591 data"),
    ],
    ids=["negative", "huge"],
)
def test_hostile_member_sizes(tmp_path: Path, size: bytes, message: str) -> None:
    path, data = _shard(tmp_path)
    Path(path).write_bytes(_with_header_field(data, 3072, slice(124, 136), size))
    keys: list[bytes] = []
    with pytest.raises(DataLossError, match=message):
        keys.extend(bytes(sample["__key__"]) for sample in ps.Dataset.from_webdataset([path]))
    assert keys in ([b"k0"], [b"k0", b"k1"])  # k1 ends at the damaged header


def test_member_without_extension_is_an_error(tmp_path: Path) -> None:
    path = write_tar(str(tmp_path / "x.tar"), [("a.txt", b"1"), ("README", b"read me")])
    with pytest.raises(
        DataLossError, match=r"tar member 'README' at byte offset 1024 of .*x.tar' has no extension"
    ):
        list(ps.Dataset.from_webdataset([path]))


def test_repeated_field_is_an_error(tmp_path: Path) -> None:
    path = write_tar(str(tmp_path / "x.tar"), [("a.txt", b"1"), ("a.TXT", b"2")])
    with pytest.raises(
        DataLossError, match=r"'a.TXT' at byte offset 1024 .* repeats field 'txt' of sample 'a'"
    ):
        list(ps.Dataset.from_webdataset([path]))


def test_missing_shard(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"webdataset: file .*nope.tar' does not exist"):
        list(ps.Dataset.from_webdataset([str(tmp_path / "nope.tar")]))


def test_changed_shard_on_restore(tmp_path: Path) -> None:
    path, data = _shard(tmp_path, count=3)
    ds = ps.Dataset.from_webdataset([path])
    it = iter(ds)
    next(it)
    state = it.get_state()
    Path(path).write_bytes(data[:1024])
    restored = iter(ds)
    restored.set_state(state)
    with pytest.raises(
        StateMismatchError, match=r"the saved position is at byte 1536 .* has only 1024 bytes"
    ):
        next(restored)


# -------------------------------------------------------------- arguments, states
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"urls": None}, TypeError, "webdataset: urls must be a URL or path"),
        ({"urls": []}, ValueError, "webdataset: urls is an empty list"),
        ({"urls": "a{1..2"}, ValueError, r"webdataset: unbalanced braces in 'a\{1..2'"),
        ({"urls": "/nonexistent-dir/*.tar"}, NotFoundError, "webdataset: no shard matches"),
        ({"urls": ["a"], "shuffle_shards": "yes"}, TypeError, "shuffle_shards must be a bool"),
        ({"urls": ["a"], "seed": 1.5}, TypeError, "webdataset: seed must be an integer"),
        ({"urls": ["a"], "storage_options": [1]}, TypeError, "storage_options must be a dict"),
        (
            {"urls": ["a"], "read_options": {}},
            TypeError,
            "read_options must be a pipestate.data.ReadOptions",
        ),
        ({"urls": ["a"], "name": ""}, TypeError, "webdataset: name must be a non-empty string"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        ps.Dataset.from_webdataset(**kwargs)


def test_name_and_repr(shards: list[str]) -> None:
    ds = ps.Dataset.from_webdataset(shards, name="train")
    assert ds.name == "train"
    assert repr(ds).startswith("webdataset(urls=['")
    assert "name='train'" in repr(ds)
    assert ds.fingerprint == ps.Dataset.from_webdataset(shards).fingerprint
    assert ds.cardinality() == ps.data.UNKNOWN_CARDINALITY


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"offset": 100}, r"state\['offset'\]=100 is not a tar member's offset"),
        ({"shard": 9}, r"state\['shard'\]=9 is out of range \[0, 4\]"),
        ({"shard": 4, "offset": 512}, r"state\['offset'\]=512 is out of range \[0, 0\]"),
        ({"samples": -1}, r"state\['samples'\]=-1 is out of range"),
        ({"samples": "2"}, r"state\['samples'\] must be an int"),
    ],
)
def test_malformed_states(shards: list[str], change: dict[str, Any], message: str) -> None:
    it = iter(ps.Dataset.from_webdataset(shards))
    next(it)
    state = it.get_state()
    state["iterator"].update(change)
    with pytest.raises(StateMismatchError, match=message):
        it.set_state(state)
    assert plain(next(it)) == expected_samples(shards, COUNTS)[1]  # the position is kept


# ------------------------------------------------------------ SIGKILL and resume
READER = Path(__file__).with_name("_wds_reader.py")


def test_resumes_exactly_after_sigkill(tmp_path: Path) -> None:
    urls = write_shards(str(tmp_path / "shards"), [5, 7, 4, 6])
    pattern = str(tmp_path / "shards" / "shard-*.tar")
    reference = [
        bytes(s["__key__"]).decode() for s in ps.Dataset.from_webdataset(pattern, True, seed=11)
    ]
    checkpoint, out = tmp_path / "checkpoint.json", tmp_path / "keys.json"
    command = [sys.executable, str(READER), pattern, str(checkpoint), str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([*command, "0.3"], stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdout is not None
    for line in child.stdout:
        if line.startswith("checkpoint") and int(line.split()[1]) >= 9:
            os.kill(child.pid, signal.SIGKILL)  # while it reads: 9 of 22 samples, or a few more
            break
    assert child.wait(timeout=60) == -signal.SIGKILL
    assert not out.exists()
    saved = json.loads(checkpoint.read_text())
    assert saved["keys"] == reference[: len(saved["keys"])]
    assert saved["state"]["iterator"]["offset"] > 0 or len(saved["keys"]) == 12  # mid-shard
    finished = subprocess.run([*command, "0"], capture_output=True, text=True, env=env, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert "resumed at" in finished.stdout
    assert json.loads(out.read_text()) == reference
    assert len(urls) == 4


# ---------------------------------------------------------------- property test
@st.composite
def _webdataset_sources(draw: st.DrawFn) -> ps.Dataset:
    counts = draw(st.lists(st.integers(0, 4), min_size=1, max_size=3))
    urls = write_shards(f"memory://pipestate-wds-property/{unique_name()}", counts)
    shuffle = draw(st.booleans())
    seed = draw(st.none() | st.integers(0, 2**31)) if shuffle else None
    if draw(st.booleans()):  # random access through shard indexes
        _index_all(urls)
        return ps.Dataset.from_webdataset(urls, shuffle, seed, use_index=True)
    return ps.Dataset.from_webdataset(urls, shuffle_shards=shuffle, seed=seed)


PROPERTY_SOURCE = _webdataset_sources()


def test_next_after_an_unavailable_error_loses_nothing(
    memory_dir: str, faulty: type[FaultyMemoryFileSystem]
) -> None:
    urls = write_shards(memory_dir, [30, 10])
    expected = expected_samples(urls, [30, 10])
    remote = [url.replace("memory://", "faultymem://") for url in urls]
    # blocks smaller than a sample: failures fall inside samples
    options = ps.data.ReadOptions(block_size=700, read_ahead=0, attempts=2, backoff=0.001)
    it = iter(ps.Dataset.from_webdataset(remote, read_options=options))
    got: list[dict[str, bytes]] = []
    failures = last_failed = 0
    while True:
        retrying = failures and len(got) == last_failed
        if len(got) % 7 == 3 and not retrying:
            faulty.reset(failures=2)  # the next request fails twice: all its attempts
        try:
            got.append(plain(next(it)))
        except UnavailableError:
            failures += 1
            last_failed = len(got)
            state = roundtrip_state(it.get_state())
            assert state["iterator"]["samples"] == len(got)  # still at the failed sample
            continue
        except StopIteration:
            break
    assert failures >= 5
    assert [{**s, "__url__": b""} for s in got] == [{**s, "__url__": b""} for s in expected]


# ----------------------------------------------------------------- shard indexes
def _index_all(urls: list[str], **kwargs: Any) -> list[int]:
    return [ps.data.write_webdataset_index(url, **kwargs) for url in urls]


def test_indexed_shards_are_random_access(shards: list[str]) -> None:
    assert _index_all(shards) == COUNTS
    ds = ps.Dataset.from_webdataset(shards)
    assert len(ds) == sum(COUNTS)
    streamed = ps.Dataset.from_webdataset(shards, use_index=False)
    assert streamed.cardinality() == ps.data.UNKNOWN_CARDINALITY
    assert _samples(ds) == _samples(streamed) == expected_samples(shards, COUNTS)
    assert plain(ds[3]) == expected_samples(shards, COUNTS)[3]
    assert plain(ds[-1]) == expected_samples(shards, COUNTS)[-1]
    it = iter(ds)
    next(it)
    assert it.get_state()["iterator"] == {"index": 1, "seed": None}
    # the same shard order as the streaming reader, pass by pass
    for seed in (3, 4):
        shuffled = ps.Dataset.from_webdataset(shards, True, seed).repeat(2)
        streamed_shuffled = ps.Dataset.from_webdataset(shards, True, seed, use_index=False)
        assert _samples(shuffled) == _samples(streamed_shuffled.repeat(2))
    keys = [bytes(s["__key__"]) for s in ds.global_shuffle(seed=1)]
    assert sorted(keys) == sorted(s["__key__"] for s in expected_samples(shards, COUNTS))


def test_index_of_shards_with_skipped_members(tmp_path: Path) -> None:
    members: list[tuple[str, bytes | None]] = [
        ("dir", None),
        ("__meta__", b"m"),
        ("a.txt", b"1"),
        ("a.json", b"2"),
        ("__x__/y.txt", b"skipped"),
        ("b.txt", b"3"),
        ("q/" + "n" * 150 + ".bin", b"\x00" * 700),  # a pax long name
        ("c.txt", b"4"),
        ("__trailer__", b"t"),
    ]
    url = write_tar(str(tmp_path / "s.tar"), members)
    assert ps.data.write_webdataset_index(url) == 4
    indexed = ps.Dataset.from_webdataset([url], use_index=True)
    assert _samples(indexed) == _samples(ps.Dataset.from_webdataset([url], use_index=False))
    empty = write_tar(str(tmp_path / "empty.tar"), [("d", None)])
    assert ps.data.write_webdataset_index(empty) == 0
    assert len(ps.Dataset.from_webdataset([empty, url])) == 4


INDEXED: dict[str, Any] = {
    "indexed": lambda urls: ps.Dataset.from_webdataset(urls),
    "shuffled-shards": lambda urls: ps.Dataset.from_webdataset(urls, True, seed=2),
    "drawn-seed-repeat": lambda urls: ps.Dataset.from_webdataset(urls, True).repeat(2),
    "global-shuffle-batch": lambda urls: (
        ps.Dataset.from_webdataset(urls).global_shuffle(seed=5).map(lambda s: s["cls"]).batch(3)
    ),
}


@pytest.mark.parametrize("name", sorted(INDEXED))
def test_indexed_conformance(shards: list[str], name: str) -> None:
    _index_all(shards)
    assert_conformant(INDEXED[name](shards))


def test_indexed_remote_shards(memory_dir: str, faulty: type[FaultyMemoryFileSystem]) -> None:
    urls = write_shards(memory_dir, [6, 3])
    remote = [url.replace("memory://", "faultymem://") for url in urls]
    options = ps.data.ReadOptions(attempts=3, backoff=0.001)
    assert _index_all(remote, read_options=options) == [6, 3]
    faulty.reset(failures=2)
    ds = ps.Dataset.from_webdataset(remote, use_index=True, read_options=options)
    assert [plain(s)["txt"] for s in ds] == [s["txt"] for s in expected_samples(urls, [6, 3])]
    faulty.reset()
    assert plain(ds[7]) == {**expected_samples(urls, [6, 3])[7], "__url__": remote[1].encode()}
    assert len(faulty.reads) == 1  # one request: the sample's own bytes


def test_s3_indexed(s3_server: Any) -> None:
    options = s3_server.storage_options
    prefix = f"s3://pipestate-test/wds-indexed-{unique_name()}"
    urls = write_shards(prefix, [3, 2], storage_options=options)
    assert _index_all(urls, storage_options=options) == [3, 2]
    ds = ps.Dataset.from_webdataset(f"{prefix}/shard-*.tar", storage_options=options)
    assert len(ds) == 5
    assert _samples(ds.global_shuffle(seed=1)) != _samples(ds)
    assert sorted(map(str, _samples(ds))) == sorted(map(str, expected_samples(urls, [3, 2])))


def test_streaming_states_and_indexed_shards(shards: list[str]) -> None:
    ds = ps.Dataset.from_webdataset(shards)  # no indexes yet: streams
    it = iter(ds)
    for _ in range(4):
        next(it)
    state = roundtrip_state(it.get_state())
    rest = _samples(it)
    _index_all(shards)
    with pytest.raises(
        StateMismatchError,
        match=r"op #0 'webdataset' had different settings than this dataset's "
        r"webdataset\(.*indexed='10 samples'\)",
    ):
        iter(ps.Dataset.from_webdataset(shards)).set_state(state)
    streaming = iter(ps.Dataset.from_webdataset(shards, use_index=False))
    streaming.set_state(state)
    assert _samples(streaming) == rest


def test_index_required_or_mixed(shards: list[str]) -> None:
    ps.data.write_webdataset_index(shards[0])
    assert ps.Dataset.from_webdataset(shards).cardinality() == ps.data.UNKNOWN_CARDINALITY
    with pytest.raises(NotFoundError, match=r"webdataset: '.*shard-001.tar' has no shard index"):
        ps.Dataset.from_webdataset(shards, use_index=True)
    with pytest.raises(ValueError, match="webdataset: use_index must be True, False or 'auto'"):
        ps.Dataset.from_webdataset(shards, use_index="always")


def test_stale_shard_index(tmp_path: Path) -> None:
    path, data = _shard(tmp_path, count=3)
    ps.data.write_webdataset_index(path)
    Path(path).write_bytes(data + b"\0" * 512)
    with pytest.raises(DataLossError, match=r"shard index .* is stale: it describes a file of"):
        ps.Dataset.from_webdataset([path])
    # the same size, samples laid out otherwise
    members = sample_members([("k0", {"txt": b"t" * 600, "cls": b"c"}), ("k2", {"txt": b"t"})])
    Path(path).write_bytes(
        tar_bytes(members, tarfile.USTAR_FORMAT)[: len(data)].ljust(len(data), b"\0")
    )
    ds = ps.Dataset.from_webdataset([path], use_index=True)
    with pytest.raises(
        DataLossError,
        match=r"bad.tar' does not match its shard index: the sample at byte offset 1536 does "
        r"not end at byte 3072; the index is stale: rebuild it with ps.data.write_webdataset_index",
    ):
        ds[1]


def test_write_webdataset_index_errors(tmp_path: Path) -> None:
    path, data = _shard(tmp_path)
    Path(path).write_bytes(data[: 1536 + 100])
    with pytest.raises(DataLossError, match="write_webdataset_index: truncated tar header"):
        ps.data.write_webdataset_index(path)
    assert not Path(path + ".index").exists()
    with pytest.raises(NotFoundError, match=r"write_webdataset_index: file .*nope.tar' does not"):
        ps.data.write_webdataset_index(str(tmp_path / "nope.tar"))
    with pytest.raises(TypeError, match="write_webdataset_index: url must be a str"):
        ps.data.write_webdataset_index(None)  # type: ignore[arg-type]
    buffer = io.BytesIO()
    with tarfile.open(
        fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "x"}
    ) as tar:
        info = tarfile.TarInfo("a.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"1"))
    global_pax = tmp_path / "g.tar"
    global_pax.write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match="has a global pax header"):
        ps.data.write_webdataset_index(str(global_pax))


@pytest.mark.parametrize(
    ("offsets", "when", "message"),
    [
        # three samples of 1536 bytes, the end-of-archive block at 4608
        ([0, 1536, 3072], "read", "the end-of-archive block is not at byte 3072"),
        ([4608], "made", "the sample at byte offset 0 does not end at byte 4608"),
        ([1536, 3072, 4608], "made", "its first sample does not start the shard"),
        ([0, 3072, 4608], "read", "the sample at byte offset 0 does not end at byte 3072"),
        ([0, 1000, 4608], "made", "its offsets are not increasing tar member offsets"),
    ],
    ids=["ends-early", "claims-empty", "skips-first", "merges-two", "unaligned"],
)
def test_hostile_shard_index_loses_nothing(
    tmp_path: Path, offsets: list[int], when: str, message: str
) -> None:
    path, data = _shard(tmp_path, count=3)
    write_index_file(path, offsets, len(data), SHARD_INDEX)
    if when == "made":
        with pytest.raises(DataLossError, match=message):
            ps.Dataset.from_webdataset([path])
        return
    ds = ps.Dataset.from_webdataset([path])
    with pytest.raises(DataLossError, match=message):
        list(ds)
