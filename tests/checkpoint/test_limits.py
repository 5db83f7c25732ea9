"""Size limits and linear-time parsing: hostile sizes, escapes and nesting fail fast and typed."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from hypothesis import given, settings
from hypothesis import strategies as st

from pipestate.checkpoint import (
    AutoTrackable,
    Checkpoint,
    CheckpointableSaver,
    Variable,
    load_variable,
)
from pipestate.checkpoint._inspect import describe_tree
from pipestate.checkpoint._reader import CheckpointReader
from pipestate.checkpoint._safetensors import json_depth, strict_json_loads
from pipestate.checkpoint._state_file import parse_state, read_state_file
from pipestate.checkpoint._storage import Storage
from pipestate.errors import CheckpointTooLargeError, CorruptCheckpointError

from ._helpers import Model, rewrite_index, saved_model

GIB = 1 << 30


class ClaimingFileSystem(MemoryFileSystem):
    """The memory filesystem, except that chosen files claim another size; reads are recorded."""

    protocol = "claimingfs"
    claims: ClassVar[dict[str, int]] = {}
    reads: ClassVar[list[tuple[str, int]]] = []

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, str):
            path = path.removeprefix("claimingfs://")
        return super()._strip_protocol(path)

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        out: dict[str, Any] = super().info(path, **kwargs)
        claimed = self.claims.get(self._strip_protocol(path))
        return out if claimed is None else {**out, "size": claimed}

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        f = super()._open(path, mode, **kwargs)
        if "r" in mode:
            name, read = self._strip_protocol(path), f.read

            def recorded(size: int = -1) -> bytes:
                data: bytes = read(size)
                self.reads.append((name, len(data)))
                return data

            f.read = recorded
        return f

    def cat_file(self, path: str, *args: Any, **kwargs: Any) -> bytes:
        data: bytes = super().cat_file(path, *args, **kwargs)
        self.reads.append((self._strip_protocol(path), len(data)))
        return data


@pytest.fixture
def claiming(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh directory on ``claimingfs://``, shared with ``memory://``; its URL path."""
    fsspec.register_implementation("claimingfs", ClaimingFileSystem, clobber=True)
    monkeypatch.setattr(ClaimingFileSystem, "claims", {})
    monkeypatch.setattr(ClaimingFileSystem, "reads", [])
    directory = f"limits-{uuid.uuid4().hex}"
    yield directory
    MemoryFileSystem().rm(f"/{directory}", recursive=True)


def test_index_claiming_4_gib_is_refused_without_reading_it(claiming: str) -> None:
    path = Checkpoint(model=Model()).save(f"memory://{claiming}/ckpt")
    index = f"/{claiming}/ckpt-1.index"
    ClaimingFileSystem.claims[index] = 4 * GIB
    with pytest.raises(CheckpointTooLargeError) as info:
        Checkpoint(model=Model()).restore(path.replace("memory://", "claimingfs://"))
    message = str(info.value)
    assert "is 4294967296 bytes, more than the 268435456 bytes" in message
    assert "PIPESTATE_MAX_INDEX_BYTES=8589934592" in message
    assert isinstance(info.value, CorruptCheckpointError)
    assert not [read for read in ClaimingFileSystem.reads if read[0] == index]


def test_index_larger_than_it_claims_is_read_only_as_far_as_it_claims(claiming: str) -> None:
    path = Checkpoint(model=Model()).save(f"memory://{claiming}/ckpt")
    index = f"/{claiming}/ckpt-1.index"
    ClaimingFileSystem.claims[index] = 10
    with pytest.raises(CorruptCheckpointError, match="is not valid JSON"):
        Checkpoint(model=Model()).restore(path.replace("memory://", "claimingfs://"))
    assert sum(n for name, n in ClaimingFileSystem.reads if name == index) <= 10


def test_state_file_claiming_4_gib_is_refused_without_reading_it(claiming: str) -> None:
    Checkpoint(model=Model()).save(f"memory://{claiming}/ckpt")
    state = f"/{claiming}/checkpoint"
    ClaimingFileSystem.claims[state] = 4 * GIB
    with pytest.raises(CheckpointTooLargeError, match="PIPESTATE_MAX_STATE_FILE_BYTES="):
        read_state_file(f"claimingfs://{claiming}")
    assert not [read for read in ClaimingFileSystem.reads if read[0] == state]


def test_index_limit_is_raised_by_its_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = saved_model(tmp_path)
    size = Path(path + ".index").stat().st_size
    monkeypatch.setenv("PIPESTATE_MAX_INDEX_BYTES", str(size - 1))
    with pytest.raises(CheckpointTooLargeError, match=f"is {size} bytes, more than the {size - 1}"):
        Checkpoint(model=Model()).restore(path)
    monkeypatch.setenv("PIPESTATE_MAX_INDEX_BYTES", str(size))
    Checkpoint(model=Model()).restore(path).assert_consumed()


@pytest.mark.parametrize("value", ["lots", "0", "-5", "1e9", "١٢٣"])
def test_limit_variable_must_be_a_positive_integer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    path, _ = saved_model(tmp_path)
    monkeypatch.setenv("PIPESTATE_MAX_INDEX_BYTES", value)
    with pytest.raises(ValueError, match="PIPESTATE_MAX_INDEX_BYTES must be a positive integer"):
        Checkpoint(model=Model()).restore(path)


def test_state_file_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Checkpoint(model=Model()).save(str(tmp_path / "ckpt"))
    monkeypatch.setenv("PIPESTATE_MAX_STATE_FILE_BYTES", "8")
    with pytest.raises(CheckpointTooLargeError, match=r"state file .* more than the 8 bytes"):
        read_state_file(str(tmp_path))


def test_safetensors_header_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = saved_model(tmp_path)
    flat = tmp_path / "flat.safetensors"
    flat.write_bytes(b"\x10" + b"\x00" * 7 + b'{"__metadata__":{}}'.ljust(16, b" ")[:16])
    monkeypatch.setenv("PIPESTATE_MAX_HEADER_BYTES", "15")
    with pytest.raises(CheckpointTooLargeError, match="PIPESTATE_MAX_HEADER_BYTES="):
        Checkpoint(model=Model()).restore(path)
    with pytest.raises(CheckpointTooLargeError, match="the header is 16 bytes"):
        load_variable(str(flat), "x")


def test_too_large_messages_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / ("d" * 200) / ("e" * 200)
    directory.mkdir(parents=True)
    path = Checkpoint(model=Model()).save(str(directory / "ckpt"))
    monkeypatch.setenv("PIPESTATE_MAX_INDEX_BYTES", "1")
    with pytest.raises(CheckpointTooLargeError) as info:
        Checkpoint(model=Model()).restore(path)
    assert len(str(info.value)) < 800


# -- the state file ------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_a_million_octal_escapes_parse_in_linear_time() -> None:
    text = 'model_checkpoint_path: "' + "x\\101" * 1_000_000 + '"\n'
    assert parse_state(text).model_checkpoint_path == "xA" * 1_000_000


@pytest.mark.timeout(30)
def test_a_million_escapes_in_a_state_file_on_disk(tmp_path: Path) -> None:
    body = "a\\nb\\\\c\\042x\\101" * 500_000
    (tmp_path / "checkpoint").write_text(f'model_checkpoint_path: "{body}"\n')
    state = read_state_file(str(tmp_path))
    assert state is not None
    assert state.model_checkpoint_path == 'a\nb\\c"xA' * 500_000


@pytest.mark.timeout(30)
def test_long_runs_of_spaces_parse_in_linear_time() -> None:
    text = 'model_checkpoint_path: "a' + " " * 1_000_000 + 'b"' + " " * 1_000_000 + "\n"
    assert parse_state(text).model_checkpoint_path == "a" + " " * 1_000_000 + "b"
    with pytest.raises(CorruptCheckpointError, match="expected a double-quoted string"):
        parse_state('model_checkpoint_path: "a' + " " * 1_000_000 + "b")


def test_octal_escapes_are_utf8_bytes_as_tensorflow_writes_them() -> None:
    # TensorFlow's text format escapes each byte of non-ASCII UTF-8 text in octal.
    assert parse_state('model_checkpoint_path: "caf\\303\\251-1"').model_checkpoint_path == (
        "café-1"
    )


@pytest.mark.parametrize(
    ("token", "match"),
    [
        pytest.param('"\\8"', r"unknown escape sequence '\\\\8'", id="not-octal"),
        pytest.param('"\\777"', r"unknown escape sequence '\\\\777'", id="octal-beyond-a-byte"),
        pytest.param('"\\377"', "are not UTF-8", id="not-utf8"),
        pytest.param('"ab\\"', r"unknown escape sequence '\\\\'", id="trailing-backslash"),
    ],
)
def test_bad_escapes_are_typed_errors(token: str, match: str) -> None:
    with pytest.raises(CorruptCheckpointError, match=match):
        parse_state(f"model_checkpoint_path: {token}")


# -- JSON nesting --------------------------------------------------------------------


def _reference_depth(value: Any, level: int = 1) -> int:
    if isinstance(value, dict):
        return max([level, *(_reference_depth(v, level + 1) for v in value.values())])
    if isinstance(value, list):
        return max([level, *(_reference_depth(v, level + 1) for v in value)])
    return 0


_TEXT = st.text(alphabet='"\\[]{}aé\n', max_size=6)
_JSON = st.recursive(
    st.none() | st.integers() | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(value=_JSON, ascii_only=st.booleans())
def test_json_depth_matches_the_parsed_document(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8")
    assert json_depth(text) == _reference_depth(value)


def test_json_depth_counts_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pipestate.checkpoint._safetensors._DEPTH_CHUNK", 3)
    assert json_depth(b'[[{"a": [[1]], "b": "]]]]"}], [[[[[]]]]]]') == 6


def test_deep_nesting_is_refused_before_parsing_even_with_a_raised_recursion_limit() -> None:
    """A raised recursion limit lets the parser recurse until the C stack overflows."""
    code = (
        "import sys; sys.setrecursionlimit(10**7)\n"
        "from pipestate.checkpoint._safetensors import strict_json_loads\n"
        "from pipestate.errors import CorruptCheckpointError\n"
        "try:\n"
        "    strict_json_loads(b'[' * 1_000_000 + b']' * 1_000_000, 'index')\n"
        "except CorruptCheckpointError as err:\n"
        "    print(err)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "index is not valid JSON: nested more than 400 levels deep"


def test_duplicate_keys_are_named_briefly() -> None:
    key = "k" * 10_000
    with pytest.raises(CorruptCheckpointError, match="duplicate key") as info:
        strict_json_loads(
            json.dumps({"a": 1}).replace("}", f', "{key}": 1, "{key}": 2}}').encode(), "x"
        )
    assert len(str(info.value)) < 300


# -- large graphs ----------------------------------------------------------------------


def _many_objects(n: int, value: int) -> AutoTrackable:
    root = AutoTrackable()
    items = []
    for i in range(n):
        item = AutoTrackable()
        item.v = value + i
        items.append(item)
    root.items = items
    root.weights = Variable(np.arange(3.0))
    return root


def test_large_graph_is_parsed_and_restored_without_garbage_collection(tmp_path: Path) -> None:
    """Collections walk the whole heap; with millions of nodes they were most of a restore."""
    path = CheckpointableSaver(_many_objects(20_000, 0)).save(str(tmp_path / "big"))
    fresh = _many_objects(20_000, -50_000)
    storage, fs_path = Storage.for_path(path)
    collections: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.collect()
    gc.callbacks.append(count)
    try:
        reader = CheckpointReader(storage, fs_path)
        status = CheckpointableSaver(fresh).restore(path)
        status.assert_consumed()
    finally:
        gc.callbacks.remove(count)
    reader.close()
    # Paused while reading, restoring and checking; resuming may collect the youngest
    # generation once per pause (two index reads, the restore, assert_consumed), no more.
    assert collections.count(0) <= 4, collections
    assert max(collections, default=0) == 0, collections
    assert len(reader.nodes) == 40_003
    assert [item.v for item in fresh.items] == list(range(20_000))
    assert gc.isenabled()


def test_collection_resumes_after_a_corrupt_index(tmp_path: Path) -> None:
    path, _ = saved_model(tmp_path)
    Path(path + ".index").write_text('{"format": "pipestate-checkpoint", "version": 1, "a": [}')
    with pytest.raises(CorruptCheckpointError):
        Checkpoint(model=Model()).restore(path)
    assert gc.isenabled()


def _long_names_deep_down(levels: int, name_length: int, leaves: int) -> Any:
    """A chain of objects with long names, and many objects with a value at its end."""

    def mutate(body: dict[str, Any]) -> None:
        chain = [
            {"kind": "X", "children": {f"{i}" + "n" * name_length: i + 1}, "attributes": {}}
            for i in range(levels)
        ]
        chain.append(
            {
                "kind": "X",
                "children": {f"leaf{i}": levels + 1 + i for i in range(leaves)},
                "attributes": {},
            }
        )
        leaf = {"kind": "int", "children": {}, "attributes": {"VALUE": 0}}
        body["nodes"] = chain + [leaf] * leaves
        body["tensors"] = {}

    return mutate


@pytest.mark.timeout(60)
def test_long_names_deep_in_the_graph_are_refused_before_naming_anything(
    tmp_path: Path,
) -> None:
    """Keys grow as names times depth times values: 300 values here need 300 MB of keys.

    A 30,000-value variant of this 1 MB index would need 30 GB.
    """
    path = CheckpointableSaver(AutoTrackable()).save(str(tmp_path / "a"))
    rewrite_index(path, _long_names_deep_down(10, 100_000, 300))
    match = "characters in all, more than the 268435456 allowed"
    with pytest.raises(CorruptCheckpointError, match=match):
        CheckpointableSaver(AutoTrackable()).restore(path)
    with pytest.raises(CorruptCheckpointError, match=match):
        load_variable(path, "x")
    with pytest.raises(CorruptCheckpointError, match=match):
        describe_tree(path)


def test_graph_with_keys_longer_than_readers_accept_is_not_written(tmp_path: Path) -> None:
    root = node = AutoTrackable()
    for i in range(3):
        setattr(node, f"n{i}" + "n" * 100_000, AutoTrackable())
        node = next(iter(node._trackable_children().values()))
    node.values = list(range(1_000))  # plain values: one object
    node.objects = [AutoTrackable() for _ in range(1_000)]
    with pytest.raises(ValueError, match="characters in all, more than the 268435456 allowed"):
        CheckpointableSaver(root).save(str(tmp_path / "long"))
    assert not list(tmp_path.iterdir())


def test_messages_naming_hostile_keys_are_bounded(tmp_path: Path) -> None:
    kernel = "model/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE"

    def long_tensor_key(body: dict[str, Any]) -> None:
        for node in body["nodes"]:
            if node["attributes"].get("VARIABLE_VALUE") == {"array": kernel}:
                node["attributes"]["VARIABLE_VALUE"] = {"array": "k" * 1_000_000}

    def long_object_name(body: dict[str, Any]) -> None:
        body["nodes"].append({"kind": "K" * 1_000_000, "children": {}, "attributes": {"a": 1}})
        body["nodes"][0]["children"]["n" * 1_000_000] = len(body["nodes"]) - 1

    path, _ = saved_model(tmp_path / "a")
    rewrite_index(path, long_tensor_key)
    with pytest.raises(CorruptCheckpointError, match="refers to tensor 'kkk") as info:
        Checkpoint(model=Model()).restore(path)
    assert len(str(info.value)) < 1000
    path, _ = saved_model(tmp_path / "b")
    rewrite_index(path, long_object_name)
    status = Checkpoint(model=Model()).restore(path)
    with pytest.raises(AssertionError, match="Unresolved object in checkpoint: nnn") as failed:
        status.assert_consumed()
    assert len(str(failed.value)) < 1000
    status.expect_partial()
