"""The README's demo runs and shows an exact resume after SIGKILL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).parents[1] / "examples" / "demo.py"


@pytest.mark.timeout(120)
def test_demo_resumes_exactly_after_sigkill() -> None:
    done = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=110, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any("killed with SIGKILL after step" in line for line in lines)
    verdicts = [line for line in lines if line.rstrip().endswith(("YES", "NO"))]
    assert len(verdicts) == 2
    assert all(line.endswith("YES") for line in verdicts), done.stdout
