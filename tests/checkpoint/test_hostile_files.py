"""Corrupted, truncated and hand-crafted hostile files raise typed errors and run no code."""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipestate.checkpoint import (
    AutoTrackable,
    Checkpoint,
    CheckpointableSaver,
    Variable,
    load_variable,
)
from pipestate.checkpoint._inspect import describe_tree, list_checkpoints
from pipestate.errors import CorruptCheckpointError, NotFoundError

from ._helpers import Model, read_index, rewrite_index, saved_model, shard

KERNEL = "model/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE"


def restore(path: str) -> None:
    Checkpoint(model=Model()).restore(path)


def test_flipped_byte_in_data_names_the_value(tmp_path: Path) -> None:
    path, _ = saved_model(tmp_path)
    entry = read_index(path)["checkpoint"]["tensors"][KERNEL]
    data = bytearray(shard(path).read_bytes())
    data[entry["offset"] + 5] ^= 0x01
    shard(path).write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match=f"value '{KERNEL}' .*checksum mismatch"):
        restore(path)


def test_truncated_shard(tmp_path: Path) -> None:
    path, _ = saved_model(tmp_path)
    data = shard(path).read_bytes()
    shard(path).write_bytes(data[:-10])
    with pytest.raises(CorruptCheckpointError, match=r"outside the file's .* data bytes"):
        restore(path)


def test_missing_shard(tmp_path: Path) -> None:
    path, _ = saved_model(tmp_path)
    shard(path).unlink()
    with pytest.raises(
        NotFoundError, match=r"checkpoint data shard .*data-00000-of-00001' does not exist"
    ):
        restore(path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        pytest.param(b"not json at all", "is not valid JSON", id="not-json"),
        pytest.param(b"\xff\xfe\x00", "is not valid JSON", id="not-utf8"),
        pytest.param(b"[1, 2]", "not a JSON object", id="array"),
        pytest.param(b'{"format": "other"}', "not a pipestate checkpoint index", id="format"),
        pytest.param(
            b'{"format": "pipestate-checkpoint", "version": 99}',
            "format version 99 is not supported",
            id="version",
        ),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "is not valid JSON", id="deep-nesting"),
        pytest.param(b'{"a": NaN}', "non-standard JSON constant NaN", id="nan"),
        pytest.param(b'{"a": 1, "a": 2}', "duplicate key 'a'", id="duplicate-key"),
        pytest.param(b"", "is not valid JSON", id="empty"),
        pytest.param(
            pickle.dumps({"format": "pipestate-checkpoint"}), "is not valid JSON", id="pickle"
        ),
    ],
)
def test_malformed_index(tmp_path: Path, content: bytes, match: str) -> None:
    path, _ = saved_model(tmp_path)
    Path(path + ".index").write_bytes(content)
    with pytest.raises(CorruptCheckpointError, match=match):
        restore(path)


def test_bit_flip_in_inline_value_is_detected(tmp_path: Path) -> None:
    path = Checkpoint(epoch=12345).save(str(tmp_path / "c"))
    index = Path(path + ".index")
    index.write_text(index.read_text().replace("12345", "12346"))
    with pytest.raises(CorruptCheckpointError, match="checksum mismatch; the index is corrupt"):
        Checkpoint(epoch=0).restore(path)


def set_tensor(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        body["tensors"][KERNEL][field] = value

    return mutate


def set_body(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        body[field] = value

    return mutate


def set_node(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        body["nodes"][1][field] = value

    return mutate


def set_kernel_value(value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        (node,) = [
            n for n in body["nodes"] if n["attributes"].get("VARIABLE_VALUE") == {"array": KERNEL}
        ]
        node["attributes"]["VARIABLE_VALUE"] = value

    return mutate


@pytest.mark.parametrize(
    ("mutate", "error", "match"),
    [
        pytest.param(
            set_tensor("offset", 10**12),
            CorruptCheckpointError,
            "header does not match the index",
            id="offset-beyond-file",
        ),
        pytest.param(
            set_tensor("offset", -8), CorruptCheckpointError, "bad offset -8", id="negative-offset"
        ),
        pytest.param(
            set_tensor("length", 3),
            CorruptCheckpointError,
            "need 48 bytes, length says 3",
            id="wrong-length",
        ),
        pytest.param(
            set_tensor("shape", [2**40, 2**40]),
            CorruptCheckpointError,
            "need 4835703278458516698824704 bytes",
            id="huge-shape",
        ),
        pytest.param(
            set_tensor("shape", [3, -4]),
            CorruptCheckpointError,
            r"bad shape \[3, -4\]",
            id="negative-dim",
        ),
        pytest.param(
            set_tensor("shape", [True, 4]), CorruptCheckpointError, "bad shape", id="bool-dim"
        ),
        pytest.param(
            set_tensor("shape", [1] * 65), CorruptCheckpointError, "bad shape", id="too-many-dims"
        ),
        pytest.param(
            set_tensor("dtype", "|O8"), CorruptCheckpointError, "bad dtype '|O8'", id="object-dtype"
        ),
        pytest.param(
            set_tensor("dtype", "float32"),
            CorruptCheckpointError,
            "bad dtype 'float32'",
            id="dtype-name",
        ),
        pytest.param(
            set_tensor("dtype", "<f8"),
            CorruptCheckpointError,
            "need 96 bytes",
            id="dtype-vs-length",
        ),
        pytest.param(
            set_tensor("shard", 1), CorruptCheckpointError, "bad shard 1", id="shard-out-of-range"
        ),
        pytest.param(
            set_tensor("crc32c", 2**32), CorruptCheckpointError, "bad crc32c", id="crc-range"
        ),
        pytest.param(
            set_tensor("crc32c", 1),
            CorruptCheckpointError,
            f"value '{KERNEL}' .*checksum mismatch",
            id="crc-wrong",
        ),
        pytest.param(
            set_tensor("extra", 1), CorruptCheckpointError, "must have exactly", id="extra-field"
        ),
        pytest.param(
            set_body("num_shards", 0), CorruptCheckpointError, "bad num_shards 0", id="zero-shards"
        ),
        pytest.param(
            set_body("num_shards", 2),
            NotFoundError,
            "data-00000-of-00002' does not exist",
            id="shard-count",
        ),
        pytest.param(
            set_body("nodes", []),
            CorruptCheckpointError,
            "'nodes' must be a non-empty list",
            id="no-nodes",
        ),
        pytest.param(
            set_node("children", {"x": 99}),
            CorruptCheckpointError,
            "points at node 99",
            id="child-out-of-range",
        ),
        pytest.param(
            set_node("kind", 5), CorruptCheckpointError, "kind must be a string", id="kind"
        ),
        pytest.param(
            set_kernel_value({"array": "nope"}),
            CorruptCheckpointError,
            "refers to tensor 'nope'",
            id="unknown-tensor",
        ),
        pytest.param(
            set_kernel_value({"evil": 1}),
            CorruptCheckpointError,
            "unknown tag 'evil'",
            id="unknown-tag",
        ),
        pytest.param(
            set_kernel_value({"bytes": "!!"}),
            CorruptCheckpointError,
            "not valid base64",
            id="bad-base64",
        ),
        pytest.param(
            set_kernel_value({"float": "1e999"}),
            CorruptCheckpointError,
            "'float' must be",
            id="bad-float",
        ),
        pytest.param(  # found by fuzzing: raised TypeError (unhashable list)
            set_kernel_value({"float": []}),
            CorruptCheckpointError,
            "'float' must be 'nan', 'inf' or '-inf', got \\[\\]",
            id="float-not-a-string",
        ),
        pytest.param(
            set_kernel_value({"array": [1]}),
            CorruptCheckpointError,
            "'array' must name a tensor, got \\[1\\]",
            id="array-not-a-string",
        ),
        pytest.param(
            set_kernel_value({"items": [[[1], 2]]}),
            CorruptCheckpointError,
            "not hashable",
            id="unhashable-key",
        ),
        pytest.param(
            set_kernel_value({"scalar": KERNEL}),
            CorruptCheckpointError,
            r"has shape \(3, 4\)",
            id="scalar-shape",
        ),
    ],
)
def test_hand_crafted_index(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], None], error: type, match: str
) -> None:
    path, _ = saved_model(tmp_path)
    rewrite_index(path, mutate)
    with pytest.raises(error, match=match):
        restore(path)


@pytest.mark.parametrize(
    ("levels", "match"),
    [
        # Two JSON levels per tuple: the value is too deep, the document is not.
        pytest.param(120, "malformed value .* nested more than 100 levels deep", id="value"),
        pytest.param(250, "is not valid JSON: nested more than 400 levels deep", id="document"),
    ],
)
def test_deeply_nested_value_is_refused(tmp_path: Path, levels: int, match: str) -> None:
    path, _ = saved_model(tmp_path)
    nested: Any = 1
    for _ in range(levels):
        nested = {"tuple": [nested]}
    rewrite_index(path, set_kernel_value(nested))
    with pytest.raises(CorruptCheckpointError, match=match):
        restore(path)
    with pytest.raises(CorruptCheckpointError, match=match):
        load_variable(path, "model/dense/kernel")
    if levels > 200:  # inspect walks raw JSON; it must not recurse into it
        with pytest.raises(CorruptCheckpointError, match=match):
            describe_tree(path)


def write_safetensors(
    path: Path, header: Any, data: bytes = b"", length: int | None = None
) -> None:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    size = len(raw) if length is None else length
    path.write_bytes(size.to_bytes(8, "little") + raw + data)


@pytest.mark.parametrize(
    ("header", "data", "length", "match"),
    [
        pytest.param(
            b"",
            b"",
            10**15,
            "header length 1000000000000000 is larger than the file",
            id="huge-header-length",
        ),
        pytest.param(b"{not json", b"", None, "header is not valid JSON", id="not-json"),
        pytest.param(b"[1]", b"", None, "header is not a JSON object", id="not-object"),
        pytest.param(
            {"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
            b"1234",
            None,
            r"data_offsets \[0, 8\] outside",
            id="offsets-beyond-file",
        ),
        pytest.param(
            {"x": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 4]}},
            b"1234",
            None,
            "need 4835703278458516698824704 bytes, data_offsets span 4",
            id="huge-shape",
        ),
        pytest.param(
            {"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},
            b"12345678",
            None,
            "need 12 bytes, data_offsets span 8",
            id="dtype-shape-vs-length",
        ),
        pytest.param(
            {"x": {"dtype": "OBJ", "shape": [1], "data_offsets": [0, 1]}},
            b"1",
            None,
            "unknown dtype 'OBJ'",
            id="unknown-dtype",
        ),
        pytest.param(
            {
                "x": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                "y": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]},
            },
            b"123456",
            None,
            "overlap",
            id="overlap",
        ),
        pytest.param(
            {"x": {"dtype": "U8", "shape": [1], "data_offsets": [1, 0]}},
            b"1",
            None,
            "outside",
            id="reversed-offsets",
        ),
        pytest.param(
            {"x": {"dtype": "U8", "shape": [1]}},
            b"1",
            None,
            "must have exactly dtype, shape and data_offsets",
            id="missing-offsets",
        ),
        pytest.param(
            {"__metadata__": {"a": 1}}, b"", None, "__metadata__ must map str to str", id="metadata"
        ),
    ],
)
def test_hostile_safetensors_file(
    tmp_path: Path, header: Any, data: bytes, length: int | None, match: str
) -> None:
    file = tmp_path / "evil.safetensors"
    write_safetensors(file, header, data, length)
    with pytest.raises(CorruptCheckpointError, match=match):
        CheckpointableSaver(Model()).restore(str(file))


def test_tiny_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    file = tmp_path / "tiny"
    file.write_bytes(b"abc")
    with pytest.raises(CorruptCheckpointError, match="3 bytes, too short to be a safetensors file"):
        CheckpointableSaver(Model()).restore(str(file))


class _Boom:
    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (os.system, ("echo pwned > pwned.txt",))


def test_pickle_payloads_fail_typed_and_run_no_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    payload = pickle.dumps(_Boom())
    path, _ = saved_model(tmp_path)
    Path(path + ".index").write_bytes(payload)
    (tmp_path / "weights.pkl").write_bytes(payload)
    shard_path = tmp_path / "ckpt2"
    with pytest.raises(CorruptCheckpointError):
        restore(path)
    with pytest.raises(CorruptCheckpointError):
        CheckpointableSaver(Model()).restore(str(tmp_path / "weights.pkl"))
    path2, _ = saved_model(shard_path)
    shard(path2).write_bytes(payload)
    with pytest.raises(CorruptCheckpointError):
        restore(path2)
    assert not (tmp_path / "pwned.txt").exists()


def test_loading_never_uses_pickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = AutoTrackable()
    root.state = {"buffer": [np.arange(3), (1, "x")], "n": 2**70}
    root.v = Variable(np.ones(2))
    path = CheckpointableSaver(root).save(str(tmp_path / "p"))

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle was used")

    for name in ("load", "loads", "Unpickler", "dump", "dumps", "Pickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(np, "load", forbidden)
    fresh = AutoTrackable()
    fresh.state = {}
    fresh.v = Variable(np.zeros(2))
    CheckpointableSaver(fresh).restore(path).assert_consumed()
    assert fresh.state["n"] == 2**70
    CheckpointableSaver(fresh).save(str(tmp_path / "q"))


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param([0, 2**63], id="dimension-beyond-intp"),
        pytest.param([0, 2**62], id="empty-but-too-large"),
    ],
)
def test_empty_array_with_absurd_shape(tmp_path: Path, shape: list[int]) -> None:
    """Zero bytes pass the length check; NumPy would still refuse to make the array."""
    root = AutoTrackable()
    root.v = Variable(np.zeros((2, 0), np.float32))
    path = CheckpointableSaver(root).save(str(tmp_path / "a"))
    key = "v/.ATTRIBUTES/VARIABLE_VALUE"
    rewrite_index(path, lambda body: body["tensors"][key].__setitem__("shape", shape))
    with pytest.raises(CorruptCheckpointError, match="is too large"):
        CheckpointableSaver(root).restore(path)
    file = tmp_path / "flat.safetensors"
    write_safetensors(file, {"v": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}})
    with pytest.raises(CorruptCheckpointError, match="too large for NumPy"):
        load_variable(str(file), "v")


def test_shard_header_shape_must_agree_with_the_index(tmp_path: Path) -> None:
    path, _ = saved_model(tmp_path)
    data = shard(path).read_bytes()
    # Same byte count, other shape: the index and the shard disagree about the array.
    shard(path).write_bytes(data.replace(b'"shape":[3,4]', b'"shape":[4,3]'))
    with pytest.raises(CorruptCheckpointError, match="header does not match the index"):
        restore(path)


def _chain(n: int) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        body["nodes"] = [
            {"kind": "X", "children": {"next": i + 1} if i < n - 1 else {}, "attributes": {}}
            for i in range(n)
        ]
        body["tensors"] = {}

    return mutate


@pytest.mark.timeout(20)
def test_long_chain_of_objects_is_refused_quickly(tmp_path: Path) -> None:
    """Naming each object by its path would take quadratic time and memory."""
    path = CheckpointableSaver(AutoTrackable()).save(str(tmp_path / "a"))
    rewrite_index(path, _chain(50_000))
    with pytest.raises(
        CorruptCheckpointError, match="49999 levels deep, more than the 1000 allowed"
    ):
        CheckpointableSaver(AutoTrackable()).restore(path)
    with pytest.raises(CorruptCheckpointError, match="levels deep"):
        describe_tree(path)


def test_deep_graph_within_limits_is_inspected_without_recursion(tmp_path: Path) -> None:
    path = CheckpointableSaver(AutoTrackable()).save(str(tmp_path / "a"))
    rewrite_index(path, _chain(1000))
    assert describe_tree(path).count("next (X)") == 999


def test_graph_deeper_than_readers_accept_is_not_written(tmp_path: Path) -> None:
    root = node = AutoTrackable()
    for _ in range(1001):
        node.next = AutoTrackable()
        node = node.next
    with pytest.raises(ValueError, match="1001 levels deep, more than the 1000 allowed"):
        CheckpointableSaver(root).save(str(tmp_path / "deep"))
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.timeout(20)
def test_fifo_in_place_of_a_file_does_not_hang(tmp_path: Path) -> None:
    path, _ = saved_model(tmp_path)
    shard(path).unlink()
    os.mkfifo(shard(path))
    with pytest.raises(CorruptCheckpointError, match="is not a regular file"):
        restore(path)
    os.mkfifo(tmp_path / "other.index")  # 'pipestate ls' opens every index in a directory
    (line,) = [line for line in list_checkpoints(str(tmp_path)) if "other" in line]
    assert line.endswith("is not a regular file")


@pytest.mark.parametrize(
    ("sharding", "match"),
    [
        (
            lambda key: {
                "shape": [2**40],
                "dtype": "float32",
                "chunks": [{"offsets": [0], "shape": [2**40], "of": key}],
            },
            r"has shape \[1099511627776\] in the sharded tensor but \[4\] in the index",
        ),
        (
            lambda key: {
                "shape": [2**61, 2**61],
                "dtype": "float32",
                "chunks": [{"offsets": [0, 0], "shape": [2**61, 2**61], "of": key}],
            },
            "in the sharded tensor but",
        ),
        (
            lambda key: {"shape": [0], "dtype": "(1000000000000,)f4", "chunks": []},
            "which is not a torch dtype",
        ),
        (lambda key: {"shape": [0], "dtype": "O", "chunks": []}, "which is not a torch dtype"),
        (
            lambda key: {
                "shape": [4],
                "dtype": "int64",
                "chunks": [{"offsets": [0], "shape": [4], "of": key}],
            },
            "float32.*int64",  # the chunks hold float32, the value says int64
        ),
        (
            lambda key: {
                "shape": [4],
                "dtype": "float32",
                "chunks": [{"offsets": [0], "shape": [4], "of": "no/such/array"}],
            },
            "no/such/array",
        ),
    ],
    ids=["huge", "huge-2d", "crafted-dtype", "object-dtype", "dtype-lie", "missing-array"],
)
def test_hostile_sharded_values_are_corrupt(
    tmp_path: Path, sharding: Callable[[str], Any], match: str
) -> None:
    """A sharded-tensor value whose chunks the files don't hold is refused before anything
    is allocated for it (the reader's NumPy path, as without torch)."""
    from pipestate.checkpoint import Checkpoint, Variable, load_variable
    from pipestate.checkpoint._index import body_crc

    path = str(tmp_path / "c")
    Checkpoint(w=Variable(np.arange(4, dtype=np.float32))).write(path)
    index = Path(path + ".index")
    document = json.loads(index.read_text())
    body = document["checkpoint"]
    node = next(n for n in body["nodes"] if "VARIABLE_VALUE" in n["attributes"])
    node["attributes"]["VARIABLE_VALUE"] = {"dtensor": sharding(next(iter(body["tensors"])))}
    document["crc32c"] = body_crc(body)
    index.write_text(json.dumps(document))
    with pytest.raises(CorruptCheckpointError, match=match):
        load_variable(path, "w")


@pytest.mark.parametrize(
    "state",
    [
        {"dict": {"buffer": {"scalar": "KEY"}}},
        {"dict": {"buffer": {"array": "no/such/array"}}},
        {
            "dict": {
                "buffer": {
                    "dtensor": {
                        "shape": [4],
                        "dtype": "float32",
                        "chunks": [{"offsets": [0], "shape": [4], "of": "KEY"}],
                    }
                }
            }
        },
    ],
    ids=["scalar", "missing-array", "dtensor"],
)
def test_inspect_of_a_hostile_pipeline_state_says_so(tmp_path: Path, state: Any) -> None:
    """A value in an iterator's place that no pipeline saved is named, not a crash."""
    import pipestate as ps
    from pipestate.checkpoint import Checkpoint
    from pipestate.checkpoint._index import body_crc
    from pipestate.checkpoint._inspect import describe_state

    path = str(tmp_path / "c")
    data = iter(ps.Dataset.range(20).shuffle(4, seed=1))
    next(data)
    Checkpoint(data=data).write(path)
    index = Path(path + ".index")
    document = json.loads(index.read_text())
    body = document["checkpoint"]
    node = next(n for n in body["nodes"] if "iterator" in n["attributes"])
    key = next(iter(body["tensors"]))
    node["attributes"]["iterator"] = json.loads(json.dumps(state).replace("KEY", key))
    document["crc32c"] = body_crc(body)
    index.write_text(json.dumps(document))
    assert "input-pipeline state that can't be described" in describe_tree(path)
    with pytest.raises(CorruptCheckpointError, match=r"data/\.iterator"):
        describe_state(path, "data")
