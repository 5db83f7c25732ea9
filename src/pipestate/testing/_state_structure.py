"""The structure of an iterator state, which must stay the same for the iterator's life.

What is compared (``docs/testing.md#state-structure``):

- a dict: its set of keys, then each value;
- a list or tuple whose items are all dicts or ``None`` (the nested states of
  the inputs under ``"parents"``, the slots of an ``interleave``): its length,
  then each item — these are positions, never buffers;
- any other list or tuple, and a NumPy array: only that it is data (a buffer
  of saved elements or indices, a shape, a scan state's values); its length,
  dtype and contents may change, and a list may become an array;
- ``None`` where another position holds any other value: an empty slot, a
  buffer not kept right now, the element structure of an empty buffer;
- everything else (``int``, ``bool``, ``float``, ``str``, ``bytes``, a NumPy
  scalar): its exact type, so an ``int`` that becomes a ``bool``, a ``None``
  or an ``np.int64`` is reported.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_DATA = "data"
_NONE = "None"


def structure(value: Any) -> Any:
    """The structure compared: dicts of structures, lists of nested states, or a kind name."""
    if isinstance(value, dict):
        return {key: structure(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        if value and all(item is None or isinstance(item, dict) for item in value):
            return [structure(item) for item in value]
        return _DATA
    if value is None:
        return _NONE
    if isinstance(value, np.ndarray):
        return _DATA
    return type(value).__name__


def merge(reference: Any, found: Any, path: str = "state") -> Any:
    """``reference`` with ``found``'s optional parts filled in.

    Raises:
      AssertionError: ``found`` has another structure, naming the first path that differs.
    """
    if reference == _NONE:
        return found
    if found == _NONE:
        return reference
    if isinstance(reference, dict) and isinstance(found, dict):
        if reference.keys() != found.keys():
            raise AssertionError(
                f"{path} has keys {sorted(found)}, where another position has {sorted(reference)}"
            )
        return {key: merge(reference[key], found[key], f"{path}[{key!r}]") for key in reference}
    if isinstance(reference, list) and isinstance(found, list):
        if len(reference) != len(found):
            raise AssertionError(
                f"{path} is a list of {len(found)} states, where another position has "
                f"{len(reference)}"
            )
        return [merge(a, b, f"{path}[{i}]") for i, (a, b) in enumerate(zip(reference, found))]
    if reference != found:
        raise AssertionError(
            f"{path} is {_name(found)}, where another position has {_name(reference)}"
        )
    return reference


def _name(structure: Any) -> str:
    if isinstance(structure, dict):
        return f"a dict with keys {sorted(structure)}"
    if isinstance(structure, list):
        return f"a list of {len(structure)} states"
    return "data (a list or an array)" if structure == _DATA else f"a value of type {structure}"
