"""Checks shared by the random-access sources' tests: elastic re-sharding and SIGKILL resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

import pipestate as ps

from ._source_reader import batch_ids, pipeline

READER = Path(__file__).with_name("_source_reader.py")
ROOT = Path(__file__).resolve().parents[3]


def assert_elastic(source: ps.Dataset, ids: Callable[[object], list[int]] = batch_ids) -> None:
    """Two ranks read, then three ranks resume from rank 0's state: every id exactly once."""
    n = len(source)

    def rank(world: int, index: int) -> ps.Dataset:
        return source.global_shuffle(seed=5).shard(world, index).batch(2)

    first = [iter(rank(2, r)) for r in range(2)]
    consumed: list[int] = []
    for _ in range(3):
        for it in first:
            consumed.extend(ids(next(it)))
    state = json.loads(json.dumps(first[0].get_state()))
    for r in range(3):
        it = iter(rank(3, r))
        it.set_state(state)
        consumed.extend(i for batch in it for i in ids(batch))
    assert sorted(consumed) == list(range(n)), "ids lost or repeated across the re-shard"


def assert_resumes_after_sigkill(kind: str, path: str, state_file: Path) -> None:
    """A reader killed with SIGKILL after a checkpoint resumes, in a new process, exactly there.

    The reader (``_source_reader.py``) reads ``global_shuffle().batch(4)``
    and saves its state every third batch; it is killed after its second
    save. A new process resumes from the last state saved, and what it reads
    must equal the uninterrupted run from that batch on.
    """
    reference = [batch_ids(batch) for batch in pipeline(kind, path)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    command = [sys.executable, str(READER), kind, path, str(state_file)]
    killed = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert killed.stdout is not None
    saves = 0
    for line in killed.stdout:
        if "saved" in json.loads(line):
            saves += 1
            if saves == 2:
                killed.send_signal(signal.SIGKILL)
                break
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL, "the reader ended before it was killed"
    saved = json.loads(state_file.read_text())["count"]
    assert saved >= 6
    resumed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    lines = [json.loads(line) for line in resumed.stdout.splitlines()]
    assert lines[0] == {"start": saved}
    batches = [line["ids"] for line in lines if "ids" in line]
    assert batches == reference[saved:], "the resumed run differs from the uninterrupted one"
    assert lines[-1] == {"end": len(reference)}


def ids_column(n: int) -> np.ndarray:
    """The ``id`` column of the sources' test data: ``0 ... n - 1``."""
    return np.arange(n, dtype=np.int64)
