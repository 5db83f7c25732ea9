"""The property tests' pipelines, collected from the ops' test modules.

Each op's test module ``tests/data/ops/test_<op>.py`` declares how the
property tests use the op, as module attributes:

- ``PROPERTY_OP``: a hypothesis strategy of functions ``Dataset -> Dataset``
  that apply the op with drawn arguments (or a tuple of such strategies);
- ``PROPERTY_SOURCE``: a strategy of small datasets that start a pipeline
  (or a tuple of them).

An op in ``pipestate.data.ops.REGISTRY`` without either is listed, with the
reason, in ``tests/data/ops/test_registry.py``. The helpers below are shared
by several ops' strategies.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.data._structure import flatten
from pipestate.data.ops import REGISTRY

Op = Callable[[ps.Dataset], ps.Dataset]

OP_ATTRIBUTE = "PROPERTY_OP"
SOURCE_ATTRIBUTE = "PROPERTY_SOURCE"


def op_module(name: str) -> ModuleType:
    """The test module of the op named ``name`` (``tests.data.ops.test_<name>``)."""
    return importlib.import_module(f"tests.data.ops.test_{name}")


def declared(attribute: str) -> dict[str, list[st.SearchStrategy[Any]]]:
    """The strategies every registered op's test module declares under ``attribute``."""
    found: dict[str, list[st.SearchStrategy[Any]]] = {}
    for name in sorted(REGISTRY):
        try:
            module = op_module(name)
        except pytest.skip.Exception:
            continue  # the op's optional package (pyarrow, datasets, ...) is not installed
        value = getattr(module, attribute, None)
        if value is not None:
            found[name] = list(value) if isinstance(value, (tuple, list)) else [value]
    return found


def ops() -> st.SearchStrategy[Op]:
    """Any op of the registry, with drawn arguments."""
    return st.one_of(*(s for strategies in declared(OP_ATTRIBUTE).values() for s in strategies))


def sources() -> st.SearchStrategy[ps.Dataset]:
    """Any source of the registry's ops' test modules."""
    return st.one_of(*(s for strategies in declared(SOURCE_ATTRIBUTE).values() for s in strategies))


# --------------------------------------------- helpers shared by the strategies


def leaf_total(leaf: object) -> int:
    """A number from a leaf of any element: its sum, or its text's length."""
    array = np.asarray(leaf)
    if array.dtype.kind == "S":
        return int(np.sum(np.char.str_len(array)))
    return int(np.sum(array))


def total(args: tuple[object, ...]) -> int:
    """A number from any element (a function's arguments)."""
    return sum(leaf_total(leaf) for leaf in flatten(args))


def inner(*args: object) -> ps.Dataset:
    """A small dataset made from an element, for interleave and flat_map."""
    n = total(args) % 4
    return ps.Dataset.range(n).map(lambda x: x * 10 + n)


def ragged(x: np.int64) -> np.ndarray:
    """A vector whose length varies by element: batching it is an error, as in tf.data."""
    return np.arange(int(x) % 4, dtype=np.int64)
