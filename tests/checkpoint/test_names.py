"""Name-based restore from flat ``name -> array`` safetensors files written by anyone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from pipestate.checkpoint import (
    AutoTrackable,
    Checkpoint,
    CheckpointableSaver,
    NameBasedSaverStatus,
    Variable,
)
from pipestate.checkpoint._inspect import diff_checkpoints, verify_checkpoint
from pipestate.errors import CheckpointMismatchError

from ._helpers import Model


def weights(seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "dense/kernel": rng.standard_normal((3, 4)).astype(np.float32),
        "dense/bias": rng.standard_normal(4).astype(np.float32),
        "out": rng.standard_normal(4),
    }


class TorchLike:
    """A Stateful object whose state dict uses dotted names, like a torch module."""

    def __init__(self) -> None:
        self.params = {
            "fc.weight": np.zeros((2, 2), np.float32),
            "fc.bias": np.zeros(2, np.float32),
        }

    def state_dict(self) -> dict[str, Any]:
        return dict(self.params)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.params = dict(state)


def test_flat_file_restores_by_variable_path(tmp_path: Path) -> None:
    file = tmp_path / "weights.safetensors"
    save_file(weights(), str(file))
    model = Model()
    status = CheckpointableSaver(model).restore(str(file))
    assert isinstance(status, NameBasedSaverStatus)
    status.assert_consumed().assert_existing_objects_matched().assert_nontrivial_match()
    np.testing.assert_array_equal(model.dense.kernel.numpy(), weights()["dense/kernel"])
    np.testing.assert_array_equal(model.out.numpy(), weights()["out"])


def test_checkpoint_restore_treats_save_counter_as_optional(tmp_path: Path) -> None:
    file = tmp_path / "w.safetensors"
    save_file({f"model/{k}": v for k, v in weights().items()}, str(file))
    ckpt = Checkpoint(model=Model())
    ckpt.restore(str(file)).assert_consumed()
    assert int(ckpt.save_counter.numpy()) == 0


def test_full_keys_match_too(tmp_path: Path) -> None:
    file = tmp_path / "w.safetensors"
    save_file({"out/.ATTRIBUTES/VARIABLE_VALUE": np.ones(4)}, str(file))
    root = AutoTrackable()
    root.out = Variable(np.zeros(4))
    CheckpointableSaver(root).restore(str(file)).assert_consumed()
    assert root.out.numpy().tolist() == [1.0] * 4


def test_stateful_entries_match_by_their_names(tmp_path: Path) -> None:
    file = tmp_path / "torch.safetensors"
    save_file(
        {"fc.weight": np.ones((2, 2), np.float32), "fc.bias": np.ones(2, np.float32)}, str(file)
    )
    module = TorchLike()
    CheckpointableSaver(module).restore(str(file)).assert_consumed()
    assert module.params["fc.weight"].tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_partial_match_is_reported(tmp_path: Path) -> None:
    file = tmp_path / "w.safetensors"
    data = weights()
    del data["out"]
    data["unrelated"] = np.zeros(1)
    save_file(data, str(file))
    model = Model()
    status = CheckpointableSaver(model).restore(str(file))
    status.assert_nontrivial_match()
    with pytest.raises(
        AssertionError, match=r"(?s)Object not restored: out .*Unused name in checkpoint: unrelated"
    ):
        status.assert_consumed()
    with pytest.raises(
        AssertionError, match=r"Some Python objects were not restored.*\n  Object not restored: out"
    ):
        status.assert_existing_objects_matched()
    np.testing.assert_array_equal(model.dense.bias.numpy(), data["dense/bias"])


def test_nothing_matching_fails_nontrivial_match(tmp_path: Path) -> None:
    file = tmp_path / "w.safetensors"
    save_file({"a": np.zeros(1), "b": np.zeros(1)}, str(file))
    status = CheckpointableSaver(Model()).restore(str(file))
    with pytest.raises(
        AssertionError, match=r"No name in name-based checkpoint .* Names in the file:\n  a\n  b"
    ):
        status.assert_nontrivial_match()


def test_dtype_mismatch_raises(tmp_path: Path) -> None:
    file = tmp_path / "w.safetensors"
    save_file({"out": np.zeros(4, np.float16)}, str(file))
    root = AutoTrackable()
    root.out = Variable(np.zeros(4))
    with pytest.raises(CheckpointMismatchError, match="dtype float16 and shape"):
        CheckpointableSaver(root).restore(str(file))


def test_bfloat16_widens_exactly_to_float32(tmp_path: Path) -> None:
    values = np.array([1.5, -2.0, 3.140625], np.float32)
    bits = (values.view(np.uint32) >> 16).astype("<u2")
    header = b'{"out":{"dtype":"BF16","shape":[3],"data_offsets":[0,6]}}'
    header += b" " * (-(8 + len(header)) % 8)
    file = tmp_path / "bf16.safetensors"
    file.write_bytes(len(header).to_bytes(8, "little") + header + bits.tobytes())
    root = AutoTrackable()
    root.out = Variable(np.zeros(3, np.float32))
    CheckpointableSaver(root).restore(str(file)).assert_consumed()
    assert root.out.numpy().tolist() == values.tolist()


def test_float8_is_refused(tmp_path: Path) -> None:
    header = b'{"out":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}'
    header += b" " * (-(8 + len(header)) % 8)
    file = tmp_path / "f8.safetensors"
    file.write_bytes(len(header).to_bytes(8, "little") + header + b"\x00\x00")
    root = AutoTrackable()
    root.out = Variable(np.zeros(2, np.float32))
    with pytest.raises(CheckpointMismatchError, match="dtype F8_E4M3, which NumPy cannot hold"):
        CheckpointableSaver(root).restore(str(file))


def test_repr(tmp_path: Path) -> None:
    file = tmp_path / "w.safetensors"
    save_file(weights(), str(file))
    status = CheckpointableSaver(Model()).restore(str(file))
    assert repr(status).endswith("w.safetensors', used 3 of 3 names)")


def test_verify_and_diff_accept_types_numpy_cannot_hold(tmp_path: Path) -> None:
    header = b'{"out":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}'
    header += b" " * (-(8 + len(header)) % 8)
    file = tmp_path / "f8.safetensors"
    file.write_bytes(len(header).to_bytes(8, "little") + header + b"\x00\x00")
    assert verify_checkpoint(str(file)) == (1, [])
    assert diff_checkpoints(str(file), str(file)) == []
