"""User functions in pipelines: argument checks, calls, and what their exceptions mean."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pipestate.data import _structure
from pipestate.data._fingerprint import describe_callable


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
