"""Element buffers saved in iterator states: exact round trips and strict reads."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from pipestate.data import _buffer
from pipestate.errors import StateMismatchError
from pipestate.testing import assert_elements_equal

Pair = collections.namedtuple("Pair", ["a", "b"])


@pytest.mark.parametrize(
    "elements",
    [
        pytest.param([], id="empty"),
        pytest.param([np.int64(i) for i in range(5)], id="scalars"),
        pytest.param(
            [{"z": np.arange(3.0) + i, "a": (np.int32(i), np.bytes_(b"x" * i))} for i in range(4)],
            id="unsorted-dict-keys-and-tuples",
        ),
        pytest.param([np.arange(n) for n in (1, 3, 2)], id="ragged"),
        pytest.param([np.bytes_(b"ab\x00\x00"), np.bytes_(b"c")], id="bytes-with-trailing-nul"),
        pytest.param([np.str_("é"), np.str_("long text")], id="str"),
    ],
)
def test_pack_unpack_round_trip(elements: list) -> None:  # type: ignore[type-arg]
    restored = _buffer.unpack(_buffer.pack(elements, "op"), "op")
    assert len(restored) == len(elements)
    for a, b in zip(restored, elements):
        assert_elements_equal(a, b)


def test_uniform_leaves_are_stacked_into_one_array() -> None:
    packed = _buffer.pack([np.full(4, i, np.float32) for i in range(10)], "op")
    (column,) = packed["columns"]
    assert isinstance(column, np.ndarray)
    assert column.shape == (10, 4)


def test_named_tuples_come_back_as_tuples() -> None:
    (restored,) = _buffer.unpack(_buffer.pack([Pair(np.int64(1), np.int64(2))], "op"), "op")
    assert type(restored) is tuple
    assert_elements_equal(restored, (np.int64(1), np.int64(2)))


def test_non_string_dict_keys_can_not_be_saved() -> None:
    with pytest.raises(TypeError, match="op: cannot save a buffered element with dict key 1"):
        _buffer.pack([{1: np.int64(0)}], "op")


GOOD = _buffer.pack([(np.int64(1), np.arange(2)), (np.int64(2), np.arange(2))], "shuffle")


@pytest.mark.parametrize(
    ("packed", "message"),
    [
        pytest.param([1, 2], "shuffle: malformed element buffer", id="not-a-dict"),
        pytest.param({**GOOD, "extra": 1}, "shuffle: malformed element buffer", id="extra-key"),
        pytest.param({**GOOD, "count": -1}, "malformed element buffer count -1", id="count"),
        pytest.param({**GOOD, "columns": "x"}, "columns must be a list", id="columns-type"),
        pytest.param(
            {**GOOD, "columns": [GOOD["columns"][0][:1], GOOD["columns"][1]]},
            "column of length 1 != count 2",
            id="short-column",
        ),
        pytest.param({**GOOD, "spec": ["set", []]}, "malformed buffer spec", id="spec-kind"),
        pytest.param(
            {**GOOD, "spec": ["tuple", ["leaf"]]},
            "fewer leaves than saved columns",
            id="spec-short",
        ),
        pytest.param(
            {**GOOD, "spec": ["tuple", ["leaf", "leaf", "leaf"]]},
            "more leaves than saved columns",
            id="spec-long",
        ),
        pytest.param(
            {**GOOD, "columns": [[object(), object()], GOOD["columns"][1]]},
            "is not an array",
            id="leaf-type",
        ),
    ],
)
def test_malformed_buffers_raise_naming_the_op(packed: object, message: str) -> None:
    with pytest.raises(StateMismatchError, match=message):
        _buffer.unpack(packed, "shuffle")


def test_text_arrays_keep_their_width() -> None:
    # A slice of a wider array is as wide as the array: its items alone are not.
    wide = np.array([b"abcd", b"a", b"ab"])[1:]
    elements = [wide, np.array(["é", "x"], dtype="<U5"), wide[:0]]
    unpacked = _buffer.unpack(_buffer.pack(elements, "op"), "op")
    for got, expected in zip(unpacked, elements):
        assert_elements_equal(got, expected)


def test_ragged_batches_and_windows_come_back_as_themselves() -> None:
    from pipestate.data import RaggedBatch
    from pipestate.data._elements import ElementsDataset

    ragged = [
        RaggedBatch(np.arange(3), np.array([0, 1, 3])),
        RaggedBatch(np.arange(1), np.array([0, 1])),
    ]
    for got, expected in zip(_buffer.unpack(_buffer.pack(ragged, "op"), "op"), ragged):
        assert type(got) is RaggedBatch
        assert_elements_equal(got, expected)
    windows = [(ElementsDataset([np.int64(1), np.int64(2)]), ElementsDataset([b"x", b"yz"]))]
    (got,) = _buffer.unpack(_buffer.pack(windows, "op"), "op")
    assert [int(x) for x in got[0]] == [1, 2]
    assert list(got[1]) == [b"x", b"yz"]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        pytest.param(
            {"dtype": "<i8", "shape": [1], "data": [1]}, "malformed buffered text", id="int"
        ),
        pytest.param({"dtype": "|S2", "shape": [2], "data": [b"a"]}, "holds 1 items", id="count"),
        pytest.param(
            {"dtype": "|S2", "shape": [1], "data": ["a"]}, "malformed", id="str-for-bytes"
        ),
        pytest.param({"dtype": "x" * 40, "shape": [1], "data": []}, "malformed", id="dtype"),
    ],
)
def test_malformed_text_arrays_are_refused(record: dict, message: str) -> None:  # type: ignore[type-arg]
    packed = {"count": 1, "spec": "leaf", "columns": [[record]]}
    with pytest.raises(StateMismatchError, match=message):
        _buffer.unpack(packed, "op")
