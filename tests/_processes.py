"""Processes of one job started by a test: a free loopback port, waiting for all of them
with a timeout (killing the rest), and the JSON lines they record."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["free_port", "records", "wait_all"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_all(
    processes: list[subprocess.Popen[str]], timeout: float
) -> list[subprocess.CompletedProcess[str]]:
    """Each process's exit and output; a process still running at the end is killed."""
    done = []
    try:
        for p in processes:
            out, _ = p.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess(p.args, p.returncode, out, ""))
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    return done


def records(tmp: Path) -> list[dict[str, Any]]:
    """The JSON lines the processes appended to ``tmp / "record"`` (the file is then removed)."""
    path = tmp / "record"
    lines = path.read_text().splitlines() if path.exists() else []
    path.unlink(missing_ok=True)
    return [json.loads(line) for line in lines]
