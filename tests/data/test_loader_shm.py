"""``Loader`` leaves no shared memory behind, whatever kills its workers, and no false warnings.

Workers are killed with ``SIGKILL`` at random moments from the consumer, and
(with the ``fork`` context, which carries the test's patches into the workers)
at two planned points: while creating a block (the block exists but has no
size yet) and after writing it, before sending its layout. After every death
no block under the iterator's prefix is left in ``/dev/shm``, and the
elements read across the restores are exactly the dataset's.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pipestate as ps
from pipestate.data import _shm

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="lists blocks in /dev/shm (Linux)"),
]

POINTS = ("creating", "created", "anywhere")
"""Where a worker dies: creating its block, after writing it, at a random moment."""


def slow(x: np.int64) -> np.int64:
    time.sleep(0.0005)
    return x


class KillPlan:
    """Makes the next worker that reaches a planned point kill itself (``fork`` workers only)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "kill-plan"
        self.parent = os.getpid()

    def arm(self, point: str) -> None:
        scratch = self.path.with_suffix(".tmp")
        scratch.write_text(point)
        scratch.replace(self.path)

    def disarm(self) -> None:
        self.path.unlink(missing_ok=True)

    def install(self, patch: Any) -> None:
        """Patches the block-writing steps of ``_shm`` with the kill points (``patch.setattr``)."""
        reserve, pack = _shm._reserve, _shm.pack

        def reserving(fd: int, size: int) -> None:
            self._reach("creating")  # the block exists, with no size yet
            reserve(fd, size)

        def packing(elements: list[Any], name: str, *args: Any) -> tuple[Any, bool]:
            result = pack(elements, name, *args)
            self._reach("created")  # the block is written; its layout not sent
            return result

        patch.setattr(_shm, "_reserve", reserving)
        patch.setattr(_shm, "pack", packing)

    def _reach(self, point: str) -> None:
        if os.getpid() == self.parent:
            return
        try:
            if self.path.read_text() != point:
                return
            self.path.unlink()  # only one worker claims the plan
        except FileNotFoundError:
            return
        os.kill(os.getpid(), signal.SIGKILL)


def kill_loop(
    kills: int, seed: int, *, plan: KillPlan | None = None, context: str = "fork"
) -> dict[str, Any]:
    """Reads a Loader while killing ``kills`` workers; returns counts of what happened.

    Without a plan (a context other than ``fork``) every kill comes from the
    consumer at a random moment. Checks after each death that no block of the
    iterator is left, and that the elements read are exactly the dataset's.
    """
    rng = random.Random(seed)
    ds = ps.Dataset.range(1 << 20).map(slow).batch(3)
    loader = ps.data.Loader(ds, num_workers=2, chunk_size=2, multiprocessing_context=context)
    it = iter(loader)
    prefix = it._blocks.prefix  # type: ignore[attr-defined]
    assert _shm.leftovers(prefix) == []
    counts: Counter[str] = Counter()
    out: list[np.ndarray] = []
    try:
        for kill in range(kills):
            point = POINTS[kill % len(POINTS)] if plan is not None else "anywhere"
            if point != "anywhere":
                assert plan is not None
                plan.arm(point)
            else:
                out.extend(next(it) for _ in range(rng.randrange(1, 4)))
                time.sleep(rng.uniform(0, 0.004))
                os.kill(rng.choice(it._procs).pid, signal.SIGKILL)  # type: ignore[attr-defined]
            with pytest.raises(ps.data.LoaderWorkerError, match="SIGKILL"):  # noqa: PT012
                for _ in range(5000):
                    out.append(next(it))
            counts[point] += 1
            left = _shm.leftovers(prefix)
            counts["blocks left after a death"] += len(left)
            assert left == [], f"after a kill {point}: {left}"
            if plan is not None:
                plan.disarm()
            if rng.random() < 0.3:  # also drop chunks in flight
                it.set_state(it.get_state())
                out.extend(next(it) for _ in range(2))
            it.set_state(it.get_state())
        out.extend(next(it) for _ in range(5))
    finally:
        it.close()
    counts["blocks left after close"] = len(_shm.leftovers(prefix))
    counts["elements"] = sum(len(batch) for batch in out)
    got = np.concatenate(out) if out else np.empty(0, np.int64)
    assert got.tolist() == list(range(len(got))), "elements lost or repeated"
    assert counts["blocks left after close"] == 0
    return {**counts, "prefix": prefix}


def test_killing_workers_while_they_create_and_fill_blocks_leaves_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = KillPlan(tmp_path)
    plan.install(monkeypatch)
    counts = kill_loop(12, seed=0, plan=plan)
    assert counts["creating"] == counts["created"] == counts["anywhere"] == 4


def test_killing_forkserver_workers_at_random_moments_leaves_no_blocks() -> None:
    counts = kill_loop(4, seed=1, context="forkserver")
    assert counts["anywhere"] == 4


EXIT_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    import numpy as np
    import pipestate as ps
    from pipestate.data import _shm

    def slow(x):
        time.sleep(0.001)
        return x

    if __name__ == "__main__":
        context, kill_self = sys.argv[1], sys.argv[2] == "kill-self"
        reserve, pack = _shm._reserve, _shm.pack
        parent = os.getpid()
        plan = {"point": None}

        def reach(point):  # a fork worker dies at the planned point
            if os.getpid() != parent and plan["point"] == point:
                os.kill(os.getpid(), signal.SIGKILL)

        def reserving(fd, size):
            reach("creating")
            reserve(fd, size)

        def packing(elements, name, *args, **kwargs):
            result = pack(elements, name, *args, **kwargs)
            reach("created")
            return result

        _shm._reserve, _shm.pack = reserving, packing
        ds = ps.Dataset.range(100000).map(slow).batch(2)
        it = iter(ps.data.Loader(ds, num_workers=2, chunk_size=1, multiprocessing_context=context))
        print(it._blocks.prefix, flush=True)
        points = ["creating", "created", None] if context == "fork" else [None]
        for point in points:
            plan["point"] = point  # carried into the workers started next
            try:
                if point is None:
                    next(it)
                    os.kill(it._procs[0].pid, signal.SIGKILL)
                for _ in range(1000):
                    next(it)
                raise AssertionError("the worker's death was not noticed")
            except ps.data.LoaderWorkerError:
                pass
            plan["point"] = None
            it.set_state(it.get_state())
        state = it.get_state()
        for _ in range(4):
            next(it)
        it.set_state(state)  # chunks in flight dropped
        next(it)
        print("reading", flush=True)
        if kill_self:
            time.sleep(60)
        # Exit with workers running and chunks unread: the iterator is not closed.
    """
)


def _run_exit_script(tmp_path: Path, context: str) -> tuple[str, str]:
    script = tmp_path / "loader_exit.py"
    script.write_text(EXIT_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), context, "exit"],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[0], done.stderr


@pytest.mark.parametrize("context", ["fork", "forkserver"])
def test_no_leaked_shared_memory_warning_at_exit(tmp_path: Path, context: str) -> None:
    prefix, stderr = _run_exit_script(tmp_path, context)
    assert "leaked" not in stderr
    assert "resource_tracker" not in stderr
    assert "Traceback" not in stderr
    assert _shm.leftovers(prefix) == []


def test_a_killed_consumer_s_blocks_are_removed_by_the_resource_tracker(tmp_path: Path) -> None:
    script = tmp_path / "loader_exit.py"
    script.write_text(EXIT_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), "forkserver", "kill-self"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        prefix = proc.stdout.readline().strip()
        assert proc.stdout.readline().strip() == "reading"
        time.sleep(0.2)  # workers fill blocks ahead of the consumer
        assert _shm.leftovers(prefix), "expected unread blocks before the kill"
        proc.kill()
    finally:
        proc.kill()
        proc.wait(30)
    deadline = time.monotonic() + 60
    while _shm.leftovers(prefix) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _shm.leftovers(prefix) == []
