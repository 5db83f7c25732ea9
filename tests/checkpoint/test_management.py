"""latest_checkpoint, get_checkpoint_state and update_checkpoint_state, as in TensorFlow."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import pipestate
from pipestate.checkpoint import (
    Checkpoint,
    CheckpointManager,
    CheckpointState,
    get_checkpoint_state,
    latest_checkpoint,
    update_checkpoint_state,
)
from pipestate.errors import CorruptCheckpointError

# What TensorFlow's CheckpointManager writes (text_format of CheckpointState).
TF_MANAGER_STATE = """\
model_checkpoint_path: "ckpt-12"
all_model_checkpoint_paths: "ckpt-10"
all_model_checkpoint_paths: "ckpt-11"
all_model_checkpoint_paths: "ckpt-12"
all_model_checkpoint_timestamps: 1601612913.4279857
all_model_checkpoint_timestamps: 1601613356.2644634
all_model_checkpoint_timestamps: 1601614241.2990458
last_preserved_timestamp: 1601609353.4315968
"""


def tf1_saver_state(directory: Path) -> str:
    """What TensorFlow 1's ``tf.train.Saver`` writes: absolute paths, no timestamps."""
    return (
        f'model_checkpoint_path: "{directory}/model.ckpt-200"\n'
        f'all_model_checkpoint_paths: "{directory}/model.ckpt-100"\n'
        f'all_model_checkpoint_paths: "{directory}/model.ckpt-200"\n'
    )


def test_a_state_file_written_by_tensorflow_parses(tmp_path: Path) -> None:
    (tmp_path / "checkpoint").write_text(TF_MANAGER_STATE)
    state = get_checkpoint_state(str(tmp_path))
    assert state == CheckpointState(
        f"{tmp_path}/ckpt-12",
        [f"{tmp_path}/ckpt-10", f"{tmp_path}/ckpt-11", f"{tmp_path}/ckpt-12"],
        [1601612913.4279857, 1601613356.2644634, 1601614241.2990458],
        1601609353.4315968,
    )
    # Without an index there is no checkpoint.
    assert latest_checkpoint(str(tmp_path)) is None
    (tmp_path / "ckpt-12.index").write_bytes(b"{}")
    assert latest_checkpoint(str(tmp_path)) == f"{tmp_path}/ckpt-12"

    # A manager takes the list over with its timestamps.
    manager = CheckpointManager(Checkpoint(), str(tmp_path), 5)
    assert manager.checkpoints == state.all_model_checkpoint_paths
    assert manager.latest_checkpoint == f"{tmp_path}/ckpt-12"


def test_a_tensorflow_1_state_file_with_absolute_paths(tmp_path: Path) -> None:
    (tmp_path / "checkpoint").write_text(tf1_saver_state(tmp_path))
    (tmp_path / "model.ckpt-200.index").write_bytes(b"{}")
    assert latest_checkpoint(str(tmp_path)) == f"{tmp_path}/model.ckpt-200"
    # No timestamps and no preservation time: TensorFlow manages none of them.
    assert CheckpointManager(Checkpoint(), str(tmp_path), 1).checkpoints == []


def test_latest_checkpoint_is_none_without_a_state_file(tmp_path: Path) -> None:
    assert latest_checkpoint(str(tmp_path / "missing")) is None
    assert get_checkpoint_state(str(tmp_path)) is None
    assert pipestate.latest_checkpoint(str(tmp_path)) is None


def test_latest_checkpoint_needs_the_index(tmp_path: Path) -> None:
    path = Checkpoint(step=3).save(str(tmp_path / "ckpt"))
    assert latest_checkpoint(str(tmp_path)) == path
    Path(path + ".index").unlink()
    assert latest_checkpoint(str(tmp_path)) is None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        pytest.param('model_checkpoint_path: ""\n', "Invalid checkpoint state", id="empty-path"),
        pytest.param('all_model_checkpoint_paths: "a"\n', "no model_checkpoint_path", id="none"),
        pytest.param('model_checkpoint_path: "a"\nbogus: 1\n', "unknown field", id="field"),
    ],
)
def test_a_damaged_state_file_raises(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "checkpoint").write_text(text)
    with pytest.raises(CorruptCheckpointError, match=match):
        latest_checkpoint(str(tmp_path))
    with pytest.raises(ValueError, match=match):  # TensorFlow raises ValueError here too
        get_checkpoint_state(str(tmp_path))


def test_update_checkpoint_state(tmp_path: Path) -> None:
    update_checkpoint_state(
        str(tmp_path),
        f"{tmp_path}/ckpt-3",
        [f"{tmp_path}/ckpt-2"],
        all_model_checkpoint_timestamps=[10.0, 20.5],
        last_preserved_timestamp=5,
    )
    # The newest checkpoint is appended to the list; paths inside the directory are relative.
    assert (tmp_path / "checkpoint").read_text() == (
        'model_checkpoint_path: "ckpt-3"\n'
        'all_model_checkpoint_paths: "ckpt-2"\n'
        'all_model_checkpoint_paths: "ckpt-3"\n'
        "all_model_checkpoint_timestamps: 10.0\n"
        "all_model_checkpoint_timestamps: 20.5\n"
        "last_preserved_timestamp: 5.0\n"
    )
    update_checkpoint_state(str(tmp_path), "/elsewhere/ckpt-9", latest_filename="checkpoint_input")
    state = get_checkpoint_state(str(tmp_path), "checkpoint_input")
    assert state == CheckpointState("/elsewhere/ckpt-9", ["/elsewhere/ckpt-9"], [], None)
    # Outside the directory a path stays absolute.
    text = (tmp_path / "checkpoint_input").read_text()
    assert text.startswith('model_checkpoint_path: "/elsewhere/ckpt-9"\n')


def test_update_checkpoint_state_with_relative_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    update_checkpoint_state("runs/x", "runs/x/ckpt-2", ["runs/x/ckpt-1", "runs/x/ckpt-2"])
    assert (tmp_path / "runs/x/checkpoint").read_text().splitlines() == [
        'model_checkpoint_path: "ckpt-2"',
        'all_model_checkpoint_paths: "ckpt-1"',
        'all_model_checkpoint_paths: "ckpt-2"',
    ]
    assert get_checkpoint_state("runs/x") == CheckpointState(
        "runs/x/ckpt-2", ["runs/x/ckpt-1", "runs/x/ckpt-2"]
    )


def test_update_checkpoint_state_on_a_url() -> None:
    update_checkpoint_state("memory://state-url/run", "memory://state-url/run/ckpt-4")
    state = get_checkpoint_state("memory://state-url/run")
    assert state is not None
    assert state.model_checkpoint_path == "memory://state-url/run/ckpt-4"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        pytest.param(
            {"all_model_checkpoint_timestamps": [1.0, 2.0]},
            ValueError,
            re.escape("Checkpoint timestamps, if provided, must match checkpoint paths"),
            id="unpaired",
        ),
        pytest.param(
            {"all_model_checkpoint_timestamps": [float("nan")]}, ValueError, "finite", id="nan"
        ),
        pytest.param({"all_model_checkpoint_paths": "ckpt-1"}, TypeError, "sequence", id="str"),
        pytest.param({"latest_filename": "../x"}, ValueError, "plain file name", id="filename"),
        pytest.param(
            {"model_checkpoint_path": None}, TypeError, "model_checkpoint_path", id="none"
        ),
        pytest.param({"fsync": 1}, TypeError, "fsync", id="fsync"),
        pytest.param(
            {"latest_filename": "ckpt-1"},
            RuntimeError,
            "conflicts with path used for checkpoint state",
            id="conflict",
        ),
    ],
)
def test_update_checkpoint_state_refuses_bad_arguments(
    tmp_path: Path, kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    arguments: dict[str, object] = {
        "save_dir": str(tmp_path),
        "model_checkpoint_path": f"{tmp_path}/ckpt-1",
    }
    with pytest.raises(error, match=match):
        update_checkpoint_state(**{**arguments, **kwargs})  # type: ignore[arg-type]
    assert not (tmp_path / "checkpoint").exists()


def test_public_api_exports() -> None:
    import pipestate.checkpoint as checkpoint

    for name in ("CheckpointManager", "latest_checkpoint"):
        assert name in pipestate.__all__
        assert getattr(pipestate, name) is getattr(checkpoint, name)
    for name in ("get_checkpoint_state", "update_checkpoint_state", "CheckpointState"):
        assert name in checkpoint.__all__
    assert pipestate.__all__ == sorted(pipestate.__all__)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        pytest.param(lambda: latest_checkpoint(None), TypeError, "checkpoint_dir", id="dir-none"),
        pytest.param(
            lambda: latest_checkpoint(""), ValueError, "must not be empty", id="dir-empty"
        ),
        pytest.param(
            lambda: get_checkpoint_state(".", latest_filename=""),
            ValueError,
            "plain file name",
            id="filename",
        ),
        pytest.param(
            lambda: latest_checkpoint(".", storage_options="anon"),
            TypeError,
            "storage_options must be a mapping",
            id="options",
        ),
    ],
)
def test_lookups_refuse_bad_arguments(call: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()  # type: ignore[operator]
