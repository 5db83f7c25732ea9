from __future__ import annotations

import numpy as np
import pytest

from pipestate.checkpoint import Variable
from pipestate.errors import CheckpointMismatchError


def test_assign_writes_in_place() -> None:
    v = Variable([1.0, 2.0], dtype=np.float32)
    view = np.asarray(v)
    assert v.assign([3.0, 4.0]) is v
    assert view.tolist() == [3.0, 4.0]
    assert v.dtype == np.float32
    assert v.shape == (2,)
    v.assign_add(1).assign_sub(0.5)
    assert v.numpy().tolist() == [3.5, 4.5]


def test_numpy_returns_a_copy() -> None:
    v = Variable(np.zeros(2))
    v.numpy()[0] = 5
    assert v.numpy().tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    ("value", "match"),
    [
        pytest.param(np.zeros(3), r"shape \(3,\).*fixed at \(2,\)", id="shape"),
        pytest.param(np.array(["a", "b"]), "dtype <U1 .* cast it first", id="dtype"),
    ],
)
def test_assign_checks_shape_and_dtype(value: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Variable(np.zeros(2)).assign(value)


def test_object_dtype_is_refused() -> None:
    with pytest.raises(TypeError, match="object dtype"):
        Variable([object()])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("saved", "match"),
    [
        pytest.param(np.zeros(3), r"dtype float64 and shape \(3,\)", id="shape"),
        pytest.param(np.zeros(2, np.float32), r"dtype float32 and shape \(2,\)", id="dtype"),
        pytest.param(5, "from a saved int", id="not-an-array"),
    ],
)
def test_restore_checks_dtype_and_shape(saved: object, match: str) -> None:
    v = Variable(np.zeros(2))
    with pytest.raises(CheckpointMismatchError, match=match):
        v._restore_from_values({"VARIABLE_VALUE": saved})
