"""Driving ``_crash_writer.py``: SIGKILL trials and their verification.

Used by ``tests/checkpoint/test_crash.py`` (a fixed, seeded number of trials)
and by ``tests/stress/kill9_stress.py`` (as many as asked for).
"""

from __future__ import annotations

import json
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipestate.checkpoint import get_checkpoint_state, latest_checkpoint

from ._crash_writer import make_checkpoint

WRITER = Path(__file__).with_name("_crash_writer.py")
LEFTOVER = re.compile(r"^\..*\.tmp-[0-9a-f]{32}$")


class Writer:
    """The writer process: send a command, read its lines with a timeout."""

    def __init__(self, env: dict[str, str] | None = None, preload: tuple[str, ...] = ()) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(WRITER), *(("--preload", *preload) if preload else ())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env=env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def send(self, **command: Any) -> int:
        """Start a child for ``command``; return its pid."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.next_line(timeout=30)
        assert line.startswith("child "), line
        return int(line.split()[1])

    def next_line(self, timeout: float) -> str:
        """The next line, failing after ``timeout`` seconds."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the writer printed nothing for {timeout} s") from None
        if line is None:
            raise AssertionError(f"the writer ended (exit status {self.process.wait()})")
        return line

    def until_ready(self, pid: int, timeout: float = 30) -> list[str]:
        """The child's lines up to ``ready`` (it has restored and starts saving)."""
        lines = []
        deadline = time.monotonic() + timeout
        while not (lines and lines[-1].startswith("ready ")):
            line = self.next_line(max(0.1, deadline - time.monotonic()))
            assert not line.startswith(f"exit {pid} "), f"the child ended early: {lines}"
            lines.append(line)
        return lines

    def until_exit(self, pid: int, timeout: float = 30) -> tuple[list[str], int]:
        """The child's lines up to its exit, and its exit status."""
        lines = []
        deadline = time.monotonic() + timeout
        while True:
            line = self.next_line(max(0.1, deadline - time.monotonic()))
            if line.startswith(f"exit {pid} "):
                return lines, int(line.split()[2])
            lines.append(line)

    def close(self) -> None:
        """End the writer (and a child still running)."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class Outcome:
    """What one trial saw."""

    restored: int | None
    last_returned: int | None
    in_flight: int | None
    lines: list[str] = field(default_factory=list)


def progress(lines: list[str]) -> tuple[int | None, int | None]:
    """The last step whose save returned, and a step whose save began but did not return."""
    returned: int | None = None
    begun: int | None = None
    saving = False  # the last line says a save began: it is in flight, whatever its step
    for line in lines:
        if line.startswith("failed "):
            raise AssertionError(f"the writer child failed: {line}")
        if line.startswith("locked "):
            raise AssertionError(f"the writer child found the directory locked: {line}")
        if line.startswith("saving "):
            begun = int(line.split()[1])
            saving = True
        elif line.startswith("saved "):
            returned = int(line.split()[1])
            saving = False
    # Saving one number twice, the second save of step n is in flight after "saved n".
    return returned, (begun if begun != returned or saving else None)


def restored_step(
    directory: str,
    values: int,
    storage_options: Any = None,
    *,
    numbered_by_counter: bool | None = True,
) -> int | None:
    """Restore the latest checkpoint into fresh objects and check that it is consistent.

    Every array is read (checksums verified) and must match the step saved with it.
    """
    path = latest_checkpoint(directory, storage_options=storage_options)
    if path is None:
        assert get_checkpoint_state(directory, storage_options=storage_options) is None, (
            "the state file exists, but its latest checkpoint has no index"
        )
        return None
    ckpt = make_checkpoint(values)
    ckpt.restore(path, storage_options=storage_options).assert_consumed()
    step = int(ckpt.step.numpy())
    expected = np.arange(values, dtype=np.float32) + step
    np.testing.assert_array_equal(ckpt.weights.numpy(), expected)
    np.testing.assert_array_equal(ckpt.bias.numpy(), np.full(ckpt.bias.shape, step * 0.5))
    assert ckpt.note == f"step {step}"
    # A number saved again is written aside first; a kill before the move leaves that name.
    if numbered_by_counter is not None:
        number = int(ckpt.save_counter.numpy()) if numbered_by_counter else step
        assert re.fullmatch(rf"ckpt-{number}(\.replace-[0-9a-f]{{8}})?", Path(path).name), path
    return step


def kill_trial(
    writer: Writer,
    directory: str,
    rng: random.Random,
    *,
    values: int,
    shard_bytes: int,
    max_to_keep: int = 3,
    max_delay: float = 0.25,
    storage_options: Any = None,
    resave: bool = False,
    background: bool = False,
    second: Writer | None = None,
) -> Outcome:
    """Start a saving child, SIGKILL it after a random delay, verify what it left.

    ``resave`` saves every step twice under one number, ``background`` saves
    asynchronously, and with a ``second`` writer process another child tries
    to save into the same directory meanwhile and must be refused.
    """
    numbered_by_counter = not resave
    before = restored_step(directory, values, storage_options, numbered_by_counter=False)
    command = {
        "dir": directory,
        "values": values,
        "shard_bytes": shard_bytes,
        "max_to_keep": max_to_keep,
        "storage_options": storage_options,
        "resave": resave,
        "async": background,
    }
    pid = writer.send(mode="run", **command)
    lines = writer.until_ready(pid)
    assert lines == [f"ready {pid} {before or 0}"], lines
    # The delay starts once a save has returned, however slow the machine: every
    # trial moves training on, and every kill lands in the loop of saves (and,
    # with a second writer, while the child holds the lock).
    while not lines[-1].startswith("saved "):
        lines.append(writer.next_line(timeout=60))
    time.sleep(rng.uniform(0.0, max_delay))
    if second is not None:
        other = second.send(mode="second", **command)
        refusal, status = second.until_exit(other, timeout=60)
        assert status == 0, refusal
        assert len(refusal) == 1, refusal
        assert refusal[0].startswith("locked "), refusal
        assert f"process {pid} " in refusal[0], (pid, refusal)
        time.sleep(rng.uniform(0.0, max_delay / 4))
    os.kill(pid, signal.SIGKILL)
    rest, status = writer.until_exit(pid)
    lines += rest
    assert status == -signal.SIGKILL, (status, lines)
    returned, in_flight = progress(lines)
    last = returned if returned is not None else before
    restored = restored_step(directory, values, storage_options, numbered_by_counter=False)
    allowed = {last} | ({in_flight} if in_flight is not None else set())
    if background and in_flight is not None:
        allowed.add(in_flight - 1)  # committed in the background, not yet reported
    assert restored in allowed, (
        f"restored step {restored}, but the last save that returned was {last} "
        f"(in flight: {in_flight}); output: {lines[-4:]}"
    )
    if restored is not None and numbered_by_counter and not background:
        restored_step(directory, values, storage_options)  # named after save_counter
    return Outcome(restored, last, in_flight, lines)


def check_clean(directory: Path) -> None:
    """The directory holds the state file and the listed checkpoints' files, nothing else."""
    state = get_checkpoint_state(str(directory))
    assert state is not None
    names = {Path(p).name for p in state.all_model_checkpoint_paths}
    for entry in os.listdir(directory):
        assert not LEFTOVER.match(entry), f"temporary {entry} left behind"
        if entry in ("checkpoint", ".checkpoint.lock"):
            continue
        prefix = re.sub(r"(\.index|\.data-[0-9]{5}-of-[0-9]{5})$", "", entry)
        assert prefix in names, f"{entry} belongs to no listed checkpoint ({names})"


def summarize(outcomes: list[Outcome]) -> Counter[str]:
    """How the trials ended: the last returned save restored, or one that was in flight."""
    counts: Counter[str] = Counter()
    for o in outcomes:
        if o.restored == o.last_returned:
            counts["restored the last returned save"] += 1
        else:
            counts["restored the save in flight (committed before the kill)"] += 1
    return counts
