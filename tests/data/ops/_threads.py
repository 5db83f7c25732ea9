"""Helpers of the tests of ops that run background threads."""

from __future__ import annotations

import threading
import time

import pytest


def pipestate_threads() -> list[threading.Thread]:
    """The live threads pipestate started."""
    return [t for t in threading.enumerate() if t.name.startswith("pipestate-")]


def wait_for_no_threads(seconds: float = 5.0) -> list[threading.Thread]:
    """Waits up to ``seconds`` for pipestate's threads to end; returns those still alive."""
    deadline = time.monotonic() + seconds
    while pipestate_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    return pipestate_threads()


@pytest.fixture(autouse=True)
def no_threads_left_from_other_tests() -> None:
    # Iterators dropped without close() stop their threads through GC, asynchronously.
    wait_for_no_threads()
