"""The ``backend`` fixture of the tf.data parity suite, and the pipestate_differs marker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ._base import BACKENDS, DIFFERS_MARKER, TENSORFLOW, Backend

# The marker is declared in pyproject.toml: _base.py builds marked parameters on import.


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        marker = item.get_closest_marker(DIFFERS_MARKER)
        if marker is None:
            continue
        callspec = getattr(item, "callspec", None)
        if callspec is None or callspec.params.get("backend") != "pipestate":
            continue
        reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
        item.add_marker(pytest.mark.xfail(strict=True, reason=reason))


def _import_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow  # noqa: F401
    except ImportError as err:
        pytest.skip(f"tensorflow is not installed: {err}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """The implementation under test: ``pipestate`` or ``tensorflow`` (skipped if absent)."""
    if request.param == TENSORFLOW:
        _import_tensorflow()
    return Backend(request.param, tmp_path)
