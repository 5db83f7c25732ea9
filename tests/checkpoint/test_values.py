"""Values a trackable saves survive a save and restore bit for bit (or are refused)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipestate.checkpoint import CheckpointableSaver, Trackable, list_variables


class Holder(Trackable):
    """Saves whatever value it holds under ``"state"``."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def _serialize_to_values(self) -> Mapping[str, Any]:
        return {"state": self.value}

    def _restore_from_values(self, values: Mapping[str, Any]) -> None:
        self.value = values["state"]


def round_trip(tmp_path: Path, value: Any) -> Any:
    path = CheckpointableSaver(Holder(value)).save(str(tmp_path / "v"))
    restored = Holder(None)
    CheckpointableSaver(restored).restore(path).assert_consumed()
    return restored.value


def same(a: Any, b: Any) -> bool:
    """Equal with types, including NaN and array dtypes."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return bool(a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes())
    if isinstance(a, np.generic):
        return bool(a.dtype == b.dtype and a.tobytes() == b.tobytes())
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(2**63 + 5, id="int-beyond-int64"),
        pytest.param(-(2**70), id="negative-big-int"),
        pytest.param(2**53 + 1, id="int-beyond-float53"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="inf"),
        pytest.param(float("-inf"), id="minus-inf"),
        pytest.param(-0.0, id="negative-zero"),
        pytest.param(0.1 + 0.2, id="float-repr"),
        pytest.param(b"\x00\xffbytes", id="bytes"),
        pytest.param((1, [2, (3,)]), id="tuple-vs-list"),
        pytest.param({0: "int key", (1, 2): "tuple key", "s": None}, id="non-str-keys"),
        pytest.param({"b": 1, "a": 2}, id="key-order"),
        pytest.param(np.float32(1.5), id="numpy-scalar"),
        pytest.param(np.int64(-(2**62)), id="numpy-int64"),
        pytest.param(np.array(7, dtype=np.int16), id="zero-d-array"),
        pytest.param(np.zeros((0, 3)), id="empty-array"),
        pytest.param(np.array(["ab", "c"]), id="unicode-array"),
        pytest.param(np.array([b"x", b"yz"]), id="bytes-array"),
        pytest.param(np.array([1 + 2j], dtype=np.complex128), id="complex128"),
        pytest.param(np.array(["2020-01-01"], dtype="datetime64[ns]"), id="datetime64"),
        pytest.param(np.array([True, False]), id="bool-array"),
        pytest.param(np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2], id="non-contiguous"),
        pytest.param(
            {"buffer": [np.arange(3), np.ones((2, 2), np.float16)], "index": 4}, id="nested"
        ),
        pytest.param("ünïcode ☃", id="unicode-str"),
        pytest.param(None, id="none"),
    ],
)
def test_value_round_trips_exactly(tmp_path: Path, value: Any) -> None:
    expected = value.copy() if isinstance(value, np.ndarray) else value
    restored = round_trip(tmp_path, value)
    if isinstance(value, np.ndarray) and not value.flags.c_contiguous:
        expected = np.ascontiguousarray(value)
    assert same(restored, expected), (restored, expected)


def test_big_endian_array_is_stored_little_endian(tmp_path: Path) -> None:
    value = np.arange(4, dtype=">i4")
    restored = round_trip(tmp_path, value)
    assert restored.dtype == np.dtype("<i4")
    assert restored.tolist() == [0, 1, 2, 3]


def test_restored_arrays_are_fresh_and_writable(tmp_path: Path) -> None:
    restored = round_trip(tmp_path, {"a": np.arange(3)})
    restored["a"][0] = 9
    assert restored["a"].flags.writeable


def test_arrays_go_to_shards_and_plain_values_stay_inline(tmp_path: Path) -> None:
    path = CheckpointableSaver(Holder({"n": 1, "x": np.float64(2.0), "a": np.zeros(2)})).save(
        str(tmp_path / "v")
    )
    names = [name for name, _ in list_variables(path)]
    assert names == [".ATTRIBUTES/state/a", ".ATTRIBUTES/state/x"]


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        pytest.param({1, 2}, TypeError, "cannot save value {1, 2} of type set", id="set"),
        pytest.param(object(), TypeError, "of type object at '.ATTRIBUTES/state'", id="object"),
        pytest.param(
            np.array([None]), TypeError, "dtype object has no fixed byte layout", id="obj-array"
        ),
        pytest.param(
            np.zeros(2, dtype=[("a", "i4")]), TypeError, "no fixed byte layout", id="structured"
        ),
        pytest.param(
            {np.zeros(1).tobytes(): {frozenset(): 1}}, TypeError, "dict key frozenset", id="bad-key"
        ),
    ],
)
def test_unsupported_values_are_refused_at_save(
    tmp_path: Path, value: Any, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        CheckpointableSaver(Holder(value)).save(str(tmp_path / "v"))
    assert not (tmp_path / "v.index").exists()


def test_self_containing_value_is_refused(tmp_path: Path) -> None:
    value: list[Any] = []
    value.append(value)
    with pytest.raises(ValueError, match="nested more than 100 levels deep"):
        CheckpointableSaver(Holder(value)).save(str(tmp_path / "v"))


json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False)
    | st.text(max_size=5)
    | st.binary(max_size=5)
)
values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=3), inner, max_size=3)
        | st.dictionaries(st.integers(-5, 5), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=40, deadline=None)
@given(value=values)
def test_any_plain_value_round_trips(tmp_path_factory: pytest.TempPathFactory, value: Any) -> None:
    assert same(round_trip(tmp_path_factory.mktemp("v"), value), value)


@pytest.mark.parametrize(
    ("code", "bits", "expected"),
    [
        ("BF16", [0x3FC0, 0xC010, 0x7F80, 0x0001], [1.5, -2.25, math.inf, 2.0**-133]),
        ("F8_E4M3", [0x38, 0x7E, 0xFE, 0x01], [1.0, 448.0, -448.0, 2.0**-9]),
        ("F8_E5M2", [0x3C, 0x7B, 0x7C, 0xFC], [1.0, 57344.0, math.inf, -math.inf]),
        ("F8_E4M3FNUZ", [0x40, 0x7F, 0x01], [1.0, 240.0, 2.0**-10]),
        ("F8_E5M2FNUZ", [0x40, 0x7F, 0x01], [1.0, 57344.0, 2.0**-17]),
        ("F8_E8M0", [0x7F, 0x80, 0x00], [1.0, 2.0, 2.0**-127]),
    ],
)
def test_types_numpy_lacks_widen_exactly_to_float32(
    code: str, bits: list[int], expected: list[float]
) -> None:
    from pipestate.checkpoint._safetensors import NATIVE_CARRIERS, widen_to_float32

    carrier = np.array(bits, dtype=NATIVE_CARRIERS[code])
    widened = widen_to_float32(carrier, code)
    assert widened.dtype == np.float32
    assert widened.tolist() == expected


@pytest.mark.parametrize(
    ("code", "nan_bits"),
    [
        ("BF16", 0x7FC1),
        ("F8_E4M3", 0x7F),
        ("F8_E5M2", 0x7D),
        ("F8_E4M3FNUZ", 0x80),
        ("F8_E8M0", 0xFF),
    ],
)
def test_nan_bit_patterns_widen_to_nan(code: str, nan_bits: int) -> None:
    from pipestate.checkpoint._safetensors import NATIVE_CARRIERS, widen_to_float32

    carrier = np.array([nan_bits], dtype=NATIVE_CARRIERS[code])
    assert np.isnan(widen_to_float32(carrier, code)).all()


def test_torch_values_are_read_as_arrays_without_a_torch_reader() -> None:
    from pipestate.checkpoint._values import decode_value
    from pipestate.errors import CheckpointMismatchError, CorruptCheckpointError

    arrays = {"k": np.arange(3)}
    assert decode_value({"torch": "k"}, arrays.__getitem__, where="x").tolist() == [0, 1, 2]
    on_gpu = {"torch": {"of": "k", "device": "cuda:0"}}
    assert decode_value(on_gpu, arrays.__getitem__, where="x").tolist() == [0, 1, 2]
    view = {"torch": {"of": "k", "dtype": "int64", "offset": 1, "shape": [2], "stride": [1]}}
    with pytest.raises(CheckpointMismatchError, match="view of a torch tensor"):
        decode_value(view, arrays.__getitem__, where="x")
    with pytest.raises(CorruptCheckpointError, match="must name a tensor"):
        decode_value({"torch": 3}, arrays.__getitem__, where="x")


@pytest.mark.parametrize("tag", ["sharded", "dtensor"])
def test_two_chunks_stored_in_one_tensor_are_corrupt(tag: str) -> None:
    # Every box is covered once and every shape is right: only the repeated tensor is wrong,
    # and reading it would give rows 2-3 the values of rows 0-1.
    from pipestate.checkpoint._values import decode_value, parse_sharding
    from pipestate.errors import CorruptCheckpointError

    body = {
        "shape": [4, 2],
        "dtype": "float32",
        "chunks": [
            {"offsets": [0, 0], "shape": [2, 2], "of": "w@[0,0]"},
            {"offsets": [2, 0], "shape": [2, 2], "of": "w@[0,0]"},
        ],
    }
    expected = r"two '" + tag + r"' chunks are stored in one tensor 'w@\[0,0\]'"
    with pytest.raises(CorruptCheckpointError, match=expected):
        parse_sharding(body, "model/w", tag)
    arrays = {"w@[0,0]": np.zeros((2, 2), np.float32), "w@[2,0]": np.ones((2, 2), np.float32)}
    with pytest.raises(CorruptCheckpointError, match=expected):
        decode_value({tag: body}, arrays.__getitem__, where="model/w")
    body["chunks"][1]["of"] = "w@[2,0]"
    assert parse_sharding(body, "model/w", tag).chunks[1].key == "w@[2,0]"
    whole = decode_value({tag: body}, arrays.__getitem__, where="model/w")
    np.testing.assert_array_equal(whole, np.repeat([0.0, 1.0], 4).reshape(4, 2))
