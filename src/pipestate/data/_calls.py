"""User functions in pipelines: argument checks, calls, and what their exceptions mean."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pipestate.data import _structure
from pipestate.data._fingerprint import describe_callable
from pipestate.data._structure import brief


def check_function(name: str, fn: Any, op: str) -> Callable[..., Any]:
    """Validates a user function argument."""
    if not callable(fn):
        raise TypeError(f"{op}: {name} must be callable, got {type(fn).__name__} {brief(fn, 80)}")
    return fn  # type: ignore[no-any-return]


def check_stateful(stateful: Any, op: str) -> bool:
    """Validates the ``stateful`` flag of ops taking a user function."""
    if not isinstance(stateful, (bool, np.bool_)):
        raise TypeError(f"{op}: stateful must be a bool, got {brief(stateful, 80)}")
    return bool(stateful)


def call(fn: Callable[..., Any], element: Any) -> Any:
    """Calls a user function on an element, unpacking a plain tuple into arguments."""
    return fn(*element) if type(element) is tuple else fn(element)


def stop_error(op: object, fn: Callable[..., Any], err: StopIteration) -> RuntimeError:
    """The error for a user function that raised ``StopIteration``.

    Inside a pipeline ``StopIteration`` means "no more elements"; let through,
    it would end the data early without a word. It becomes a ``RuntimeError``
    (as Python does for a generator that raises it), chained to the original.
    """
    return RuntimeError(
        f"{op!s}: {describe_callable(fn)} raised StopIteration{f' ({err})' if err.args else ''}. "
        "A pipeline function must not raise StopIteration: it would end the data early. "
        "Raise another exception, or end the data with take_while() or take()."
    )


def as_predicate_result(value: Any, op: str, fn: Callable[..., Any]) -> bool:
    """A predicate's result as a bool: a Python, NumPy or 0-d array bool."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype == np.bool_:
        return bool(value)
    raise TypeError(
        f"{op}: predicate {describe_callable(fn)} must return a scalar bool, got "
        f"{_structure.describe(value) if isinstance(value, np.ndarray) else repr(value)[:80]}"
    )
