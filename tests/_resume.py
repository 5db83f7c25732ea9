"""Running a training script to its end, or killing it with SIGKILL where it waits (the
SIGKILL/resume tests of tests/torch and tests/jax)."""

from __future__ import annotations

import signal
import subprocess
import time

__all__ = ["digest", "run_or_kill"]


def run_or_kill(args: list[str], env: dict[str, str], *, kill: bool, timeout: float) -> str:
    """Run ``args`` to the end (``kill=False``), or until it prints ``waiting`` and then
    SIGKILL it; return what it printed."""
    if not kill:
        return subprocess.run(
            args, capture_output=True, text=True, check=True, timeout=timeout, env=env
        ).stdout
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    lines = []
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        lines.append(line)
        if line.strip() == "waiting" or time.monotonic() > deadline:
            break
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert lines[-1].strip() == "waiting", lines
    return "".join(lines)


def digest(output: str) -> str:
    """The hex digest of the script's one ``digest <hex>`` line."""
    (line,) = [line for line in output.splitlines() if line.startswith("digest ")]
    return line.split()[1]
