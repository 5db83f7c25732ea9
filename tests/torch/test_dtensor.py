"""Sharded tensors (DTensor) in one process: the chunk format, partial reads, a world of one.

The multi-rank cases (chunks written by their owners, resharding, FSDP2) run
with real processes in ``tests/distributed/test_dtensor.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch.distributed.tensor")

import torch.distributed as dist  # noqa: E402
from torch.distributed.tensor import (  # noqa: E402
    DTensor,
    Partial,
    Replicate,
    Shard,
    distribute_tensor,
    init_device_mesh,
)

import pipestate as ps  # noqa: E402
from pipestate.checkpoint import load_variable  # noqa: E402
from pipestate.checkpoint._inspect import describe_tree, verify_checkpoint  # noqa: E402
from pipestate.checkpoint._values import decode_value, parse_sharding  # noqa: E402
from pipestate.errors import CheckpointMismatchError, CorruptCheckpointError  # noqa: E402
from pipestate.torch._dtensor import SavedDTensor, resolve  # noqa: E402

from ..checkpoint.test_distributed import run_ranks  # noqa: E402


def body(shape: list[int], *chunks: tuple[list[int], list[int]]) -> dict[str, Any]:
    return {
        "shape": shape,
        "dtype": "float32",
        "chunks": [{"offsets": o, "shape": s, "of": f"k{o}"} for o, s in chunks],
    }


GRID = body([4, 6], ([0, 0], [2, 3]), ([0, 3], [2, 3]), ([2, 0], [2, 3]), ([2, 3], [2, 3]))


def full_array() -> np.ndarray:
    return np.arange(24, dtype=np.float32).reshape(4, 6)


def chunk_arrays() -> dict[str, np.ndarray]:
    whole = full_array()
    return {
        c["of"]: whole[
            c["offsets"][0] : c["offsets"][0] + c["shape"][0],
            c["offsets"][1] : c["offsets"][1] + c["shape"][1],
        ].copy()
        for c in GRID["chunks"]
    }


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        pytest.param(body([4], ([0], [2])), "cover 2 of its 4 elements", id="missing-range"),
        pytest.param(body([4], ([0], [3]), ([2], [2])), "overlap", id="overlap"),
        pytest.param(body([4], ([0], [2]), ([0], [2])), "overlap", id="same-chunk-twice"),
        pytest.param(
            body([5000], *(([i], [1]) for i in range(4999)), ([4998], [2])),
            "not the cells of one grid",
            id="many-off-grid",
        ),
        pytest.param(body([4], ([0], [2]), ([2], [3])), "outside shape", id="out-of-bounds"),
        pytest.param(body([4], ([0], [0]), ([0], [4])), "empty", id="empty-chunk"),
        pytest.param(body([4, 2], ([0], [4])), "malformed", id="rank-mismatch"),
        pytest.param({"shape": [4], "dtype": "float32"}, "exactly", id="no-chunks"),
        pytest.param(
            {
                "shape": [4],
                "dtype": "float32",
                "chunks": [
                    {"offsets": [0], "shape": [2], "of": "k[0]"},
                    {"offsets": [2], "shape": [2], "of": "k[0]"},
                ],
            },
            "two 'dtensor' chunks are stored in one tensor 'k\\[0\\]'",
            id="two-chunks-one-tensor",
        ),
    ],
)
def test_malformed_sharding_is_corrupt(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(CorruptCheckpointError, match=message):
        parse_sharding(bad, "model/w")


@pytest.mark.parametrize(
    "good",
    [
        pytest.param(body([2, 3], ([0, 0], [1, 3]), ([1, 0], [1, 1]), ([1, 1], [1, 2])), id="L"),
        pytest.param(body([6000], *(([i], [1]) for i in range(6000))), id="6000-ranks"),
        pytest.param(body([0, 3]), id="empty"),
    ],
)
def test_chunks_that_tile_the_tensor(good: dict[str, Any]) -> None:
    saved = parse_sharding(good, "w")
    assert len(saved.chunks) == len(good["chunks"])


def test_a_reader_without_torch_assembles_numpy() -> None:
    arrays = chunk_arrays()
    out = decode_value({"dtensor": GRID}, arrays.__getitem__, where="w")
    np.testing.assert_array_equal(out, full_array())


def test_a_box_reads_only_the_chunks_it_overlaps() -> None:
    arrays = chunk_arrays()
    read: list[str] = []

    def read_raw(key: str) -> tuple[np.ndarray, str | None]:
        read.append(key)
        return arrays[key], None

    saved = SavedDTensor(parse_sharding(GRID, "w"), read_raw)
    box = saved.read((1, 0), (2, 2))  # rows 1-2, columns 0-1: the two left chunks
    np.testing.assert_array_equal(box.numpy(), full_array()[1:3, 0:2])
    assert read == ["k[0, 0]", "k[2, 0]"]
    read.clear()
    np.testing.assert_array_equal(saved.read((0, 0), (4, 6)).numpy(), full_array())
    assert len(read) == 4


def test_a_chunk_of_another_shape_than_the_index_says_is_corrupt() -> None:
    arrays = chunk_arrays()
    arrays["k[2, 3]"] = arrays["k[2, 3]"][:, :2].copy()
    saved = SavedDTensor(parse_sharding(GRID, "w"), lambda key: (arrays[key], None))
    with pytest.raises(CorruptCheckpointError, match=r"holds torch.float32\[2, 2\]"):
        saved.full()


# -- a world of one ------------------------------------------------------------------


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A one-rank gloo group (a FileStore: no port) and its 1-D mesh."""
    if dist.is_initialized():
        pytest.skip("a process group is already initialized")
    store = dist.FileStore(str(tmp_path_factory.mktemp("store") / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


class Holder:
    """A Stateful object holding one tensor."""

    def __init__(self, tensor: Any) -> None:
        self.tensor = tensor

    def state_dict(self) -> dict[str, Any]:
        return {"tensor": self.tensor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tensor = state["tensor"]


@pytest.mark.parametrize("placement", [Shard(0), Shard(1), Replicate()], ids=str)
def test_round_trip_in_one_process(mesh: Any, tmp_path: Path, placement: Any) -> None:
    value = torch.arange(12, dtype=torch.bfloat16).reshape(3, 4)
    saved = Holder(distribute_tensor(value, mesh, [placement]))
    path = ps.Checkpoint(h=saved).save(str(tmp_path / "ckpt"))
    document = json.loads(Path(path + ".index").read_text())["checkpoint"]
    encoded = document["nodes"][1]["attributes"]["tensor"]["dtensor"]
    assert encoded["shape"] == [3, 4]
    assert encoded["dtype"] == "bfloat16"
    assert [(c["offsets"], c["shape"]) for c in encoded["chunks"]] == [([0, 0], [3, 4])]
    # Into a DTensor: that DTensor's sharding; into anything else: the whole tensor.
    target = Holder(distribute_tensor(torch.zeros(3, 4, dtype=torch.bfloat16), mesh, [Shard(1)]))
    ps.Checkpoint(h=target).restore(path).assert_consumed()
    assert isinstance(target.tensor, DTensor)
    assert target.tensor.placements == (Shard(1),)
    assert torch.equal(target.tensor.full_tensor(), value)
    plain = Holder(torch.zeros(1))
    ps.Checkpoint(h=plain).restore(path).assert_consumed()
    assert type(plain.tensor) is torch.Tensor
    assert torch.equal(plain.tensor, value)
    assert plain.tensor.dtype == torch.bfloat16
    # Read by name: the whole tensor; described and verified chunk by chunk.
    assert torch.equal(load_variable(path, "h/.ATTRIBUTES/tensor"), value)
    tree = describe_tree(path)
    assert "sharded bfloat16[3, 4] in 1 chunk  24 B" in tree
    assert "h/.ATTRIBUTES/tensor@[0,0]  BF16[3, 4]" in tree
    assert verify_checkpoint(path) == (2, [])


def test_chunks_of_four_ranks_restore_onto_a_mesh_of_one(mesh: Any) -> None:
    """A 2 x 2 grid of chunks (saved by 4 ranks) becomes this rank's DTensor, whole."""
    arrays = chunk_arrays()
    saved = SavedDTensor(parse_sharding(GRID, "w"), lambda key: (arrays[key], None))
    target = distribute_tensor(torch.zeros(4, 6), mesh, [Shard(1)])
    out = resolve({"w": saved}, {"w": target})["w"]
    assert isinstance(out, DTensor)
    assert out.placements == (Shard(1),)
    assert torch.equal(out.to_local(), torch.from_numpy(full_array()))


def test_module_and_optimizer_over_dtensor_parameters(mesh: Any, tmp_path: Path) -> None:
    def build() -> tuple[Any, Any]:
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 5)
        for name, param in list(model.named_parameters()):
            model.register_parameter(
                name, torch.nn.Parameter(distribute_tensor(param.data, mesh, [Shard(0)]))
            )
        return model, torch.optim.AdamW(model.parameters(), lr=0.1)

    model, optimizer = build()
    x = distribute_tensor(torch.randn(2, 3), mesh, [Replicate()])
    model(x).sum().backward()
    optimizer.step()
    path = ps.Checkpoint(model=model, optimizer=optimizer).save(str(tmp_path / "ckpt"))
    restored, fresh = build()  # the optimizer has no state yet: its parameters shape it
    ps.Checkpoint(model=restored, optimizer=fresh).restore(path).assert_consumed()
    for before, after in zip(model.parameters(), restored.parameters()):
        assert isinstance(after, DTensor)
        assert torch.equal(after.full_tensor(), before.full_tensor())
        moments = fresh.state[after]
        assert isinstance(moments["exp_avg"], DTensor)
        expected = optimizer.state[before]["exp_avg"].full_tensor()
        assert torch.equal(moments["exp_avg"].full_tensor(), expected)


def test_another_global_shape_is_a_mismatch(mesh: Any, tmp_path: Path) -> None:
    path = ps.Checkpoint(h=Holder(distribute_tensor(torch.ones(4, 2), mesh, [Shard(0)]))).save(
        str(tmp_path / "ckpt")
    )
    target = Holder(distribute_tensor(torch.zeros(5, 2), mesh, [Shard(0)]))
    with pytest.raises(CheckpointMismatchError, match=r"global shape \[4, 2\].*\[5, 2\]"):
        ps.Checkpoint(h=target).restore(path)


def test_partial_is_refused(mesh: Any, tmp_path: Path) -> None:
    partial = DTensor.from_local(torch.ones(3), mesh, [Partial()])
    with pytest.raises(TypeError, match=r"placement P\(sum\).*redistribute"):
        ps.Checkpoint(h=Holder(partial)).save(str(tmp_path / "ckpt"))
    assert not list(tmp_path.iterdir())


class PerRankHolder(Holder):
    """A Holder each rank saves for itself (as iterators and random generators are)."""

    _pipestate_per_rank = True


def test_a_dtensor_of_a_per_rank_object_is_refused(mesh: Any, tmp_path: Path) -> None:
    tensor = distribute_tensor(torch.ones(4), mesh, [Shard(0)])
    results = run_ranks(
        2, lambda rank: ps.Checkpoint(h=PerRankHolder(tensor)).save(str(tmp_path / "ckpt"))
    )
    for err in results:
        assert isinstance(err, TypeError), err
        assert "held by an object saved per rank" in str(err)
    assert not list(tmp_path.glob("ckpt*"))


def test_restoring_into_a_partial_dtensor_is_a_mismatch(mesh: Any, tmp_path: Path) -> None:
    saved = Holder(distribute_tensor(torch.ones(3), mesh, [Shard(0)]))
    path = ps.Checkpoint(h=saved).save(str(tmp_path / "ckpt"))
    target = Holder(DTensor.from_local(torch.zeros(3), mesh, [Partial()]))
    with pytest.raises(CheckpointMismatchError, match=r"placed \(P\(sum\)\)"):
        ps.Checkpoint(h=target).restore(path)


def test_a_dtensor_in_a_plain_attribute(mesh: Any, tmp_path: Path) -> None:
    path = ps.Checkpoint(x=distribute_tensor(torch.arange(4.0), mesh, [Shard(0)])).save(
        str(tmp_path / "ckpt")
    )
    sharded = ps.Checkpoint(x=distribute_tensor(torch.zeros(4), mesh, [Replicate()]))
    sharded.restore(path).assert_consumed()
    assert isinstance(sharded.x, DTensor)
    assert sharded.x.placements == (Replicate(),)
    assert torch.equal(sharded.x.full_tensor(), torch.arange(4.0))
    plain = ps.Checkpoint(x=None)
    plain.restore(path).assert_consumed()
    assert type(plain.x) is torch.Tensor
    assert torch.equal(plain.x, torch.arange(4.0))
