"""Crash safety with real processes: SIGKILL at random moments, a crash before every file
operation of a save, and a full disk.

A writer process (``_crash_writer.py``) forks one child per trial; the child
saves with a ``CheckpointManager`` in a loop and is killed with SIGKILL. After
every kill the latest checkpoint must restore with valid checksums, and hold
the last step whose ``save()`` returned, or the step whose save was under way
if that save had committed before the kill. ``tests/stress/kill9_stress.py``
runs many more trials.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._crash import Writer, check_clean, kill_trial, restored_step, summarize
from .conftest import BUCKET, S3Server

KILL_TRIALS = 60
S3_KILL_TRIALS = 8
STATE = {"values": 200_000, "shard_bytes": 500_000, "max_to_keep": 3}

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not hasattr(os, "fork"), reason="the writer forks one child per trial"),
]


@pytest.fixture(scope="module")
def writer() -> Iterator[Writer]:
    w = Writer()
    yield w
    w.close()


@pytest.fixture(scope="module")
def s3_writer(s3_server: S3Server) -> Iterator[Writer]:
    w = Writer(preload=("s3fs",))  # started with the server's dummy credentials in its environment
    yield w
    w.close()


def clean_save(writer: Writer, directory: Path, **state: int) -> list[str]:
    """One save that runs to the end; returns the child's output."""
    pid = writer.send(mode="crash", k=10**9, dir=str(directory), **{**STATE, **state})
    lines, status = writer.until_exit(pid)
    assert status == 0, lines
    assert lines[-1].startswith("saved "), lines
    return lines


def test_sigkill_at_random_moments_keeps_the_last_returned_save(
    writer: Writer, tmp_path: Path
) -> None:
    rng = random.Random(1234)
    directory = tmp_path / "run"
    outcomes = [kill_trial(writer, str(directory), rng, **STATE) for _ in range(KILL_TRIALS)]

    summary = summarize(outcomes)
    print(f"{KILL_TRIALS} SIGKILL trials: {dict(summary)}")
    # The kills hit saves in progress, and training moved on across the restarts.
    assert sum(o.in_flight is not None for o in outcomes) >= KILL_TRIALS // 2
    steps = [o.restored for o in outcomes if o.restored is not None]
    assert steps == sorted(steps)
    assert steps[-1] >= KILL_TRIALS // 2
    # The next save of a manager removes every leftover of the interrupted ones.
    clean_save(writer, directory)
    check_clean(directory)
    assert restored_step(str(directory), STATE["values"]) == steps[-1] + 1


def test_a_crash_before_each_file_operation_of_a_save(writer: Writer, tmp_path: Path) -> None:
    template = tmp_path / "template"
    for _ in range(3):  # so that the save under test also deletes the oldest checkpoint
        clean_save(writer, template)
    k = 1
    while True:
        directory = tmp_path / f"crash-{k}"
        shutil.copytree(template, directory)
        pid = writer.send(mode="crash", k=k, dir=str(directory), **STATE)
        lines, status = writer.until_exit(pid)
        ops = [line.split(maxsplit=2)[2] for line in lines if line.startswith("op ")]
        if status == 0:  # k is past the save's last file operation
            assert lines[-1].startswith("saved 4 ")
            break
        assert status == 86, lines
        assert len(ops) == k
        # Renaming the new state file into place is the commit: step 3 before it, 4 after.
        committed = "replace checkpoint" in ops[:-1]
        assert restored_step(str(directory), STATE["values"]) == 3 + committed, (k, ops[-1])
        # The next save removes what the interrupted one left.
        assert clean_save(writer, directory)[-1].startswith(f"saved {4 + committed} ")
        check_clean(directory)
        k += 1
    # Every step of the protocol was crashed before: shards, index, state file, deletions.
    for op in (
        "fsync ckpt-4.data-00000-of-00003",
        "fsync .ckpt-4.index.tmp-",
        "replace ckpt-4.index",
        "replace checkpoint",
        "unlink ckpt-1.index",
        "unlink ckpt-1.data-00002-of-00003",
    ):
        assert any(o.startswith(op) for o in ops), (op, ops)
    assert ops.index("replace checkpoint") > ops.index("replace ckpt-4.index")
    assert ops.index("unlink ckpt-1.index") > ops.index("replace checkpoint")
    assert k > 15
    print(f"crashed before each of the {k - 1} file operations of a save")


def test_a_full_disk_raises_a_typed_error_and_keeps_the_previous_checkpoint(
    writer: Writer, tmp_path: Path
) -> None:
    directory = tmp_path / "run"
    clean_save(writer, directory)
    state_file = (directory / "checkpoint").read_bytes()
    files = sorted(os.listdir(directory))

    # RLIMIT_FSIZE makes writing a file beyond 1 MiB fail with EFBIG, as a full disk would.
    pid = writer.send(mode="fill", limit=1 << 20, dir=str(directory), **STATE)
    lines, status = writer.until_exit(pid)
    assert status == 0, lines
    assert lines[-1].startswith("error "), lines
    error = json.loads(lines[-1].removeprefix("error "))
    assert error["type"] == "CheckpointWriteError"
    assert error["oserror"]
    assert error["errno"] == errno.EFBIG
    assert "could not write checkpoint" in error["message"]
    assert "ckpt-2" in error["message"]
    assert "earlier checkpoints and the state file are intact" in error["message"]
    assert "Free some space" in error["message"]

    assert (directory / "checkpoint").read_bytes() == state_file
    assert sorted(os.listdir(directory)) == files  # the failed save's shards are gone
    assert restored_step(str(directory), STATE["values"]) == 1


@pytest.mark.slow
def test_sigkill_while_saving_to_s3(s3_writer: Writer, s3_server: S3Server) -> None:
    rng = random.Random(99)
    directory = f"s3://{BUCKET}/kill9"
    options = s3_server.storage_options
    outcomes = [
        kill_trial(
            s3_writer,
            directory,
            rng,
            **{**STATE, "values": 20_000, "shard_bytes": 50_000},
            max_delay=1.0,
            storage_options=options,
        )
        for _ in range(S3_KILL_TRIALS)
    ]
    print(f"{S3_KILL_TRIALS} SIGKILL trials on S3: {dict(summarize(outcomes))}")
    assert any(o.in_flight is not None for o in outcomes)  # kills hit saves under way
    steps = [o.restored for o in outcomes if o.restored is not None]
    assert steps == sorted(steps)
    assert steps[-1] >= 2


@pytest.fixture(scope="module")
def second_writer() -> Iterator[Writer]:
    w = Writer()
    yield w
    w.close()


@pytest.mark.parametrize(
    "kind", ["resave", "async", "two-writers"], ids=["same-number", "async", "two-writers"]
)
def test_sigkill_keeps_the_latest_checkpoint_loadable(
    writer: Writer, second_writer: Writer, tmp_path: Path, kind: str
) -> None:
    """Saving a number again, async saves, a second writer refused: every kill leaves the latest."""
    rng = random.Random(99)
    directory = str(tmp_path / "run")
    trials = 12
    outcomes = [
        kill_trial(
            writer,
            directory,
            rng,
            resave=kind == "resave",
            background=kind == "async",
            second=second_writer if kind == "two-writers" else None,
            **STATE,
        )
        for _ in range(trials)
    ]
    print(f"{trials} SIGKILL trials ({kind}): {dict(summarize(outcomes))}")
    assert all(o.restored is not None for o in outcomes)
    assert sum(o.in_flight is not None for o in outcomes) >= trials // 3
