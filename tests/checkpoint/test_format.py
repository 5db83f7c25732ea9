"""The on-disk layout: index, safetensors shards, shard bounds, storage and the commit protocol."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import numpy as np
import pytest
from safetensors import safe_open

from pipestate.checkpoint import (
    AutoTrackable,
    Checkpoint,
    CheckpointableSaver,
    CheckpointOptions,
    Variable,
    _reader,
    _writer,
)
from pipestate.checkpoint._index import FORMAT_NAME, FORMAT_VERSION
from pipestate.checkpoint._storage import Storage

from ._helpers import Model, read_index, saved_model, shard


def many_arrays(n: int, size: int) -> AutoTrackable:
    root = AutoTrackable()
    for i in range(n):
        setattr(root, f"v{i}", Variable(np.full(size, i, dtype=np.uint8)))
    return root


def test_index_describes_graph_and_values(tmp_path: Path) -> None:
    path, model = saved_model(tmp_path)
    document = read_index(path)
    assert document["format"] == FORMAT_NAME
    assert document["version"] == FORMAT_VERSION
    body = document["checkpoint"]
    assert body["num_shards"] == 1
    root = body["nodes"][0]
    assert root["kind"] == "Checkpoint"
    assert set(root["children"]) == {"model", "save_counter"}
    model_node = body["nodes"][root["children"]["model"]]
    assert set(model_node["children"]) == {"dense", "out"}
    key = "model/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    entry = body["tensors"][key]
    assert entry["dtype"] == "<f4"
    assert entry["shape"] == [3, 4]
    assert entry["length"] == 48
    assert entry["shard"] == 0
    assert set(entry) == {"dtype", "shape", "shard", "offset", "length", "crc32c"}
    raw = shard(path).read_bytes()[entry["offset"] : entry["offset"] + 48]
    assert raw == model.dense.kernel.numpy().tobytes()


def test_shards_are_readable_by_safetensors(tmp_path: Path) -> None:
    path, model = saved_model(tmp_path)
    with safe_open(str(shard(path)), framework="numpy") as f:
        assert set(f.keys()) == set(read_index(path)["checkpoint"]["tensors"])
        np.testing.assert_array_equal(
            f.get_tensor("model/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE"),
            model.dense.kernel.numpy(),
        )
        assert f.get_tensor("save_counter/.ATTRIBUTES/VARIABLE_VALUE") == 1


def test_tensors_are_aligned_to_their_item_size(tmp_path: Path) -> None:
    root = AutoTrackable()
    root.a = Variable(np.zeros(3, np.uint8))
    root.b = Variable(np.zeros(3, np.float64))
    root.c = Variable(np.zeros(3, np.int16))
    root.d = Variable(np.zeros(1, np.float32))
    path = CheckpointableSaver(root).save(str(tmp_path / "x"))
    for entry in read_index(path)["checkpoint"]["tensors"].values():
        assert entry["offset"] % np.dtype(entry["dtype"]).itemsize == 0, entry


def test_large_saves_are_split_into_bounded_shards(tmp_path: Path) -> None:
    root = many_arrays(5, 1000)
    options = CheckpointOptions(max_shard_bytes=2500)
    path = CheckpointableSaver(root).save(str(tmp_path / "x"), options=options)
    body = read_index(path)["checkpoint"]
    assert body["num_shards"] == 3
    assert sorted(p.name for p in tmp_path.glob("x.data-*")) == [
        f"x.data-0000{i}-of-00003" for i in range(3)
    ]
    for i in range(3):
        assert shard(path, i, 3).stat().st_size < 2500 + 1024
    restored = many_arrays(5, 1000)
    for i in range(5):
        getattr(restored, f"v{i}").assign(np.zeros(1000, np.uint8))
    CheckpointableSaver(restored).restore(path).assert_consumed()
    assert [int(getattr(restored, f"v{i}").numpy()[0]) for i in range(5)] == [0, 1, 2, 3, 4]


def test_an_array_larger_than_the_bound_gets_its_own_shard(tmp_path: Path) -> None:
    root = many_arrays(2, 4000)
    path = CheckpointableSaver(root).save(
        str(tmp_path / "x"), options=CheckpointOptions(max_shard_bytes=1000)
    )
    assert read_index(path)["checkpoint"]["num_shards"] == 2


def test_rewriting_a_prefix_removes_its_stale_shards(tmp_path: Path) -> None:
    root = many_arrays(3, 100)
    saver = CheckpointableSaver(root)
    saver.save(str(tmp_path / "x"), options=CheckpointOptions(max_shard_bytes=100))
    assert len(list(tmp_path.glob("x.data-*"))) == 3
    saver.save(str(tmp_path / "x"))
    assert [p.name for p in tmp_path.glob("x.data-*")] == ["x.data-00000-of-00001"]
    CheckpointableSaver(many_arrays(3, 100)).restore(str(tmp_path / "x")).assert_consumed()


def test_checkpoint_without_arrays_still_has_one_shard(tmp_path: Path) -> None:
    path = Checkpoint(step=3).write(str(tmp_path / "w"))
    assert shard(path).exists()
    with safe_open(str(shard(path)), framework="numpy") as f:
        assert list(f.keys()) == []


def test_memory_filesystem_save_and_restore() -> None:
    fs = fsspec.filesystem("memory")
    model = Model(1)
    ckpt = Checkpoint(model=model, step=4)
    path = ckpt.save("memory://ckpts/run/ckpt")
    assert path == "memory://ckpts/run/ckpt-1"
    assert fs.exists("/ckpts/run/ckpt-1.index")
    assert (
        fs.cat_file("/ckpts/run/checkpoint").decode().startswith('model_checkpoint_path: "ckpt-1"')
    )
    other = Model(2)
    restored = Checkpoint(model=other, step=0)
    restored.restore(path).assert_consumed()
    np.testing.assert_array_equal(other.dense.kernel.numpy(), model.dense.kernel.numpy())
    assert restored.step == 4
    fs.rm("/ckpts", recursive=True)


def test_local_reads_are_memory_mapped(tmp_path: Path) -> None:
    path, _ = saved_model(tmp_path)
    storage, fs_path = Storage.for_path(path)
    with _reader.CheckpointReader(storage, fs_path) as reader:
        reader.read_tensor("model/out/.ATTRIBUTES/VARIABLE_VALUE")
        ((f, _),) = reader._shards.values()
        assert "mmap" in repr(f)


def test_crash_during_save_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = Model(1)
    ckpt = Checkpoint(model=model)
    first = ckpt.save(str(tmp_path / "ckpt"))
    before = model.dense.kernel.numpy()
    model.dense.kernel.assign(np.ones((3, 4), np.float32))

    real_write_shard = _writer._write_shard

    def crash_after_data(*args: object, **kwargs: object) -> object:
        real_write_shard(*args, **kwargs)  # type: ignore[arg-type]
        raise OSError("disk unplugged")

    monkeypatch.setattr(_writer, "_write_shard", crash_after_data)
    with pytest.raises(OSError, match="disk unplugged"):
        ckpt.save(str(tmp_path / "ckpt"))
    monkeypatch.undo()
    assert not (tmp_path / "ckpt-2.index").exists()  # no index: the checkpoint does not exist
    assert 'model_checkpoint_path: "ckpt-1"' in (tmp_path / "checkpoint").read_text()
    assert int(ckpt.save_counter.numpy()) == 1
    fresh = Model(5)
    Checkpoint(model=fresh).restore(first).assert_consumed()
    np.testing.assert_array_equal(fresh.dense.kernel.numpy(), before)


def test_index_is_written_through_a_temporary_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        renames.append((os.path.basename(src), os.path.basename(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    Checkpoint(step=1).save(str(tmp_path / "ckpt"))
    assert [dst for _, dst in renames] == ["ckpt-1.index", "checkpoint"]
    assert all(src.startswith(f".{dst}.tmp-") for src, dst in renames)
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param(
            {"max_shard_bytes": 0}, "max_shard_bytes must be a positive int, got 0", id="zero"
        ),
        pytest.param({"max_shard_bytes": 1.5}, "got 1.5", id="float"),
        pytest.param({"fsync": "yes"}, "fsync must be a bool, got 'yes'", id="fsync"),
    ],
)
def test_options_are_validated(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CheckpointOptions(**kwargs)  # type: ignore[arg-type]


def test_index_json_is_standard(tmp_path: Path) -> None:
    root = AutoTrackable()
    root.values = {"nan": float("nan"), "inf": float("inf")}
    path = CheckpointableSaver(root).save(str(tmp_path / "x"))
    text = (tmp_path / "x.index").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard constant {c}"))
    assert path == str(tmp_path / "x")


def test_threaded_writer_writes_every_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_writer, "_THREADED_WRITE_BYTES", 0)
    monkeypatch.setattr(_writer, "_CHUNK", 1000)
    root = many_arrays(3, 2500)
    path = CheckpointableSaver(root).save(str(tmp_path / "t"))
    with safe_open(str(shard(path)), framework="numpy") as f:
        assert f.get_tensor("v2/.ATTRIBUTES/VARIABLE_VALUE").tolist() == [2] * 2500
    CheckpointableSaver(many_arrays(3, 2500)).restore(path).assert_consumed()


def test_writer_thread_error_fails_the_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_writer, "_THREADED_WRITE_BYTES", 0)
    monkeypatch.setattr(_writer, "_CHUNK", 1000)
    real_write_all = _writer._write_all
    calls = []

    def failing(f: object, data: bytes) -> None:
        calls.append(len(data))
        if len(calls) == 3:
            raise OSError("no space left on device")
        real_write_all(f, data)  # type: ignore[arg-type]

    monkeypatch.setattr(_writer, "_write_all", failing)
    with pytest.raises(OSError, match="no space left on device"):
        CheckpointableSaver(many_arrays(3, 2500)).save(str(tmp_path / "t"))
    assert not (tmp_path / "t.index").exists()


def test_variables_restore_from_memory_map_views(tmp_path: Path) -> None:
    path, model = saved_model(tmp_path)
    storage, fs_path = Storage.for_path(path)
    reader = _reader.CheckpointReader(storage, fs_path)
    key = "model/out/.ATTRIBUTES/VARIABLE_VALUE"
    view = reader.read_tensor(key, copy=False)
    assert not view.flags.writeable
    assert not view.flags.owndata
    copy = reader.read_tensor(key)
    assert copy.flags.writeable
    np.testing.assert_array_equal(view, model.out.numpy())
    reader.close()  # a live view keeps the map; closing must not fail
    np.testing.assert_array_equal(view, copy)
