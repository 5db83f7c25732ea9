"""A hostile state file cannot make the manager delete or restore files outside its directory."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

import pipestate as ps
from pipestate.checkpoint import CheckpointManager
from pipestate.errors import CorruptCheckpointError


def _victim(directory: Path) -> list[Path]:
    """A checkpoint ``victim-1`` (index and shard) outside the managed directory."""
    directory.mkdir(parents=True, exist_ok=True)
    ps.Checkpoint(w=ps.Variable(np.full(3, 7.0))).write(str(directory / "victim-1"))
    files = sorted(directory.iterdir())
    assert len(files) == 2
    return files


def _state(run: Path, latest: str, paths: list[str]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    lines = [f'model_checkpoint_path: "{latest}"']
    lines += [f'all_model_checkpoint_paths: "{p}"' for p in paths]
    lines += [f"all_model_checkpoint_timestamps: {time.time() - 60}" for _ in paths]
    (run / "checkpoint").write_text("\n".join(lines) + "\n")


def _snapshot(files: list[Path]) -> dict[Path, bytes]:
    return {f: f.read_bytes() for f in files}


@pytest.mark.parametrize(
    "spelling", ["absolute", "dot-dot", "dot-dot-inside"], ids=["absolute", "dot-dot", "nested"]
)
def test_paths_outside_the_directory_are_refused(tmp_path: Path, spelling: str) -> None:
    run, outside = tmp_path / "run", tmp_path / "outside"
    files = _victim(outside)
    before = _snapshot(files)
    victim = {
        "absolute": str(outside / "victim-1"),
        "dot-dot": "../outside/victim-1",
        "nested": "ckpt-1/../../outside/victim-1",
        "dot-dot-inside": "sub/../../outside/victim-1",
    }[spelling]
    # Listed for deletion: a manager keeping one checkpoint would delete it at the next save.
    _state(run, "ckpt-9", [victim, "ckpt-9"])
    ckpt = ps.Checkpoint(w=ps.Variable(np.zeros(3)))
    with pytest.raises(CorruptCheckpointError, match="outside the directory") as info:
        CheckpointManager(ckpt, str(run), max_to_keep=1)
    assert "allow_paths_outside_directory=True" in str(info.value)
    # Named as the latest: it would be restored.
    _state(run, victim, [victim])
    with pytest.raises(CorruptCheckpointError, match=victim.replace(".", r"\.")):
        CheckpointManager(ckpt, str(run), max_to_keep=1)
    assert _snapshot(files) == before
    assert ckpt.w.numpy().tolist() == [0.0, 0.0, 0.0]


def test_a_symlinked_subdirectory_leading_outside_is_refused(tmp_path: Path) -> None:
    run, outside = tmp_path / "run", tmp_path / "outside"
    files = _victim(outside)
    run.mkdir()
    os.symlink(outside, run / "link")
    _state(run, "ckpt-9", ["link/victim-1", "ckpt-9"])
    with pytest.raises(CorruptCheckpointError, match="outside the directory"):
        CheckpointManager(ps.Checkpoint(w=ps.Variable(np.zeros(3))), str(run), max_to_keep=1)
    assert all(f.exists() for f in files)


def test_opting_in_restores_and_deletes_outside_paths(tmp_path: Path) -> None:
    run, outside = tmp_path / "run", tmp_path / "outside"
    files = _victim(outside)
    _state(run, "../outside/victim-1", ["../outside/victim-1"])
    ckpt = ps.Checkpoint(w=ps.Variable(np.zeros(3)))
    manager = CheckpointManager(ckpt, str(run), max_to_keep=1, allow_paths_outside_directory=True)
    assert manager.restore_or_initialize() is not None
    assert ckpt.w.numpy().tolist() == [7.0, 7.0, 7.0]
    manager.save()  # the outside checkpoint leaves the kept set: deleted, as asked
    assert not any(f.exists() for f in files)


def test_paths_inside_the_directory_still_work(tmp_path: Path) -> None:
    run = tmp_path / "run"
    ckpt = ps.Checkpoint(w=ps.Variable(np.zeros(3)))
    manager = CheckpointManager(ckpt, str(run), max_to_keep=1)
    first = manager.save()
    # The same checkpoint spelled absolute, and through a redundant "./".
    _state(run, str(run / "ckpt-1"), ["./ckpt-1"])
    again = CheckpointManager(ckpt, str(run), max_to_keep=1)
    assert again.restore_or_initialize() == str(run / "ckpt-1") == first


def test_urls_outside_the_directory_are_refused() -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe_file(
        "/hostile-run/checkpoint",
        b'model_checkpoint_path: "ckpt-2"\nall_model_checkpoint_paths: "../other/victim-1"\n'
        b'all_model_checkpoint_paths: "ckpt-2"\n',
    )
    with pytest.raises(CorruptCheckpointError, match="outside the directory"):
        CheckpointManager(ps.Checkpoint(), "memory://hostile-run", max_to_keep=1)
    fs.pipe_file(
        "/hostile-run/checkpoint",
        b'model_checkpoint_path: "s3://elsewhere/victim-1"\n',
    )
    with pytest.raises(CorruptCheckpointError, match="outside the directory"):
        CheckpointManager(ps.Checkpoint(), "memory://hostile-run", max_to_keep=1)
