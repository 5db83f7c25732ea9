"""Progress displays: a plain line without tqdm, a tqdm bar with it, nothing when off; and
the checkpoint writer and reader reporting the bytes they move."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

import pipestate as ps
from pipestate._progress import Progress, format_bytes
from pipestate.checkpoint import CheckpointOptions


def test_the_plain_line_counts_and_ends_with_the_totals() -> None:
    stream = io.StringIO()
    with Progress(10, "checking", stream=stream, use_tqdm=False, interval=0.0) as bar:
        bar.update(4)
        bar.update(6)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("checking: 4/10 (40%), ")
    assert lines[-1].startswith("checking: 10/10 (100%), ")
    assert lines[-1].endswith(" it/s")
    assert bar.count == 10


def test_the_plain_line_shows_bytes_and_speed() -> None:
    stream = io.StringIO()
    bar = Progress(4096, "saving", unit="B", stream=stream, use_tqdm=False)
    bar.update(1024)  # within the interval: no line yet
    assert stream.getvalue() == ""
    bar.close()
    bar.close()  # a second close writes nothing more
    (line,) = stream.getvalue().splitlines()
    assert line.startswith("saving: 1.0 KiB/4.0 KiB (25%), ")
    assert line.endswith("/s")


def test_tqdm_is_used_when_installed() -> None:
    pytest.importorskip("tqdm")
    stream = io.StringIO()
    with Progress(3, "reading", stream=stream) as bar:
        bar.update(3)
    assert "reading: 100%" in stream.getvalue()
    assert "3/3" in stream.getvalue()
    assert "display=tqdm" in repr(bar)


def test_a_disabled_display_writes_nothing_but_counts() -> None:
    stream = io.StringIO()
    with Progress(None, "quiet", enabled=False, stream=stream) as bar:
        bar.update(5)
        bar.set_total(5)
        bar.note("ignored")
    assert stream.getvalue() == ""
    assert (bar.count, bar.total, bar.enabled) == (5, 5, False)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"total": -1}, ValueError, "Progress: total must be >= 0, got total=-1"),
        ({"total": "ten"}, TypeError, "Progress: total must be a number or None, got 'ten'"),
        ({"total": 1, "enabled": "yes"}, TypeError, "Progress: enabled must be a bool, got 'yes'"),
    ],
    ids=["negative", "text", "flag"],
)
def test_bad_arguments_are_refused(kwargs: dict, error: type, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(error, match=message):
        Progress(description="x", **kwargs)


def test_format_bytes() -> None:
    assert [format_bytes(n) for n in (512, 1536, 3 << 20, 5 << 30)] == [
        "512 B",
        "1.5 KiB",
        "3.0 MiB",
        "5.0 GiB",
    ]


def test_checkpoints_report_bytes_written_and_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = ps.Checkpoint(w=ps.Variable(np.zeros(1 << 16, np.float32)))
    path = ckpt.write(str(tmp_path / "big"), options=CheckpointOptions(progress=True))
    assert f"saving {path}" in capsys.readouterr().err
    ckpt.write(str(tmp_path / "quiet"))
    assert capsys.readouterr().err == ""
    ckpt.read(path, progress=True).assert_consumed()
    err = capsys.readouterr().err
    assert f"reading {path}" in err
    assert "256k" in err or "256.0k" in err or "256 KiB" in err  # 65536 float32 read
    saved = ckpt.save(str(tmp_path / "ckpt"), options=CheckpointOptions(progress=True))
    ckpt.restore(saved, progress=True)
    err = capsys.readouterr().err
    assert f"saving {saved}" in err
    assert f"reading {saved}" in err


def test_checkpoint_progress_flags_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="progress must be a bool, got 1"):
        CheckpointOptions(progress=1)  # type: ignore[arg-type]
    path = ps.Checkpoint(step=1).write(str(tmp_path / "c"))
    with pytest.raises(TypeError, match=r"Checkpoint\.read: progress must be a bool, got 'on'"):
        ps.Checkpoint(step=1).read(path, progress="on")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Checkpoint\.restore: progress must be a bool"):
        ps.Checkpoint(step=1).restore(None, progress="on")  # type: ignore[arg-type]
