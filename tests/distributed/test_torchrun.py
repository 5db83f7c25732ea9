"""Distributed checkpoints with real torch.distributed processes (gloo on loopback).

``_train.py`` is a data-parallel loop: each rank reads its shard of one global
stream and saves through ``CheckpointManager``. Jobs run under ``torchrun``, or
are launched rank by rank (``launch``) where a test kills one rank and needs
the others to live on. Every process has a timeout: nothing here can hang.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests._processes import free_port, records, wait_all

pytest.importorskip("torch.distributed")

from pipestate.checkpoint import latest_checkpoint
from pipestate.checkpoint._reader import CheckpointReader
from pipestate.checkpoint._storage import Storage

from ._train import global_stream

TRAIN = Path(__file__).with_name("_train.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
TIMEOUT = 120


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env.pop("PYTHONWARNINGS", None)
    return env


def torchrun(nproc: int, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """One job of ``nproc`` ranks under torchrun (standalone rendezvous on loopback)."""
    command = [
        *TORCHRUN,
        "--nproc-per-node",
        str(nproc),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        str(TRAIN),
        "--ckpt-dir",
        str(tmp / "ckpt"),
        "--record",
        str(tmp / "record"),
        *args,
    ]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT, env=_env(), check=False
    )


def launch(world_size: int, tmp: Path, *args: str) -> list[subprocess.CompletedProcess[str]]:
    """One job whose ranks this test starts itself (rank 0 hosts the store)."""
    port = free_port()
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                str(TRAIN),
                "--launch",
                "--rank",
                str(rank),
                "--world-size",
                str(world_size),
                "--port",
                str(port),
                "--ckpt-dir",
                str(tmp / "ckpt"),
                "--record",
                str(tmp / "record"),
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(),
        )
        for rank in range(world_size)
    ]
    return wait_all(processes, TIMEOUT)


def last_saves(found: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each rank's last committed save."""
    last: dict[int, dict[str, Any]] = {}
    for r in found:
        if r["event"] == "saved":
            last[r["rank"]] = r
    return last


def check(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr


def test_resume_on_other_world_sizes_reads_each_element_once(tmp_path: Path) -> None:
    """2 ranks, then 3, then 1: the job reads a prefix of the global stream, exactly once."""
    consumed: list[int] = []
    totals = []
    for world_size, steps in [(2, 10), (3, 5), (1, 7)]:
        check(torchrun(world_size, tmp_path, "--steps", str(steps), "--save-every", "5"))
        found = records(tmp_path)
        starts = [r for r in found if r["event"] == "start"]
        assert len(starts) == world_size
        # The replicated total restored on every rank is the one saved.
        assert len({(s["step"], s["total"]) for s in starts}) == 1
        saves = last_saves(found)
        assert sorted(saves) == list(range(world_size))
        for save in saves.values():
            consumed.extend(save["consumed"])
        totals.append(next(iter(saves.values()))["total"])
    stream = [int(x) for x in global_stream().take(len(consumed))]
    assert len(consumed) == 2 * 10 + 3 * 5 + 1 * 5
    assert sorted(consumed) == sorted(stream)
    assert totals[-1] == sum(consumed)
    assert latest_checkpoint(str(tmp_path / "ckpt")) == str(tmp_path / "ckpt" / "ckpt-4")


def test_per_rank_random_state_resumes_on_the_same_world_size(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    reference.mkdir()
    check(torchrun(2, reference, "--steps", "10", "--save-every", "5", "--rng"))
    expected = last_saves(records(reference))
    check(torchrun(2, tmp_path, "--steps", "5", "--save-every", "5", "--rng"))
    records(tmp_path)
    check(torchrun(2, tmp_path, "--steps", "5", "--save-every", "5", "--rng"))
    resumed = last_saves(records(tmp_path))
    for rank in (0, 1):
        assert resumed[rank]["draws"] == expected[rank]["draws"][5:]
        assert resumed[rank]["consumed"] == expected[rank]["consumed"][5:]
    assert expected[0]["draws"] != expected[1]["draws"]
    # On 3 ranks the per-rank random state has no rule: refused before any step.
    result = torchrun(3, tmp_path, "--steps", "5", "--rng")
    assert result.returncode != 0
    failures = [r for r in records(tmp_path) if r["event"] == "restore_failed"]
    assert len(failures) == 3
    assert all("saved per rank by 2 ranks and this job has 3" in f["error"] for f in failures)
    assert all(r["event"] != "saved" for r in records(tmp_path))


def test_async_saves_commit_one_checkpoint_per_step(tmp_path: Path) -> None:
    check(torchrun(2, tmp_path, "--steps", "10", "--save-every", "5", "--async-save"))
    saves = last_saves(records(tmp_path))
    assert {s["path"] for s in saves.values()} == {str(tmp_path / "ckpt" / "ckpt-2")}
    check(torchrun(3, tmp_path, "--steps", "5", "--save-every", "5"))
    consumed = [x for s in last_saves(records(tmp_path)).values() for x in s["consumed"]]
    stream = [int(x) for x in global_stream().take(35)]
    assert sorted(consumed) == sorted(stream[20:])


def test_sigkill_of_a_rank_during_a_save(tmp_path: Path) -> None:
    """Rank 2 dies while writing its shards of the 2nd save: the others fail naming it."""
    results = launch(
        3,
        tmp_path,
        *("--steps", "10", "--save-every", "5", "--timeout", "4"),
        *("--die-rank", "2", "--die-at-save", "2"),
    )
    assert results[2].returncode == -9
    assert [r.returncode for r in results[:2]] == [3, 3], [r.stdout for r in results]
    found = records(tmp_path)
    failed = [r for r in found if r["event"] == "save_failed"]
    assert sorted(r["rank"] for r in failed) == [0, 1]
    for r in failed:
        assert r["missing"] == [2], r
        assert "rank 2 did not arrive" in r["error"]
        assert "previous checkpoint stays the latest" in r["error"]
    directory = tmp_path / "ckpt"
    assert latest_checkpoint(str(directory)) == str(directory / "ckpt-1")
    assert not (directory / "ckpt-2.index").exists()
    # The next job resumes from the previous checkpoint, exactly.
    saves_before = {r["rank"]: r for r in found if r["event"] == "saved" and r["step"] == 5}
    check(torchrun(3, tmp_path, "--steps", "5", "--save-every", "5"))
    after = last_saves(records(tmp_path))
    consumed = [x for s in saves_before.values() for x in s["consumed"]]
    consumed += [x for s in after.values() for x in s["consumed"]]
    assert sorted(consumed) == sorted(int(x) for x in global_stream().take(30))
    # The save that followed replaced the killed save's leftovers (a half-written shard)
    # under the same number: every array of the new checkpoint reads back and checks out.
    assert latest_checkpoint(str(directory)) == str(directory / "ckpt-2")
    storage, prefix = Storage.for_path(str(directory / "ckpt-2"))
    with CheckpointReader(storage, prefix) as reader:
        assert reader.world_size == 3
        for key in reader.tensors:
            reader.read_tensor(key)


ESTIMATOR = Path(__file__).with_name("_estimator_train.py")


def test_estimator_and_input_hook_across_world_sizes(tmp_path: Path) -> None:
    """The Estimator route under torchrun: one model checkpoint per save, per-task input files."""
    from ._estimator_train import global_stream as estimator_stream

    consumed: list[int] = []
    for world_size, steps in [(2, 6), (3, 3), (1, 4)]:
        command = [
            *TORCHRUN,
            *("--nproc-per-node", str(world_size), "--master-addr", "127.0.0.1"),
            *("--master-port", str(free_port()), str(ESTIMATOR)),
            *("--model-dir", str(tmp_path / "model"), "--record", str(tmp_path / "record")),
            *("--steps", str(steps)),
        ]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=TIMEOUT, env=_env(), check=False
        )
        check(result)
        found = records(tmp_path)
        assert sorted(r["rank"] for r in found) == list(range(world_size))
        assert len({r["total"] for r in found}) == 1  # the replicated model agrees
        for r in found:
            assert len(r["seen"]) == steps
            consumed += r["seen"]
    stream = [int(x) for x in estimator_stream().take(len(consumed))]
    assert len(consumed) == 2 * 6 + 3 * 3 + 1 * 4
    assert sorted(consumed) == sorted(stream)
    model_dir = tmp_path / "model"
    latest = latest_checkpoint(str(model_dir))
    assert latest == str(model_dir / "model.ckpt-13")
    storage, prefix = Storage.for_path(str(model_dir / "model.ckpt-9"))
    with CheckpointReader(storage, prefix) as reader:
        assert reader.world_size == 3  # saved by the 3 ranks together
    assert (model_dir / "checkpoint_input_worker_2").exists()
