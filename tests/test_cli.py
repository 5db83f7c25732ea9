from __future__ import annotations

import json
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


def save_pipeline(directory: Path) -> str:
    import pipestate as ps

    it = iter(ps.Dataset.range(10).shuffle(4, seed=7).batch(2).repeat(2))
    next(it)
    sharded = iter(ps.Dataset.range(40).shard(2, 1).batch(4))
    next(sharded)
    return Checkpoint(data=it, shard=sharded, step=Variable(np.int64(3))).write(
        str(directory / "ckpt")
    )


def test_inspect_describes_input_pipeline_states(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = save_pipeline(tmp_path)
    assert main(["inspect", path]) == 0
    out = capsys.readouterr().out
    assert "data (_RepeatIterator): input-pipeline state version 1, fingerprint " in out
    assert "  ops, sources first: range -> shuffle -> batch -> repeat\n" in out
    assert "    repeat: pass=0, yielded=True\n        pass: epoch: the pass of repeat\n" in out
    assert "      batch: (no position of its own)\n" in out
    assert "        shuffle: produced=2, filled=True, buffer=int64[4] (32 B)\n" in out
    assert "          range (random access, one index): index=6\n" in out
    assert "  ops, sources first: range -> shard -> batch\n  sharded: a shard op" in out
    assert "    range -> shard -> batch (random access, one index): index=1, global=8\n" in out


def test_inspect_state_prints_one_state_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = save_pipeline(tmp_path)
    assert main(["inspect", path, "--state", "shard"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert state["iterator"] == {"index": 1, "seed": None, "global": 8}
    assert [op.split(":")[0] for op in state["ops"]] == ["range", "shard", "batch"]
    assert main(["inspect", path, "--state", "step"]) == 2
    err = capsys.readouterr().err
    assert "has no input-pipeline state named 'step'; iterator states in it: data, shard" in err


def test_verify_shows_progress_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = save(tmp_path, 1.0)
    assert main(["verify", path, "--progress"]) == 0
    assert f"verifying {path}" in capsys.readouterr().err
    assert main(["verify", path, "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


def test_verify_pipeline_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    good = "tests.testing._pipelines:good_repeat"
    assert main(["verify-pipeline", good, "--in-process", "--no-progress"]) == 0
    assert "OK: every resumed run equals the reference" in capsys.readouterr().out
    broken = "tests.testing._pipelines:broken_counter"
    assert main(["verify-pipeline", broken, "--in-process", "--no-progress"]) == 1
    assert "DIVERGES at break point 1" in capsys.readouterr().out
    assert main(["verify-pipeline", "tests.testing._pipelines:nope"]) == 2
    assert "has no attribute 'nope'" in capsys.readouterr().err
    assert main(["verify-pipeline", good, "--num-workers", "two"]) == 2
    assert "--num-workers takes comma-separated integers" in capsys.readouterr().err
    assert main(["verify-pipeline", good, "--prefetch-factor", "4"]) == 2
    assert "give --num-workers too" in capsys.readouterr().err


def test_verify_pipeline_in_fresh_processes_from_the_command_line() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipestate.cli",
            "verify-pipeline",
            "tests.testing._pipelines:broken_global_rng",
            "-n",
            "20",
            "--break-points",
            "1",
            "--progress",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "restored in 2 fresh processes" in done.stdout
    assert "EXTERNAL STATE: the elements change with the global random seed" in done.stdout
    assert "verifying tests.testing._pipelines:broken_global_rng" in done.stderr


def test_profile_names_the_bottleneck(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "tests.testing._pipelines:slow_map", "-n", "5"]) == 0
    out = capsys.readouterr().out
    assert "bottleneck: map(map_func='_sleepy')" in out
    assert "num_parallel_calls=ps.data.AUTOTUNE" in out
    assert main(["profile", "tests.testing._pipelines:slow_map", "-n", "5", "--exact"]) == 0
    exact = capsys.readouterr().out
    assert "bottleneck: map(map_func='_sleepy')" in exact
    assert "~ estimated" not in exact
    pytest.importorskip("matplotlib")
    plot = tmp_path / "graph.png"
    args = ["profile", "tests.testing._pipelines:slow_map", "-n", "5", "--plot", str(plot)]
    assert main(args) == 0
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert f"op graph written to {plot}" in capsys.readouterr().out


class _OddState:
    """Saves something shaped like an iterator state that no iterator wrote."""

    def state_dict(self) -> dict[str, object]:
        return {"version": 7, "fingerprint": "f", "ops": "not a list", "iterator": [1, 2]}

    def load_state_dict(self, state: dict[str, object]) -> None:
        raise AssertionError("not restored here")


def test_inspect_renders_an_odd_pipeline_state_as_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = Checkpoint(odd=_OddState()).write(str(tmp_path / "odd"))
    assert main(["inspect", path]) == 0
    out = capsys.readouterr().out
    assert "odd (_OddState): input-pipeline state version 7, fingerprint f\n" in out
    assert "  ops, sources first: (none)\n  position, outermost op first:\n    [1, 2]" in out


def test_a_target_that_raises_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_pipelines.py").write_text(
        "def raises():\n    raise RuntimeError('no data here')\n"
    )
    monkeypatch.chdir(tmp_path)
    for command in (
        ["verify-pipeline", "broken_pipelines.py:raises", "--in-process"],
        ["profile", "broken_pipelines.py:raises"],
    ):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "the pipeline of broken_pipelines.py:raises raised RuntimeError: no data here" in err
