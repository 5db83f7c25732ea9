"""Fingerprints of dataset definitions, used to check that a state fits a dataset."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from typing import Any

import numpy as np


def digest(value: Any) -> str:
    """A short, stable hex digest of a JSON-able value."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe_callable(fn: Callable[..., Any]) -> str:
    """A stable name for a user function: its qualified name.

    The body is deliberately not hashed: editing a function (say, fixing an
    augmentation) must not make a saved position unusable, while swapping one
    named function for another is reported. The module is left out too, since
    it depends on how a script was started (``__main__`` or imported).
    """
    if isinstance(fn, functools.partial):
        args = ", ".join(
            [*map(_short, fn.args), *(f"{k}={_short(v)}" for k, v in fn.keywords.items())]
        )
        return f"partial({describe_callable(fn.func)}, {args})"
    return getattr(fn, "__qualname__", None) or type(fn).__qualname__


def _short(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array({value.dtype}{list(value.shape)})"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
