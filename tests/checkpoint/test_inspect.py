from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from pipestate.checkpoint import Checkpoint, list_variables, load_variable
from pipestate.checkpoint._inspect import describe_tree, diff_checkpoints, verify_checkpoint
from pipestate.errors import CheckpointKeyError, NotFoundError

from ._helpers import Model, saved_model


def test_list_variables_of_object_checkpoint(tmp_path: Path) -> None:
    path, _ = saved_model(tmp_path)
    assert list_variables(path) == [
        ("model/dense/bias/.ATTRIBUTES/VARIABLE_VALUE", [4]),
        ("model/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE", [3, 4]),
        ("model/out/.ATTRIBUTES/VARIABLE_VALUE", [4]),
        ("save_counter/.ATTRIBUTES/VARIABLE_VALUE", []),
    ]


def test_list_variables_of_flat_file(tmp_path: Path) -> None:
    save_file({"b": np.zeros((2, 2)), "a": np.zeros(3)}, str(tmp_path / "w.safetensors"))
    assert list_variables(str(tmp_path / "w.safetensors")) == [("a", [3]), ("b", [2, 2])]


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("model/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE", id="tensor-key"),
        pytest.param("model/dense/kernel", id="variable-path"),
    ],
)
def test_load_variable_by_key_or_path(tmp_path: Path, name: str) -> None:
    path, model = saved_model(tmp_path)
    np.testing.assert_array_equal(load_variable(path, name), model.dense.kernel.numpy())


def test_load_inline_value(tmp_path: Path) -> None:
    path = Checkpoint(epoch=5, cfg={"lr": 0.5}).save(str(tmp_path / "c"))
    assert load_variable(path, "epoch/.ATTRIBUTES/VALUE") == 5
    assert load_variable(path, "cfg/.ATTRIBUTES/VALUE") == {"lr": 0.5}
    assert load_variable(path, "save_counter") == 1


def test_load_variable_errors(tmp_path: Path) -> None:
    path, _ = saved_model(tmp_path)
    with pytest.raises(
        CheckpointKeyError, match="has no value named 'model/nope'; similar names: model/"
    ):
        load_variable(path, "model/nope")
    with pytest.raises(TypeError, match="name must be a str, got 3"):
        load_variable(path, 3)  # type: ignore[arg-type]
    with pytest.raises(NotFoundError, match="no checkpoint at"):
        load_variable(str(tmp_path / "missing"), "x")
    save_file({"a": np.zeros(1)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointKeyError, match="has no tensor named 'b'"):
        load_variable(str(tmp_path / "w.safetensors"), "b")


def test_describe_tree_shows_dtypes_shapes_and_sizes(tmp_path: Path) -> None:
    model = Model()
    model.twin = model.out
    path = Checkpoint(model=model, epoch=2, state={"buf": np.zeros(4, np.int32), "i": 1}).save(
        str(tmp_path / "t")
    )
    tree = describe_tree(path)
    assert tree.splitlines()[0].endswith(
        "t-1: pipestate checkpoint (format 1), 9 objects, 5 arrays (120 B) in 1 shard"
    )
    assert "├── model (Model)" in tree
    assert "│   ├── dense (AutoTrackable)" in tree
    assert "│   │   ├── kernel (Variable)" in tree
    assert "│   │   │   └── .VARIABLE_VALUE: float32[3, 4]  48 B" in tree
    assert "│   └── twin -> same object as model/out" in tree
    assert "├── epoch (int)\n│   └── .VALUE: 2" in tree
    assert ".VALUE: nested value with 1 arrays (16 B)" in tree
    assert "state/.ATTRIBUTES/VALUE/buf  int32[4]  16 B" in tree


def test_verify_and_diff(tmp_path: Path) -> None:
    path_a, _ = saved_model(tmp_path / "a", seed=1)
    path_b, _ = saved_model(tmp_path / "b", seed=2)
    assert verify_checkpoint(path_a) == (4, [])
    assert diff_checkpoints(path_a, path_a) == []
    lines = diff_checkpoints(path_a, path_b)
    assert len(lines) == 2
    assert lines[0].startswith(
        "~ model/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE: float32[3, 4] crc32c="
    )
