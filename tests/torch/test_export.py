"""Torch's own names both ways: export a checkpoint's state dict; restore a plain one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from pipestate.checkpoint import Checkpoint, CheckpointableSaver  # noqa: E402
from pipestate.cli import main  # noqa: E402
from pipestate.errors import CheckpointKeyError, CheckpointMismatchError  # noqa: E402
from pipestate.torch._export import export_state_dict  # noqa: E402

from .test_state import TiedNet, same_bits, trained  # noqa: E402


def assert_same_state(a: Any, b: Any) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        assert same_bits(sa[name], sb[name]), name


def test_cli_export_loads_with_load_state_dict(tmp_path: Path, capsys: Any) -> None:
    model, optimizer = trained()
    path = Checkpoint(model=model, optimizer=optimizer).save(str(tmp_path / "ckpt"))
    out = tmp_path / "model.safetensors"
    assert main(["export", path, "--torch", str(out), "--key", "model"]) == 0
    assert "tensor(s) written" in capsys.readouterr().out
    loaded = safetensors_torch.load_file(out)
    assert loaded["embed.weight"].dtype == torch.bfloat16
    fresh = TiedNet()
    fresh.load_state_dict(loaded)
    assert_same_state(fresh, model)
    assert fresh.head.weight is fresh.embed.weight


def test_export_finds_the_only_module_without_a_key(tmp_path: Path) -> None:
    model, _ = trained()
    path = Checkpoint(model=model, step=3).save(str(tmp_path / "ckpt"))
    names = export_state_dict(path, tmp_path / "m.safetensors")
    assert names == list(model.state_dict())
    path = CheckpointableSaver(model).save(str(tmp_path / "root"))
    assert export_state_dict(path, tmp_path / "r.safetensors") == names


def test_export_needs_a_key_among_several_and_refuses_an_optimizer(tmp_path: Path) -> None:
    model, optimizer = trained()
    path = Checkpoint(model=model, optimizer=optimizer).save(str(tmp_path / "ckpt"))
    # The optimizer's state is nested: the model is the only state dict of tensors.
    assert export_state_dict(path, tmp_path / "x.safetensors") == list(model.state_dict())
    two = Checkpoint(model=model, teacher=TiedNet()).save(str(tmp_path / "two"))
    with pytest.raises(CheckpointKeyError, match="--key"):
        export_state_dict(two, tmp_path / "x.safetensors")
    with pytest.raises(CheckpointKeyError, match="no object 'decoder'"):
        export_state_dict(path, tmp_path / "x.safetensors", key="decoder")
    with pytest.raises(CheckpointMismatchError, match="not a state dict"):
        export_state_dict(path, tmp_path / "x.safetensors", key="optimizer")
    assert main(["export", two, "--torch", str(tmp_path / "y.safetensors")]) == 2
    assert not (tmp_path / "y.safetensors").exists()


def test_a_plain_state_dict_file_restores_into_a_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2)).to(torch.bfloat16)
    file = tmp_path / "model.safetensors"
    safetensors_torch.save_file(model.state_dict(), file)
    fresh = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2)).to(torch.bfloat16)
    Checkpoint(model=fresh).restore(str(file)).assert_consumed()
    assert_same_state(fresh, model)
    again = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2)).to(torch.bfloat16)
    CheckpointableSaver(again).restore(str(file)).assert_consumed()
    assert_same_state(again, model)


def test_a_file_holding_tied_weights_once_restores_both(tmp_path: Path) -> None:
    """As Hugging Face's ``model.safetensors`` does: the tied head is not in the file."""
    model, _ = trained()
    state = {k: v for k, v in model.state_dict().items() if k != "head.weight"}
    file = tmp_path / "model.safetensors"
    safetensors_torch.save_file(state, file)
    fresh = TiedNet()
    Checkpoint(model=fresh).restore(str(file)).assert_consumed()
    assert_same_state(fresh, model)


def test_a_file_missing_a_weight_is_not_consumed(tmp_path: Path) -> None:
    model, _ = trained()
    state = {k: v.clone() for k, v in model.state_dict().items() if k != "hidden.bias"}
    file = tmp_path / "model.safetensors"
    safetensors_torch.save_file(state, file)
    status = Checkpoint(model=TiedNet()).restore(str(file))
    with pytest.raises(AssertionError, match="not restored"):
        status.assert_consumed()


def test_a_truncated_state_dict_file_is_corrupt(tmp_path: Path) -> None:
    from pipestate.errors import CorruptCheckpointError

    model, _ = trained()
    file = tmp_path / "model.safetensors"
    safetensors_torch.save_file({k: v.clone() for k, v in model.state_dict().items()}, file)
    file.write_bytes(file.read_bytes()[:-10])
    with pytest.raises(CorruptCheckpointError):
        Checkpoint(model=TiedNet()).restore(str(file))


def test_export_round_trips_through_a_checkpoint_again(tmp_path: Path) -> None:
    model, _ = trained()
    first = Checkpoint(model=model).save(str(tmp_path / "a"))
    out = tmp_path / "m.safetensors"
    export_state_dict(first, out)
    fresh = TiedNet()
    Checkpoint(model=fresh).restore(str(out)).assert_consumed()
    assert_same_state(fresh, model)
