"""Sharded ``jax.Array`` values: written per shard without gathering, restored onto any sharding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, SingleDeviceSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from pipestate.checkpoint import (  # noqa: E402
    Checkpoint,
    CheckpointOptions,
    Trackable,
    load_variable,
    restore_pytree,
)
from pipestate.checkpoint._reader import CheckpointReader, SavedArray  # noqa: E402
from pipestate.checkpoint._values import ShardedArray  # noqa: E402
from pipestate.errors import CorruptCheckpointError, DistributedSaveError  # noqa: E402
from tests.checkpoint.test_distributed import run_ranks  # noqa: E402

if len(jax.devices()) < 8:  # pragma: no cover - tests/conftest.py asks for eight
    pytest.skip("needs 8 CPU devices (XLA_FLAGS)", allow_module_level=True)


def _mesh(*shape: int, names: tuple[str, ...] = ("x", "y")) -> Mesh:
    return Mesh(np.array(jax.devices()[: int(np.prod(shape))]).reshape(shape), names[: len(shape)])


def _array(shape: tuple[int, ...], sharding: Any, dtype: Any = jnp.float32) -> jax.Array:
    values = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape).astype(dtype)
    return jax.device_put(values, sharding)


def _value_of(path: str, name: str) -> Any:
    body = json.loads(Path(path + ".index").read_text())["checkpoint"]
    root = body["nodes"][0]
    return body["nodes"][root["children"][name]]["attributes"]


SHARDINGS = {
    "1d": lambda: NamedSharding(_mesh(8, names=("x",)), P("x")),
    "2d": lambda: NamedSharding(_mesh(4, 2), P("x", "y")),
    "rows-replicated": lambda: NamedSharding(_mesh(4, 2), P("x", None)),
    "columns": lambda: NamedSharding(_mesh(2, 4), P(None, "y")),
    "replicated": lambda: NamedSharding(_mesh(4, 2), P()),
    "one-device": lambda: SingleDeviceSharding(jax.devices()[3]),
}
# Distinct boxes each sharding writes (replicas write nothing).
CHUNKS = {"1d": 8, "2d": 8, "rows-replicated": 4, "columns": 4, "replicated": 0, "one-device": 0}


@pytest.mark.parametrize("name", list(SHARDINGS))
def test_each_distinct_shard_is_one_chunk(tmp_path: Path, name: str) -> None:
    array = _array((8, 16), SHARDINGS[name]())
    path = Checkpoint(w=array).save(str(tmp_path / "ckpt"))
    value = _value_of(path, "w")["LEAF"]
    if CHUNKS[name] == 0:
        assert set(value) == {"array"}  # one array: one replica's copy
    else:
        body = value["sharded"]
        assert body["shape"] == [8, 16]
        assert body["dtype"] == "float32"
        boxes = [(tuple(c["offsets"]), tuple(c["shape"])) for c in body["chunks"]]
        assert len(boxes) == len(set(boxes)) == CHUNKS[name]
        assert sum(int(np.prod(s)) for _, s in boxes) == 8 * 16
    # Readers without jax get the whole array.
    whole = load_variable(path, "w/.ATTRIBUTES/LEAF")
    np.testing.assert_array_equal(whole, np.asarray(array))


@pytest.mark.parametrize("saved", list(SHARDINGS))
@pytest.mark.parametrize("target", ["2d", "columns", "replicated", "one-device", "numpy"])
def test_restore_onto_any_sharding(tmp_path: Path, saved: str, target: str) -> None:
    array = _array((8, 16), SHARDINGS[saved]())
    path = Checkpoint(w=array).save(str(tmp_path / "ckpt"))
    if target == "numpy":
        into: Any = np.zeros((8, 16), np.float32)
    else:
        into = jax.ShapeDtypeStruct((8, 16), jnp.float32, sharding=SHARDINGS[target]())
    restored = restore_pytree(path, into)
    np.testing.assert_array_equal(np.asarray(restored), np.asarray(array))
    if target == "numpy":
        assert type(restored) is np.ndarray
    else:
        assert restored.sharding == into.sharding
        for shard in restored.addressable_shards:
            np.testing.assert_array_equal(np.asarray(shard.data), np.asarray(array)[shard.index])


def test_checkpoint_restore_keeps_the_target_sharding(tmp_path: Path) -> None:
    array = _array((8, 4), NamedSharding(_mesh(4, 2), P("x", None)))
    path = Checkpoint(params={"w": array}).save(str(tmp_path / "ckpt"))
    target = _array((8, 4), NamedSharding(_mesh(2, 4), P("y", "x")))
    fresh = Checkpoint(params={"w": jnp.zeros_like(target)})
    fresh.params = {"w": jax.device_put(jnp.zeros((8, 4)), target.sharding)}
    fresh.restore(path).assert_consumed()
    assert fresh.params["w"].sharding == target.sharding
    np.testing.assert_array_equal(np.asarray(fresh.params["w"]), np.asarray(array))


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    read: list[str] = []
    original = CheckpointReader.read_raw

    def read_raw(self: CheckpointReader, key: str, *, copy: bool = True) -> Any:
        read.append(key)
        return original(self, key, copy=copy)

    monkeypatch.setattr(CheckpointReader, "read_raw", read_raw)
    return read


def test_a_sharded_restore_reads_only_the_chunks_it_overlaps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    array = _array((8, 16), NamedSharding(_mesh(8, names=("x",)), P("x")))  # one row per chunk
    path = Checkpoint(w=array).save(str(tmp_path / "ckpt"))
    read = _counting(monkeypatch)
    boxes: list[tuple[tuple[int, ...], list[str]]] = []
    original = SavedArray.read

    def read_box(self: SavedArray, offsets: Any, shape: Any, **options: Any) -> np.ndarray:
        before = len(read)
        out = original(self, offsets, shape, **options)
        boxes.append((tuple(shape), read[before:]))
        return out

    monkeypatch.setattr(SavedArray, "read", read_box)
    # Onto the same sharding: each device reads its own chunk, each chunk is read once.
    restore_pytree(path, jax.ShapeDtypeStruct((8, 16), jnp.float32, sharding=array.sharding))
    assert sorted(read) == sorted(set(read))
    assert len(read) == 8
    assert [len(keys) for _, keys in boxes] == [1] * 8
    # Onto boxes of two rows, each on two devices: two chunks per box, read once per box.
    read.clear()
    boxes.clear()
    rows = NamedSharding(_mesh(4, 2), P("x", None))
    restore_pytree(path, jax.ShapeDtypeStruct((8, 16), jnp.float32, sharding=rows))
    assert [(shape, len(keys)) for shape, keys in boxes] == [((2, 16), 2)] * 4
    assert sorted(read) == sorted(set(read))
    assert len(read) == 8
    # Onto columns: every box overlaps every chunk, and each chunk is still read once.
    read.clear()
    boxes.clear()
    columns = NamedSharding(_mesh(2, 4), P(None, "y"))
    restore_pytree(path, jax.ShapeDtypeStruct((8, 16), jnp.float32, sharding=columns))
    assert len(boxes) == 4
    assert len(read) == 8 == len(set(read))


def test_a_corrupt_chunk_is_refused(tmp_path: Path) -> None:
    array = _array((8, 16), NamedSharding(_mesh(8, names=("x",)), P("x")))
    path = Checkpoint(w=array).save(str(tmp_path / "ckpt"))
    shard = next(tmp_path.glob("ckpt-1.data-*"))
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    target = jax.ShapeDtypeStruct((8, 16), jnp.float32, sharding=array.sharding)
    with pytest.raises(CorruptCheckpointError, match="checksum mismatch"):
        restore_pytree(path, target)
    with pytest.raises(CorruptCheckpointError, match="checksum mismatch"):
        Checkpoint(w=jnp.zeros((8, 16))).restore(path)


def test_a_chunk_list_that_does_not_cover_the_array_is_refused(tmp_path: Path) -> None:
    array = _array((8, 16), NamedSharding(_mesh(8, names=("x",)), P("x")))
    path = Checkpoint(w=array).save(str(tmp_path / "ckpt"))
    index = Path(path + ".index")
    document = json.loads(index.read_text())
    body = document["checkpoint"]
    node = body["nodes"][body["nodes"][0]["children"]["w"]]
    del node["attributes"]["LEAF"]["sharded"]["chunks"][3]
    from pipestate.checkpoint._index import body_crc

    document["crc32c"] = body_crc(body)
    index.write_text(json.dumps(document))
    with pytest.raises(CorruptCheckpointError, match="a range of it is missing"):
        restore_pytree(path, jax.ShapeDtypeStruct((8, 16), jnp.float32))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        pytest.param("dtype", "object", "which is not a NumPy or ml_dtypes dtype", id="dtype"),
        pytest.param("dtype", "float64", "holds float32", id="other-dtype"),
        pytest.param("shape", [8, 17], "cover 128 of its 136 elements", id="shape"),
    ],
)
def test_a_malformed_sharded_body_is_refused(
    tmp_path: Path, field: str, value: Any, message: str
) -> None:
    array = _array((8, 16), NamedSharding(_mesh(8, names=("x",)), P("x")))
    path = Checkpoint(w=array).save(str(tmp_path / "ckpt"))
    index = Path(path + ".index")
    document = json.loads(index.read_text())
    body = document["checkpoint"]
    node = body["nodes"][body["nodes"][0]["children"]["w"]]
    node["attributes"]["LEAF"]["sharded"][field] = value
    from pipestate.checkpoint._index import body_crc

    document["crc32c"] = body_crc(body)
    index.write_text(json.dumps(document))
    with pytest.raises(CorruptCheckpointError, match=message):
        restore_pytree(path)
    with pytest.raises(CorruptCheckpointError, match=message):
        load_variable(path, "w/.ATTRIBUTES/LEAF")


def test_async_save_of_sharded_arrays(tmp_path: Path) -> None:
    sharding = NamedSharding(_mesh(4, 2), P("x", "y"))
    array = _array((8, 16), sharding)
    ckpt = Checkpoint(params={"w": array})
    path = ckpt.save(str(tmp_path / "ckpt"), options=CheckpointOptions(enable_async=True))
    # The save holds its own snapshot: new values and freed buffers do not reach it.
    ckpt.params = {"w": jnp.zeros((8, 16))}
    array.delete()
    ckpt.sync()
    expected = np.arange(128, dtype=np.float32).reshape(8, 16)
    restored = restore_pytree(path, {"w": jax.ShapeDtypeStruct((8, 16), jnp.float32)})
    np.testing.assert_array_equal(np.asarray(restored["w"]), expected)


class _Part(Trackable):
    """One rank's part of an array sharded over ranks (what a multi-process jax.Array gives)."""

    def __init__(self, rank: int, world: int) -> None:
        rows = 8 // world
        whole = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
        self.part = ShardedArray(
            (8, 3),
            np.dtype(np.float32),
            [((rank * rows, 0), whole[rank * rows : (rank + 1) * rows])],
            complete=world == 1,
            what="sharded over ranks",
        )

    def _serialize_to_values(self) -> dict[str, Any]:
        return {"VALUE": self.part}

    def _value_names(self) -> tuple[str, ...]:
        return ("VALUE",)

    def _restore_from_values(self, values: Any) -> None:
        self.restored = values["VALUE"]


def test_ranks_write_their_own_chunks_and_rank_0_merges_them(tmp_path: Path) -> None:
    prefix = str(tmp_path / "ckpt")

    def save(rank: int) -> str:
        return Checkpoint(w=_Part(rank, 4)).save(prefix)

    paths = run_ranks(4, save)
    assert len(set(paths)) == 1, paths
    path = paths[0]
    chunks = _value_of(path, "w")["VALUE"]["sharded"]["chunks"]
    assert [c["offsets"] for c in chunks] == [[0, 0], [2, 0], [4, 0], [6, 0]]
    expected = np.arange(24, dtype=np.float32).reshape(8, 3)
    np.testing.assert_array_equal(load_variable(path, "w/.ATTRIBUTES/VALUE"), expected)
    two = NamedSharding(_mesh(2, names=("x",)), P("x"))
    restored = restore_pytree(path, jax.ShapeDtypeStruct((8, 3), jnp.float32, sharding=two))
    np.testing.assert_array_equal(np.asarray(restored), expected)


def test_a_rank_missing_from_the_save_fails_it(tmp_path: Path) -> None:
    prefix = str(tmp_path / "ckpt")

    def save(rank: int) -> str:
        # Rank 2 holds no part: rows 4-5 would be lost.
        part = _Part(rank, 4)
        if rank == 2:
            part.part.chunks = []
        return Checkpoint(w=part).save(prefix)

    results = run_ranks(4, save)
    assert all(isinstance(r, DistributedSaveError) for r in results), results
    assert "the sharded array at 'w/.ATTRIBUTES/VALUE' do not make it up" in str(results[0])
    assert "cover 18 of its 24 elements" in str(results[0])


def test_one_process_refuses_to_save_part_of_an_array(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="from this process alone: it is sharded over ranks"):
        Checkpoint(w=_Part(1, 4)).save(str(tmp_path / "ckpt"))


def test_arrays_every_rank_holds_whole_are_written_once(tmp_path: Path) -> None:
    # Ranks as threads of one process: each holds the whole sharded array, as a process
    # holds an array on its own devices; rank 0 writes it, the others nothing.
    array = _array((8, 16), NamedSharding(_mesh(4, 2), P("x", "y")))
    prefix = str(tmp_path / "ckpt")

    def save(rank: int) -> str:
        return Checkpoint(params={"w": array}).save(prefix)

    paths = run_ranks(3, save)
    assert len(set(paths)) == 1, paths
    chunks = _value_of(paths[0], "params")["['w']"]["sharded"]["chunks"]
    assert len(chunks) == 8
    index = json.loads(Path(paths[0] + ".index").read_text())["checkpoint"]
    assert len(index["tensors"]) == 8 + 1  # the chunks and the save counter
    np.testing.assert_array_equal(load_variable(paths[0], "params/.ATTRIBUTES/['w']"), array)


def test_a_rank_holding_no_chunk_of_an_array_still_commits_it(tmp_path: Path) -> None:
    prefix = str(tmp_path / "ckpt")

    def save(rank: int) -> str:
        part = _Part(rank, 2)
        if rank == 0:
            part.part.chunks = []  # rank 1 holds rows 0-7 instead: 4-7 and 0-3
        else:
            whole = np.arange(24, dtype=np.float32).reshape(8, 3)
            part.part.chunks = [((0, 0), whole[:4]), ((4, 0), whole[4:])]
        return Checkpoint(w=part).save(prefix)

    paths = run_ranks(2, save)
    assert len(set(paths)) == 1, paths
    expected = np.arange(24, dtype=np.float32).reshape(8, 3)
    np.testing.assert_array_equal(load_variable(paths[0], "w/.ATTRIBUTES/VALUE"), expected)


def test_an_uncommitted_target_gives_an_uncommitted_array(tmp_path: Path) -> None:
    """``jnp.zeros(...)`` asks for no placement: the restored array goes where jit needs it."""
    path = Checkpoint(w=jnp.arange(16.0)).save(str(tmp_path / "ckpt"))
    ckpt = Checkpoint(w=jnp.zeros(16))
    ckpt.restore(path).assert_consumed()
    assert not ckpt.w.committed
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    x = jax.device_put(jnp.ones((8, 16)), NamedSharding(mesh, P("batch")))
    np.testing.assert_array_equal(jax.jit(lambda w, x: x @ w)(ckpt.w, x), np.ones(8) * 120.0)
    placed = jax.device_put(jnp.zeros(16), jax.devices()[3])
    ckpt = Checkpoint(w=placed)
    ckpt.restore(path).assert_consumed()
    assert ckpt.w.committed
    assert ckpt.w.devices() == {jax.devices()[3]}


def test_ranks_other_than_0_copy_no_replicated_leaf_to_the_host(monkeypatch: Any) -> None:
    """Rank 0 writes what every process holds whole: the others look only at the leaves they
    hold in part (none here), and never copy a replicated leaf to the host to drop it."""
    from pipestate.checkpoint._distributed import Placement
    from pipestate.checkpoint._graph import GraphView
    from pipestate.jax import _pytree

    mesh = Mesh(np.array(jax.devices()), ("x",))
    tree = {
        "w": jax.device_put(jnp.ones((8, 4)), NamedSharding(mesh, P("x"))),
        "b": jnp.zeros(4),
    }
    ckpt = Checkpoint(params=tree)
    copied: list[Any] = []
    real = _pytree.saved_leaf

    def counting(array: Any) -> Any:
        copied.append(array)
        return real(array)

    monkeypatch.setattr(_pytree, "saved_leaf", counting)
    _, arrays, _, sharded = GraphView(ckpt).serialize(placement=Placement(1, 2))
    assert copied == []
    assert arrays == []
    assert sharded == {}
    GraphView(ckpt).serialize(placement=Placement(0, 2))
    assert len(copied) == 2  # rank 0 saves both leaves
