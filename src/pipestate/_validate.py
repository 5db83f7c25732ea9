"""Argument checks shared by every layer: one place for the rules and their messages.

Each check returns the validated value in its canonical type, or raises
``TypeError`` (wrong kind of value) or ``ValueError`` (right kind, bad value)
with a message that names the argument, the entry point and the fix.
"""

from __future__ import annotations

import math
import operator
import reprlib
from typing import Any

import numpy as np

__all__ = [
    "AUTOTUNE",
    "brief",
    "check_bool",
    "check_count",
    "check_function",
    "check_int",
    "check_parallelism",
    "check_seconds",
    "check_stateful",
    "is_int",
]

AUTOTUNE = -1
"""Lets pipestate choose a parallelism or buffer size from the available cores."""

_BRIEF = reprlib.Repr()
_BRIEF.maxlevel = 4
_BRIEF.maxstring = _BRIEF.maxother = 80


def brief(value: Any, limit: int = 200) -> str:
    """A bounded ``repr`` for messages: deep, huge or self-referencing values stay short.

    Unlike ``f"{value!r:.200}"`` it never builds the whole ``repr`` first, so a
    hostile state (a list shared a million times) can't make an error hang.
    """
    try:
        text = _BRIEF.repr(value)
    except Exception:  # a broken __repr__ must not hide the real error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_int(value: object) -> bool:
    """Whether ``value`` is a Python ``int`` (``bool`` excluded), as read from JSON."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(name: str, value: Any, *, minimum: int | None = None, op: str) -> int:
    """An integer argument of op ``op`` (NumPy integers accepted), as ``int``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{op}: {name} must be an integer, got {type(value).__name__} {value!r}")
    number = int(value)
    if minimum is not None and number < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {name}={number}")
    return number


def check_count(name: str, value: Any, *, minimum: int, allow_none: bool = True) -> int | None:
    """``value`` as an int ``>= minimum`` (or ``None``), else a TypeError / ValueError."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{name} must be an int{' or None' if allow_none else ''}, got {brief(value, 80)} "
            f"of type {type(value).__name__}"
        ) from None
    if number < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {number}")
    return number


def check_seconds(name: str, value: Any, unit: str = "seconds") -> float | None:
    """``value`` as a positive, finite number of ``unit`` (or ``None``)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{name} must be a number of {unit} or None, got {brief(value, 80)}")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a positive, finite number of {unit}, got {value!r}")
    return number


def check_parallelism(value: Any, name: str, op: str, *, minimum: int = 1) -> int:
    """A thread or process count: an int >= ``minimum`` or ``AUTOTUNE``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"{op}: {name} must be a positive integer or pipestate.data.AUTOTUNE, got "
            f"{type(value).__name__} {brief(value, 80)}"
        )
    number = int(value)
    if number != AUTOTUNE and number < minimum:
        raise ValueError(
            f"{op}: {name} must be >= {minimum} or pipestate.data.AUTOTUNE ({AUTOTUNE}), "
            f"got {name}={number}"
        )
    return number


def check_bool(name: str, value: Any, *, op: str, allow_none: bool = False) -> bool | None:
    """A flag argument of op ``op``: a Python or NumPy bool (or ``None`` when allowed)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"{op}: {name} must be a bool{' or None' if allow_none else ''}, got {brief(value, 80)}"
        )
    return bool(value)


def check_function(name: str, fn: Any, op: str, *, allow_none: bool = False) -> Any:
    """A user function argument (or ``None`` when allowed)."""
    if fn is None and allow_none:
        return None
    if not callable(fn):
        raise TypeError(
            f"{op}: {name} must be callable{' or None' if allow_none else ''}, got "
            f"{type(fn).__name__} {brief(fn, 80)}"
        )
    return fn


def check_stateful(stateful: Any, op: str) -> bool:
    """The ``stateful`` flag of ops taking a user function."""
    return bool(check_bool("stateful", stateful, op=op))
