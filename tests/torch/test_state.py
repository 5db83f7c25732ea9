"""Torch objects in checkpoints: every kind round-trips, dtypes bit for bit, storage shared."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pipestate.checkpoint import (  # noqa: E402
    AutoTrackable,
    Checkpoint,
    CheckpointableSaver,
    load_variable,
)
from pipestate.checkpoint._rng import RNGState  # noqa: E402
from pipestate.errors import CheckpointMismatchError, CorruptCheckpointError  # noqa: E402
from pipestate.torch._state import map_location  # noqa: E402

DTYPES = [
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.uint16,
    torch.int32,
    torch.uint32,
    torch.int64,
    torch.uint64,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.complex64,
    torch.complex128,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
    torch.float8_e4m3fnuz,
    torch.float8_e5m2fnuz,
    torch.float8_e8m0fnu,
]


def random_tensor(dtype: Any, shape: tuple[int, ...] = (3, 5)) -> Any:
    """A tensor of ``dtype`` whose bytes are random (every bit pattern, NaNs included)."""
    generator = torch.Generator().manual_seed(7)
    size = torch.empty(0, dtype=dtype).element_size()
    count = int(np.prod(shape)) * size
    raw = torch.randint(0, 256, (count,), dtype=torch.uint8, generator=generator)
    if dtype == torch.bool:
        return (raw % 2).bool().reshape(shape)
    return raw.view(dtype).reshape(shape)


def same_bits(a: Any, b: Any) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    flat_a, flat_b = a.contiguous().reshape(-1), b.contiguous().reshape(-1)
    return bool(torch.equal(flat_a.view(torch.uint8), flat_b.view(torch.uint8)))


class TiedNet(torch.nn.Module):
    """An embedding tied to the output layer, in bfloat16, with a dropout."""

    def __init__(self, vocab: int = 64, width: int = 16, dtype: Any = torch.bfloat16) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width, dtype=dtype)
        self.hidden = torch.nn.Linear(width, width, dtype=dtype)
        self.drop = torch.nn.Dropout(0.1)
        self.head = torch.nn.Linear(width, vocab, bias=False, dtype=dtype)
        self.head.weight = self.embed.weight

    def forward(self, tokens: Any) -> Any:
        return self.head(self.drop(torch.relu(self.hidden(self.embed(tokens)))))


def trained(seed: int = 0) -> tuple[Any, Any]:
    torch.manual_seed(seed)
    model = TiedNet()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    for _ in range(2):
        model(torch.randint(0, 64, (4,))).float().sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
def test_every_dtype_round_trips_bit_exactly(tmp_path: Path, dtype: Any) -> None:
    holder = AutoTrackable()
    holder.tensor = random_tensor(dtype)
    holder.scalar = random_tensor(dtype, ())
    path = CheckpointableSaver(holder).save(str(tmp_path / "t"))
    restored = AutoTrackable()
    restored.tensor = None
    restored.scalar = None
    CheckpointableSaver(restored).restore(path).assert_consumed()
    assert same_bits(restored.tensor, holder.tensor)
    assert same_bits(restored.scalar, holder.scalar)


@pytest.mark.parametrize(
    ("dtype", "code"),
    [
        (torch.bfloat16, "BF16"),
        (torch.float16, "F16"),
        (torch.float8_e4m3fn, "F8_E4M3"),
        (torch.float8_e5m2, "F8_E5M2"),
    ],
    ids=["bf16", "f16", "f8-e4m3", "f8-e5m2"],
)
def test_shards_store_the_dtype_itself(tmp_path: Path, dtype: Any, code: str) -> None:
    from safetensors import safe_open

    holder = AutoTrackable()
    holder.weight = random_tensor(dtype, (4, 4))
    path = CheckpointableSaver(holder).save(str(tmp_path / "t"))
    index = json.loads(Path(path + ".index").read_text())
    entry = index["checkpoint"]["tensors"]["weight/.ATTRIBUTES/VALUE"]
    assert entry["dtype"] in (code, "<f2")
    assert entry["length"] == 16 * holder.weight.element_size()
    with safe_open(path + ".data-00000-of-00001", "pt") as f:
        assert same_bits(f.get_tensor("weight/.ATTRIBUTES/VALUE"), holder.weight)


def test_numpy_readers_get_bfloat16_and_float8_widened_to_float32(tmp_path: Path) -> None:
    holder = AutoTrackable()
    holder.b = torch.tensor([1.5, -2.25, 3e38], dtype=torch.bfloat16)
    holder.f = torch.tensor([0.5, -448.0], dtype=torch.float8_e4m3fn)
    path = CheckpointableSaver(holder).save(str(tmp_path / "t"))
    bf16 = load_variable(path, "b/.ATTRIBUTES/VALUE")
    assert bf16.dtype == np.float32
    np.testing.assert_array_equal(bf16, holder.b.float().numpy())
    np.testing.assert_array_equal(load_variable(path, "f/.ATTRIBUTES/VALUE"), [0.5, -448.0])


def test_module_optimizer_round_trip_with_tied_weights(tmp_path: Path) -> None:
    model, optimizer = trained()
    path = Checkpoint(model=model, optimizer=optimizer).save(str(tmp_path / "ckpt"))
    model2, optimizer2 = trained(seed=1)
    Checkpoint(model=model2, optimizer=optimizer2).restore(path).assert_consumed()
    for (name, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert same_bits(a, b), name
    assert model2.head.weight is model2.embed.weight
    state, state2 = optimizer.state_dict()["state"], optimizer2.state_dict()["state"]
    for key in state:
        for name in state[key]:
            assert same_bits(state[key][name], state2[key][name]), (key, name)
    assert optimizer2.state_dict()["param_groups"] == optimizer.state_dict()["param_groups"]


def test_tied_weights_are_written_once(tmp_path: Path) -> None:
    model, _ = trained()
    path = CheckpointableSaver(model).save(str(tmp_path / "m"))
    tensors = json.loads(Path(path + ".index").read_text())["checkpoint"]["tensors"]
    assert len(tensors) == len({id(p) for p in model.parameters()})
    nodes = json.loads(Path(path + ".index").read_text())["checkpoint"]["nodes"]
    attributes = nodes[0]["attributes"]
    assert attributes["head.weight"] == attributes["embed.weight"]


def test_views_share_storage_after_restore(tmp_path: Path) -> None:
    base = torch.arange(24, dtype=torch.bfloat16).reshape(4, 6)
    holder = AutoTrackable()
    holder.values = {"base": base, "row": base[1], "cols": base[:, 2:4], "t": base.t()}
    holder.slice_only = torch.arange(10.0)[3:7]
    path = CheckpointableSaver(holder).save(str(tmp_path / "v"))
    restored = AutoTrackable()
    restored.values = {}
    restored.slice_only = None
    CheckpointableSaver(restored).restore(path).assert_consumed()
    values = restored.values
    for name in ("base", "row", "cols", "t"):
        assert same_bits(values[name], holder.values[name]), name
        assert values[name].stride() == holder.values[name].stride(), name
    values["base"][1, 0] = 100.0
    assert values["row"][0] == 100.0
    assert values["t"][0, 1] == 100.0
    assert (
        values["cols"].untyped_storage().data_ptr() == values["base"].untyped_storage().data_ptr()
    )
    assert torch.equal(restored.slice_only, torch.arange(10.0)[3:7])
    tensors = json.loads(Path(path + ".index").read_text())["checkpoint"]["tensors"]
    assert len(tensors) == 2  # one storage each


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: torch.arange(6.0).reshape(2, 3).t(), id="transposed"),
        pytest.param(lambda: torch.empty(0, 3, dtype=torch.bfloat16), id="empty"),
        pytest.param(lambda: torch.arange(8.0)[::3], id="strided-slice"),
        pytest.param(lambda: torch.tensor([1 + 2j, 3 - 4j]).conj(), id="conjugated"),
        pytest.param(lambda: torch.tensor([1.0, -2.0])._neg_view(), id="negated"),
        pytest.param(lambda: torch.nn.Parameter(torch.ones(2)), id="parameter"),
    ],
)
def test_unusual_layouts_round_trip(tmp_path: Path, make: Any) -> None:
    holder = AutoTrackable()
    holder.value = make()
    path = CheckpointableSaver(holder).save(str(tmp_path / "u"))
    restored = AutoTrackable()
    restored.value = None
    CheckpointableSaver(restored).restore(path).assert_consumed()
    expected = holder.value.detach().resolve_conj().resolve_neg()
    assert same_bits(restored.value, expected)
    if holder.value.numel() and not holder.value.is_conj() and not holder.value.is_neg():
        assert restored.value.stride() == holder.value.stride()


def test_file_size_with_tied_bf16_weights_is_at_most_torch_saves(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TiedNet(vocab=4096, width=128)
    path = CheckpointableSaver(model).save(str(tmp_path / "m"))
    ours = sum(f.stat().st_size for f in tmp_path.glob("m.*"))
    torch.save(model.state_dict(), tmp_path / "model.pt")
    theirs = (tmp_path / "model.pt").stat().st_size
    assert ours <= 1.02 * theirs, (ours, theirs)
    assert Path(path + ".index").exists()


def test_schedulers_and_scaler_round_trip(tmp_path: Path) -> None:
    _, optimizer = trained()
    schedulers = {
        "one_cycle": torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=20),
        "plateau": torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer),
    }
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    for _ in range(3):
        optimizer.step()
        schedulers["one_cycle"].step()
        schedulers["plateau"].step(1.0)
    scaler.scale(torch.ones(()))
    scaler.update(512.0)
    path = Checkpoint(scaler=scaler, **schedulers).save(str(tmp_path / "s"))
    _, optimizer2 = trained()
    schedulers2 = {
        "one_cycle": torch.optim.lr_scheduler.OneCycleLR(optimizer2, max_lr=0.1, total_steps=20),
        "plateau": torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer2),
    }
    scaler2 = torch.amp.GradScaler("cpu")
    Checkpoint(scaler=scaler2, **schedulers2).restore(path).assert_consumed()
    for name, scheduler in schedulers.items():
        assert schedulers2[name].state_dict() == scheduler.state_dict(), name
    assert scaler2.state_dict() == scaler.state_dict()
    assert scaler2.get_scale() == 512.0


def test_generator_round_trip_continues_its_stream(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(3)
    torch.rand(5, generator=generator)
    path = Checkpoint(generator=generator).save(str(tmp_path / "g"))
    expected = torch.rand(5, generator=generator)
    other = torch.Generator().manual_seed(99)
    Checkpoint(generator=other).restore(path).assert_consumed()
    assert torch.equal(torch.rand(5, generator=other), expected)
    index = json.loads(Path(path + ".index").read_text())
    assert index["checkpoint"]["nodes"][1]["kind"] == "torch.Generator(cpu)"


def test_rng_state_continues_every_stream(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.random(), np.random.rand(), torch.rand(1), np.random.randn()
    path = Checkpoint(rng=RNGState()).save(str(tmp_path / "r"))
    expected = (random.random(), np.random.rand(3), torch.rand(3), random.gauss(0, 1))
    random.seed(10)
    np.random.seed(20)
    torch.manual_seed(30)
    Checkpoint(rng=RNGState()).restore(path).assert_consumed()
    got = (random.random(), np.random.rand(3), torch.rand(3), random.gauss(0, 1))
    assert got[0] == expected[0]
    np.testing.assert_array_equal(got[1], expected[1])
    assert torch.equal(got[2], expected[2])
    assert got[3] == expected[3]
    index = Path(path + ".index").read_text()
    assert "pickle" not in index


def test_rng_state_is_data_not_pickles(tmp_path: Path) -> None:
    path = Checkpoint(rng=RNGState()).save(str(tmp_path / "r"))
    nodes = json.loads(Path(path + ".index").read_text())["checkpoint"]["nodes"]
    (node,) = [n for n in nodes if n["kind"] == "RNGState"]
    assert set(node["attributes"]) >= {"python", "numpy", "torch"}
    tensors = json.loads(Path(path + ".index").read_text())["checkpoint"]["tensors"]
    assert tensors["rng/.ATTRIBUTES/torch"]["dtype"] == "|u1"
    assert tensors["rng/.ATTRIBUTES/numpy/key"]["dtype"] == "<u4"


def test_rng_state_refuses_a_bad_option() -> None:
    with pytest.raises(ValueError, match="on_missing_device"):
        RNGState(on_missing_device="maybe")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_come_back_on_their_device(tmp_path: Path) -> None:
    holder = AutoTrackable()
    holder.weight = random_tensor(torch.bfloat16).cuda()
    holder.view = holder.weight[1]
    holder.rng = RNGState()
    path = CheckpointableSaver(holder).save(str(tmp_path / "c"))
    expected = torch.rand(3, device="cuda")
    restored = AutoTrackable()
    restored.weight = restored.view = None
    restored.rng = RNGState()
    CheckpointableSaver(restored).restore(path).assert_consumed()
    assert restored.weight.device == holder.weight.device
    assert same_bits(restored.weight.cpu(), holder.weight.cpu())
    assert (
        restored.view.untyped_storage().data_ptr() == restored.weight.untyped_storage().data_ptr()
    )
    assert torch.equal(torch.rand(3, device="cuda"), expected)
    with map_location("cpu"):
        CheckpointableSaver(restored).restore(path)
    assert restored.weight.device.type == "cpu"


def test_a_tensor_from_a_missing_device_needs_map_location(tmp_path: Path) -> None:
    holder = AutoTrackable()
    holder.weight = torch.arange(4.0)
    path = CheckpointableSaver(holder).save(str(tmp_path / "c"))
    index_path = Path(path + ".index")
    document = json.loads(index_path.read_text())
    set_value(document, {"of": "weight/.ATTRIBUTES/VALUE", "device": "cuda:7"})
    rewrite(index_path, document)
    restored = AutoTrackable()
    restored.weight = None
    with pytest.raises(CheckpointMismatchError, match="map_location"):
        CheckpointableSaver(restored).restore(path)
    with map_location({"cuda:7": "cpu"}):
        CheckpointableSaver(restored).restore(path).assert_consumed()
    assert torch.equal(restored.weight, torch.arange(4.0))


def set_value(document: dict[str, Any], body: Any) -> None:
    """Make the saved value of the root's ``weight`` the torch value ``body``."""
    nodes = document["checkpoint"]["nodes"]
    nodes[nodes[0]["children"]["weight"]]["attributes"]["VALUE"] = {"torch": body}


def rewrite(index_path: Path, document: dict[str, Any]) -> None:
    """Write a modified index with a valid checksum (the hostile file a careful attacker makes)."""
    from pipestate.checkpoint._index import body_crc

    document["crc32c"] = body_crc(document["checkpoint"])
    index_path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(7, id="not-a-key"),
        pytest.param({"of": 3}, id="key-not-str"),
        pytest.param({"of": "weight/.ATTRIBUTES/VALUE", "run": "rm"}, id="unknown-field"),
        pytest.param({"of": "weight/.ATTRIBUTES/VALUE", "dtype": "float32"}, id="half-a-view"),
        pytest.param(
            {
                "of": "weight/.ATTRIBUTES/VALUE",
                "dtype": "float32",
                "offset": 2,
                "shape": [4],
                "stride": [1],
            },
            id="view-past-the-end",
        ),
        pytest.param(
            {
                "of": "weight/.ATTRIBUTES/VALUE",
                "dtype": "object",
                "offset": 0,
                "shape": [1],
                "stride": [1],
            },
            id="view-bad-dtype",
        ),
        pytest.param(
            {
                "of": "weight/.ATTRIBUTES/VALUE",
                "dtype": "float32",
                "offset": 0,
                "shape": [2],
                "stride": [-1],
            },
            id="view-negative-stride",
        ),
        pytest.param({"of": "nope"}, id="missing-tensor"),
        pytest.param({"of": "weight/.ATTRIBUTES/VALUE", "device": "warp:9"}, id="bad-device"),
    ],
)
def test_hostile_torch_values_raise_typed_errors(tmp_path: Path, body: Any) -> None:
    holder = AutoTrackable()
    holder.weight = torch.arange(4.0)
    path = CheckpointableSaver(holder).save(str(tmp_path / "h"))
    index_path = Path(path + ".index")
    document = json.loads(index_path.read_text())
    set_value(document, body)
    rewrite(index_path, document)
    restored = AutoTrackable()
    restored.weight = None
    with pytest.raises(CorruptCheckpointError):
        CheckpointableSaver(restored).restore(path)


def test_a_wrong_native_dtype_in_the_index_is_corrupt(tmp_path: Path) -> None:
    holder = AutoTrackable()
    holder.weight = random_tensor(torch.bfloat16)
    path = CheckpointableSaver(holder).save(str(tmp_path / "h"))
    index_path = Path(path + ".index")
    document = json.loads(index_path.read_text())
    document["checkpoint"]["tensors"]["weight/.ATTRIBUTES/VALUE"]["dtype"] = "F8_E5M2"
    rewrite(index_path, document)
    restored = AutoTrackable()
    restored.weight = None
    with pytest.raises(CorruptCheckpointError):
        CheckpointableSaver(restored).restore(path)


def test_flipped_bits_in_a_bf16_shard_are_caught(tmp_path: Path) -> None:
    model, _ = trained()
    path = CheckpointableSaver(model).save(str(tmp_path / "m"))
    shard = Path(path + ".data-00000-of-00001")
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="checksum"):
        CheckpointableSaver(TiedNet()).restore(path)


def test_restoring_the_wrong_shape_or_generator_is_a_mismatch(tmp_path: Path) -> None:
    path = CheckpointableSaver(TiedNet()).save(str(tmp_path / "m"))
    with pytest.raises(CheckpointMismatchError, match="load_state_dict"):
        CheckpointableSaver(TiedNet(vocab=65)).restore(path)
    generator_path = Checkpoint(g=torch.Generator()).save(str(tmp_path / "g"))
    index_path = Path(generator_path + ".index")
    document = json.loads(index_path.read_text())
    document["checkpoint"]["nodes"][1]["attributes"]["STATE"]["dict"]["device"] = "cuda"
    rewrite(index_path, document)
    with pytest.raises(CheckpointMismatchError, match="cuda"):
        Checkpoint(g=torch.Generator()).restore(generator_path)


@pytest.mark.parametrize(
    "tensor",
    [
        pytest.param(lambda: torch.eye(3).to_sparse(), id="sparse"),
        pytest.param(lambda: torch.empty(3, device="meta"), id="meta"),
        pytest.param(lambda: torch.zeros(2, dtype=torch.complex32), id="complex32"),
    ],
)
@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
def test_unsaveable_tensors_are_refused_before_writing(tmp_path: Path, tensor: Any) -> None:
    holder = AutoTrackable()
    holder.t = tensor()
    with pytest.raises(TypeError, match="cannot save the tensor"):
        CheckpointableSaver(holder).save(str(tmp_path / "x"))
    assert not list(tmp_path.iterdir())


def test_async_save_snapshots_torch_tensors(tmp_path: Path) -> None:
    from pipestate.checkpoint import CheckpointOptions

    model, _ = trained()
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    ckpt = Checkpoint(model=model)
    path = ckpt.save(str(tmp_path / "a"), options=CheckpointOptions(enable_async=True))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    ckpt.sync()
    model2 = TiedNet()
    Checkpoint(model=model2).restore(path).assert_consumed()
    for name, value in expected.items():
        assert same_bits(model2.state_dict()[name], value), name


def test_inspect_shows_native_dtypes_and_shared_tensors_once(tmp_path: Path) -> None:
    from pipestate.checkpoint._inspect import describe_tree

    model, _ = trained()
    holder = AutoTrackable()
    base = torch.arange(6.0).bfloat16()
    holder.views = {"a": base, "b": base[2:]}
    path = Checkpoint(model=model, holder=holder).save(str(tmp_path / "i"))
    tree = describe_tree(path)
    assert ".embed.weight: BF16[64, 16]  2.0 KiB" in tree
    assert "nested value with 1 arrays (12 B)" in tree


def test_a_process_without_torch_reads_torch_values_as_numpy(tmp_path: Path) -> None:
    import subprocess
    import sys

    holder = AutoTrackable()
    holder.values = {"w": torch.tensor([1.5, -2.0], dtype=torch.bfloat16), "i": torch.arange(3)}
    path = CheckpointableSaver(holder).save(str(tmp_path / "n"))
    script = f"""
import sys
sys.modules["torch"] = None  # torch cannot be imported here
import numpy as np
from pipestate.checkpoint import AutoTrackable, CheckpointableSaver
holder = AutoTrackable()
holder.values = {{}}
CheckpointableSaver(holder).restore({path!r}).assert_consumed()
w, i = holder.values["w"], holder.values["i"]
assert w.dtype == np.float32 and w.tolist() == [1.5, -2.0], w
assert i.dtype == np.int64 and i.tolist() == [0, 1, 2], i
assert sys.modules["torch"] is None
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.stdout.strip() == "ok", result.stderr


@pytest.mark.parametrize(
    ("part", "field", "bad"),
    [
        pytest.param("numpy", "pos", {"tuple": [1]}, id="numpy-pos-not-int"),
        pytest.param("python", "version", "three", id="python-bad-version"),
        pytest.param("torch", None, [1, 2, 3], id="torch-not-bytes"),
    ],
)
def test_a_malformed_rng_state_is_a_mismatch_and_changes_nothing(
    tmp_path: Path, part: str, field: str | None, bad: Any
) -> None:
    path = Checkpoint(rng=RNGState()).save(str(tmp_path / "r"))
    index_path = Path(path + ".index")
    document = json.loads(index_path.read_text())
    nodes = document["checkpoint"]["nodes"]
    attributes = nodes[nodes[0]["children"]["rng"]]["attributes"]
    if field is None:
        attributes[part] = bad
    else:
        attributes[part]["dict"][field] = bad
    rewrite(index_path, document)
    random.seed(5)
    expected = random.random()
    random.seed(5)
    with pytest.raises(CheckpointMismatchError, match="random state"):
        Checkpoint(rng=RNGState()).restore(path)
    assert random.random() == expected
