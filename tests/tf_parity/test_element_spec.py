"""``Dataset.element_spec`` against tf.data's: the same structure, shapes and dtypes.

tf.data computes specs by tracing user functions; pipestate knows them
statically for its own ops and reads a function's output from the first
element, so the pipelines here map to fixed shapes, or are statically known.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from ._base import Backend


def _described(backend: Backend, spec: Any) -> Any:
    """A spec structure as ``(shape or None, dtype)`` leaves, strings as ``"string"``."""
    if isinstance(spec, dict):
        return {key: _described(backend, value) for key, value in spec.items()}
    if isinstance(spec, tuple):
        return tuple(_described(backend, value) for value in spec)
    if backend.is_tf:
        shape = None if spec.shape.rank is None else tuple(spec.shape.as_list())
        dtype = "string" if spec.dtype.name == "string" else spec.dtype.name
    else:
        shape = spec.shape
        dtype = "string" if spec.dtype.kind == "S" else spec.dtype.name
    return shape, dtype


PIPELINES: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "range": (lambda d: d.range(5), ((), "int64")),
    "counter": (lambda d: d.counter(), ((), "int64")),
    "random": (lambda d: d.random(seed=1), ((), "int64")),
    "from_tensors": (lambda d: d.from_tensors(np.zeros((2, 3), np.float32)), ((2, 3), "float32")),
    "from_tensor_slices": (
        lambda d: d.from_tensor_slices((np.zeros((4, 3), np.int32), np.array([b"a"] * 4))),
        (((3,), "int32"), ((), "string")),
    ),
    "dict": (
        lambda d: d.from_tensor_slices({"a": np.zeros((4, 2)), "b": np.arange(4)}),
        {"a": ((2,), "float64"), "b": ((), "int64")},
    ),
    "batch": (lambda d: d.range(10).batch(3), ((None,), "int64")),
    "batch-drop-remainder": (lambda d: d.range(10).batch(3, drop_remainder=True), ((3,), "int64")),
    "batch-of-batch": (
        lambda d: d.range(20).batch(2, drop_remainder=True).batch(3),
        ((None, 2), "int64"),
    ),
    "unbatch": (lambda d: d.range(10).batch(2, drop_remainder=True).unbatch(), ((), "int64")),
    "enumerate": (lambda d: d.range(3).enumerate(), (((), "int64"), ((), "int64"))),
    "zip": (
        lambda d: d.zip((d.range(3), d.from_tensor_slices(np.zeros((3, 2), np.float32)))),
        (((), "int64"), ((2,), "float32")),
    ),
    "concatenate": (lambda d: d.range(3).concatenate(d.range(4)), ((), "int64")),
    "passes-elements": (
        lambda d: d.range(9).filter(lambda x: x > 2).shuffle(4).repeat(2).take(5).skip(1),
        ((), "int64"),
    ),
    "map": (
        lambda d: d.range(4).map(lambda x: (x, x * 2)),
        (((), "int64"), ((), "int64")),
    ),
    "map-batch": (lambda d: d.range(5).map(lambda x: x + 1).batch(2), ((None,), "int64")),
}


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_element_spec(backend: Backend, name: str) -> None:
    build, expected = PIPELINES[name]
    assert _described(backend, build(backend.Dataset).element_spec) == expected


def test_padded_batch(backend: Backend) -> None:
    if backend.is_tf:
        tf = backend.module
        ds = backend.Dataset.range(5).map(lambda x: (tf.range(x), x))
    else:
        ds = backend.Dataset.range(5).map(lambda x: (np.arange(x), x))
    assert _described(backend, ds.padded_batch(2).element_spec) == (
        ((None, None), "int64"),
        ((None,), "int64"),
    )
    first = ds.map(lambda a, b: a)
    assert _described(
        backend, first.padded_batch(2, padded_shapes=[6], drop_remainder=True).element_spec
    ) == ((2, 6), "int64")


def test_text_lines(backend: Backend, tmp_path: Any) -> None:
    path = tmp_path / "a.txt"
    path.write_text("x\n")
    assert _described(backend, backend.data.TextLineDataset(str(path)).element_spec) == (
        (),
        "string",
    )
