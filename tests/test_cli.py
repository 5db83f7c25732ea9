from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipestate.checkpoint import Checkpoint, Variable
from pipestate.checkpoint._storage import Storage
from pipestate.cli import main


def save(directory: Path, value: float) -> str:
    return Checkpoint(w=Variable(np.full(3, value, np.float32)), step=4).save(
        str(directory / "ckpt")
    )


def test_inspect_prints_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = save(tmp_path, 1.0)
    assert main(["inspect", path]) == 0
    out = capsys.readouterr().out
    assert "├── w (Variable)\n│   └── .VARIABLE_VALUE: float32[3]  12 B" in out
    assert "step (int)" in out


def test_ls_marks_latest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = Checkpoint(step=1)
    for _ in range(2):
        ckpt.save(str(tmp_path / "ckpt"))
    assert main(["ls", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "  ckpt-1  3 objects, 1 arrays, 8 B",
        "* ckpt-2  3 objects, 1 arrays, 8 B",
    ]
    assert main(["ls", str(tmp_path / "empty")]) == 0
    assert "no checkpoints in" in capsys.readouterr().out


def test_verify_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = save(tmp_path, 1.0)
    assert main(["verify", path]) == 0
    assert "OK, 2 value(s) verified" in capsys.readouterr().out
    data_file = Path(path + ".data-00000-of-00001")
    data = bytearray(data_file.read_bytes())
    data[-1] ^= 0xFF
    data_file.write_bytes(bytes(data))
    assert main(["verify", path]) == 1
    out = capsys.readouterr().out
    assert "CORRUPT: value 'w/.ATTRIBUTES/VARIABLE_VALUE'" in out
    assert "1 problem(s), 1 value(s) intact" in out


def test_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = save(tmp_path / "a", 1.0), save(tmp_path / "b", 2.0)
    assert main(["diff", a, a]) == 0
    assert capsys.readouterr().out == "checkpoints are identical\n"
    assert main(["diff", a, b]) == 1
    assert capsys.readouterr().out.startswith("~ w/.ATTRIBUTES/VARIABLE_VALUE: float32[3] crc32c=")


def test_missing_checkpoint_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save(tmp_path, 1.0)
    assert main(["inspect", str(tmp_path / "ckpt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pipestate inspect: error: no checkpoint at")
    assert f"did you mean {tmp_path / 'ckpt'}-1?" in err


def test_corrupt_index_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = save(tmp_path, 1.0)
    Path(path + ".index").write_text("{")
    assert main(["verify", path]) == 2
    assert "is not valid JSON" in capsys.readouterr().err


def test_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_runs_as_module(tmp_path: Path) -> None:
    path = save(tmp_path, 1.0)
    done = subprocess.run(
        [sys.executable, "-m", "pipestate.cli", "inspect", path],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "(root) (Checkpoint)" in done.stdout


def test_storage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save(tmp_path, 1.0)

    def denied(*args: object, **kwargs: object) -> bytes:
        raise PermissionError(13, "Permission denied", path + ".index")

    monkeypatch.setattr(Storage, "read_bytes", denied)
    monkeypatch.setattr(Storage, "open_random_access", denied)
    assert main(["inspect", path]) == 2
    assert capsys.readouterr().err.startswith("pipestate inspect: error: [Errno 13] Permission")
