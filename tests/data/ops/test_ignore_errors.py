"""``ignore_errors``: skips the elements whose computation raised, and counts them."""

from __future__ import annotations

import logging
import zlib
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.data._structure import flatten
from pipestate.data.iterator import StreamIterator
from pipestate.testing import assert_conformant, assert_restorable_at_every_position

from ._streaming import filtered


def _reciprocal(x: Any) -> Any:
    if x == 0:
        raise ZeroDivisionError(f"element {x} has no reciprocal")
    return 1.0 / x


def _fails_on_multiples_of_three(x: Any) -> Any:
    if x % 3 == 0:
        raise ValueError(f"{x} is a multiple of three")
    return x


def test_drops_failing_elements() -> None:
    ds = ps.Dataset.from_tensor_slices([1.0, 2.0, 0.0, 4.0]).map(_reciprocal).ignore_errors()
    assert [float(x) for x in ds] == [1.0, 0.5, 0.25]
    assert ds.cardinality() == ps.data.UNKNOWN_CARDINALITY
    assert ps.Dataset.range(3).repeat().ignore_errors().cardinality() == (
        ps.data.INFINITE_CARDINALITY
    )


@pytest.mark.parametrize(
    "source",
    [ps.Dataset.range(10), filtered(10)],
    ids=["random-access", "streaming"],
)
def test_count_of_skipped_elements_is_in_the_state(source: ps.Dataset) -> None:
    ds = source.map(_fails_on_multiples_of_three).ignore_errors()
    it = iter(ds)
    assert int(next(it)) == 1
    assert it.get_state()["iterator"]["count"] == 1
    assert [int(next(it)) for _ in range(3)] == [2, 4, 5]
    state = it.get_state()
    assert state["iterator"]["count"] == 2
    fresh = iter(ds)
    fresh.set_state(state)
    assert [int(x) for x in fresh] == [7, 8]
    assert fresh.get_state()["iterator"]["count"] == 4


def test_without_errors_nothing_changes() -> None:
    ds = ps.Dataset.range(5).ignore_errors()
    assert [int(x) for x in ds] == [0, 1, 2, 3, 4]
    it = iter(ds)
    list(it)
    assert it.get_state()["iterator"]["count"] == 0


def test_errors_after_the_op_are_not_ignored() -> None:
    ds = ps.Dataset.range(4).ignore_errors().map(_fails_on_multiples_of_three)
    with pytest.raises(ValueError, match="0 is a multiple of three"):
        next(iter(ds))


def test_keyboard_interrupt_is_not_ignored() -> None:
    def interrupt(x: Any) -> Any:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        next(iter(ps.Dataset.range(3).map(interrupt).ignore_errors()))


def test_log_warning(caplog: pytest.LogCaptureFixture) -> None:
    ds = ps.Dataset.range(5).map(_fails_on_multiples_of_three).ignore_errors(log_warning=True)
    with caplog.at_level(logging.WARNING, logger="pipestate.data"):
        assert [int(x) for x in ds] == [1, 2, 4]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "ignore_errors(log_warning=True) skipped an element" in messages[0]
    assert "ValueError: 0 is a multiple of three" in messages[0]
    assert "ValueError: 3 is a multiple of three" in messages[1]


def test_no_log_by_default(caplog: pytest.LogCaptureFixture) -> None:
    ds = ps.Dataset.range(5).map(_fails_on_multiples_of_three).ignore_errors()
    with caplog.at_level(logging.WARNING, logger="pipestate.data"):
        list(ds)
    assert not caplog.records


def test_unreadable_files_are_skipped_whole(tmp_path: Any) -> None:
    good = tmp_path / "good.txt"
    good.write_bytes(b"a\nb\n")
    damaged = tmp_path / "damaged.gz"
    damaged.write_bytes(b"not gzip at all")
    names = [str(tmp_path / "absent.txt"), str(good)]
    assert [bytes(x) for x in ps.data.TextLineDataset(names).ignore_errors()] == [b"a", b"b"]
    ds = ps.data.TextLineDataset([str(damaged), str(damaged)], "GZIP").ignore_errors()
    it = iter(ds)
    assert list(it) == []
    assert it.get_state()["iterator"]["count"] == 2


class _StuckIterator(StreamIterator["_StuckDataset"]):
    """An input that breaks the rule that a failing element counts as consumed."""

    def _next(self) -> Any:
        raise OSError("always the same element")


class _StuckDataset(ps.Dataset):
    _keeps_random_access = False
    _iterator_class = _StuckIterator

    def __init__(self) -> None:
        super().__init__([ps.Dataset.range(3)])

    def _cardinality(self) -> int:
        return ps.data.UNKNOWN_CARDINALITY


def test_an_input_stuck_at_an_error_raises_instead_of_looping() -> None:
    it = iter(_StuckDataset().ignore_errors())
    with pytest.raises(RuntimeError, match="raised again without moving past the failing"):
        next(it)
    assert it.get_state()["iterator"]["count"] == 1


def test_log_warning_is_not_in_the_fingerprint() -> None:
    base = ps.Dataset.range(3).ignore_errors()
    assert base.fingerprint == ps.Dataset.range(3).ignore_errors(log_warning=True).fingerprint
    assert repr(ps.Dataset.range(3).ignore_errors(True, name="x")).endswith(
        "ignore_errors(log_warning=True, name='x')"
    )


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="ignore_errors: log_warning must be a bool"):
        ps.Dataset.range(3).ignore_errors(log_warning="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(
            ps.Dataset.range(12).map(_fails_on_multiples_of_three).ignore_errors(), id="map"
        ),
        pytest.param(
            filtered(12).map(_fails_on_multiples_of_three).ignore_errors().batch(3), id="batch"
        ),
        pytest.param(
            ps.Dataset.range(9)
            .map(_fails_on_multiples_of_three, num_parallel_calls=2)
            .ignore_errors(),
            id="parallel-map",
        ),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds)


def test_restorable_with_repeat() -> None:
    ds = ps.Dataset.range(7).map(_fails_on_multiples_of_three).ignore_errors().repeat(2)
    assert_restorable_at_every_position(ds)
    assert [int(x) for x in ds] == [1, 2, 4, 5] * 2


def _fails_for_some(*element: Any) -> Any:
    """Raises for about a third of the elements (a function of the element alone)."""
    digest = 0
    for leaf in flatten(element):
        digest = zlib.crc32(np.asarray(leaf).tobytes(), digest)
    if digest % 3 == 0:
        raise ValueError("dropped by the property test")
    return element[0] if len(element) == 1 else element


PROPERTY_OP = st.sampled_from([False, True]).map(
    lambda failing: (
        (lambda ds: ds.map(_fails_for_some).ignore_errors())
        if failing
        else (lambda ds: ds.ignore_errors())
    )
)
