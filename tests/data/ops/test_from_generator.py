from __future__ import annotations

import collections
import json
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.data import ExternalStatePolicy, Options, TensorSpec
from pipestate.errors import ExternalStateError, StateMismatchError
from pipestate.testing import assert_conformant, assert_elements_equal

IGNORE = Options(external_state_policy="ignore")


def count(n: int) -> Iterator[int]:
    yield from range(n)


def pairs(n: int) -> Iterator[tuple[int, list[float]]]:
    for i in range(n):
        yield i, [i * 0.5] * 2


class Calls:
    """A generator function that records how often it was called and how far it was read."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0
        self.produced = 0
        self.closed = 0

    def __call__(self) -> Iterator[int]:
        self.calls += 1
        try:
            for i in range(self.n):
                self.produced += 1
                yield i
        finally:
            self.closed += 1


def test_values_and_args() -> None:
    ds = ps.Dataset.from_generator(count, args=(4,))
    values = list(ds)
    assert values == [0, 1, 2, 3]
    assert all(type(v) is np.int64 for v in values)
    assert ds.cardinality() == ps.data.UNKNOWN_CARDINALITY
    assert list(ps.Dataset.from_generator(count, args=[2])) == [0, 1]


def test_without_signature_elements_are_normalised_like_map_outputs() -> None:
    ds = ps.Dataset.from_generator(lambda: iter([{"a": [1, 2], "b": (1.5, "x")}]))
    assert_elements_equal(
        next(iter(ds)),
        {"a": np.array([1, 2]), "b": (np.float64(1.5), np.bytes_(b"x"))},
    )


def test_any_iterable_works() -> None:
    assert list(ps.Dataset.from_generator(lambda: [1, 2])) == [1, 2]


def test_output_signature_converts() -> None:
    signature = (TensorSpec((), np.int32), TensorSpec((None,), np.float32))
    ds = ps.Dataset.from_generator(pairs, output_signature=signature, args=(3,))
    assert_elements_equal(next(iter(ds)), (np.int32(0), np.zeros(2, np.float32)))
    Point = collections.namedtuple("Point", "x y")
    signature_nt = Point(TensorSpec(()), TensorSpec([2], "int8"))
    first = next(iter(ps.Dataset.from_generator(lambda: iter([(1, [2, 3])]), signature_nt)))
    assert_elements_equal(first, Point(np.float32(1), np.array([2, 3], np.int8)))
    strings = ps.Dataset.from_generator(
        lambda: iter(["ü", b"b"]), output_signature=TensorSpec((), "string")
    )
    assert [bytes(x) for x in strings] == ["ü".encode(), b"b"]
    narrowing = ps.Dataset.from_generator(
        lambda: iter([np.arange(3.0)]), output_signature=TensorSpec([3], np.float16)
    )
    assert next(iter(narrowing)).dtype == np.float16


@pytest.mark.parametrize(
    ("value", "spec", "error", "message"),
    [
        pytest.param(
            1.5, TensorSpec((), np.int32), TypeError, "expected an integer", id="float-int"
        ),
        pytest.param(
            np.arange(2.0), TensorSpec(None, np.int64), TypeError, "got float64", id="array-int"
        ),
        pytest.param(300, TensorSpec((), np.uint8), TypeError, "300 does not fit", id="overflow"),
        pytest.param(1, TensorSpec((), np.bool_), TypeError, "expected a bool", id="int-bool"),
        pytest.param(True, TensorSpec((), np.int32), TypeError, "expected an integer", id="bool"),
        pytest.param("x", TensorSpec(()), TypeError, "expected a number", id="str-float"),
        pytest.param(
            [1, 2, 3], TensorSpec((2,)), ValueError, r"expected shape \(2,\), got shape \(3,\)"
        ),
        pytest.param([[1]], TensorSpec((None,)), ValueError, r"got shape \(1, 1\)", id="rank"),
        pytest.param(
            (1,), (TensorSpec(()), TensorSpec(())), TypeError, "expected a tuple of 2 components"
        ),
        pytest.param(
            {"a": 1}, {"b": TensorSpec(())}, TypeError, r"expected a dict with keys \['b'\]"
        ),
        pytest.param({"a": 1}, TensorSpec(()), TypeError, "expected a single value, got a dict"),
        pytest.param(
            (1, [1, 2]),
            (TensorSpec(()), TensorSpec([3])),
            ValueError,
            r"component \[1\]: expected shape \(3,\)",
            id="path",
        ),
    ],
)
def test_output_signature_mismatch(
    value: Any, spec: Any, error: type[Exception], message: str
) -> None:
    def gen() -> Iterator[Any]:
        yield value

    ds = ps.Dataset.from_generator(gen, output_signature=spec)
    with pytest.raises(
        error,
        match=f"from_generator: element 0 yielded by .*gen does not match "
        f"output_signature .*{message}",
    ):
        next(iter(ds))


def test_mismatch_names_the_element_index() -> None:
    ds = ps.Dataset.from_generator(
        lambda: iter([1, 2, [3, 4]]), output_signature=TensorSpec((), np.int64)
    )
    it = iter(ds)
    next(it), next(it)
    with pytest.raises(ValueError, match=r"element 2 yielded by .*<lambda> does not match"):
        next(it)


def test_unconvertible_element_without_signature() -> None:
    ds = ps.Dataset.from_generator(lambda: iter([object()]))
    with pytest.raises(TypeError, match=r"element 0 yielded by .*<lambda> can't be converted"):
        next(iter(ds))


def test_default_policy_fails_naming_the_op() -> None:
    it = iter(ps.Dataset.from_generator(count, args=(3,)).map(lambda x: x))
    next(it)
    with pytest.raises(
        ExternalStateError, match=r"from_generator\(generator='count'.*a Python generator"
    ):
        it.get_state()


def test_warn_logs_and_ignore_is_silent(caplog: pytest.LogCaptureFixture) -> None:
    ds = ps.Dataset.from_generator(count, args=(3,))
    with caplog.at_level(logging.WARNING, logger="pipestate.data"):
        state = iter(ds.with_options(Options(external_state_policy="warn"))).get_state()
    assert state["iterator"] == {"produced": 0, "seed": None}
    assert "without the external state of from_generator(generator='count'" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="pipestate.data"):
        iter(ds.with_options(IGNORE)).get_state()
        iter(ds).get_state(external_state_policy=ExternalStatePolicy.IGNORE)
    assert caplog.records == []


def test_restore_calls_the_generator_again_and_fast_forwards() -> None:
    gen = Calls(1000)
    ds = ps.Dataset.from_generator(gen).with_options(IGNORE)
    it = iter(ds)
    for _ in range(700):
        next(it)
    state = json.loads(json.dumps(it.get_state()))
    assert state["iterator"] == {"produced": 700, "seed": None}
    it.close()
    assert (gen.calls, gen.closed) == (1, 1)

    restored = iter(ds)
    restored.set_state(state)
    assert gen.calls == 1  # lazily: the generator is called on the first next
    assert next(restored) == 700
    assert (gen.calls, gen.produced) == (2, 700 + 701)
    assert list(restored) == list(range(701, 1000))
    assert gen.closed == 2


def test_a_generator_shorter_than_the_restored_position() -> None:
    gen = Calls(10)
    ds = ps.Dataset.from_generator(gen).with_options(IGNORE)
    it = iter(ds)
    for _ in range(8):
        next(it)
    state = it.get_state()
    gen.n = 5
    restored = iter(ds)
    restored.set_state(state)
    with pytest.raises(
        StateMismatchError, match="after element 8, but the generator now yields only 5"
    ):
        next(restored)
    assert gen.closed == 1  # the short generator; the first iterator's is still open


def test_close_closes_the_generator() -> None:
    gen = Calls(10)
    it = iter(ps.Dataset.from_generator(gen))
    next(it)
    assert gen.closed == 0
    it.close()
    assert gen.closed == 1
    with pytest.raises(RuntimeError, match="is closed"):
        next(it)


def test_exhausted_stays_exhausted() -> None:
    it = iter(ps.Dataset.from_generator(lambda: iter([1])))
    assert list(it) == [1]
    with pytest.raises(StopIteration):
        next(it)


def test_malformed_state() -> None:
    it = iter(ps.Dataset.from_generator(count, args=(3,)).with_options(IGNORE))
    state = it.get_state()
    with pytest.raises(StateMismatchError, match=r"state\['produced'\]=-1 is out of range"):
        it.set_state({**state, "iterator": {"produced": -1, "seed": None}})


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: ps.Dataset.from_generator(count, args=(7,)), id="plain"),
        pytest.param(lambda: ps.Dataset.from_generator(count, args=(0,)), id="empty"),
        pytest.param(
            lambda: ps.Dataset.from_generator(
                pairs, (TensorSpec((), np.int32), TensorSpec([2], np.float32)), (9,)
            ),
            id="signature",
        ),
        pytest.param(lambda: ps.Dataset.from_generator(count, args=(9,)).batch(4), id="batch"),
        pytest.param(lambda: ps.Dataset.from_generator(count, args=(5,)).repeat(2), id="repeat"),
        pytest.param(
            lambda: ps.Dataset.from_generator(count, args=(6,)).shuffle(3), id="shuffle-seedless"
        ),
    ],
)
def test_conformance_of_a_deterministic_generator(build: Any) -> None:
    assert_conformant(build().with_options(IGNORE))


def test_fingerprint_covers_generator_args_and_signature() -> None:
    state = iter(ps.Dataset.from_generator(count, args=(3,)).with_options(IGNORE)).get_state()
    for other in (
        ps.Dataset.from_generator(count, args=(4,)),
        ps.Dataset.from_generator(pairs, args=(3,)),
        ps.Dataset.from_generator(count, TensorSpec(()), args=(3,)),
    ):
        with pytest.raises(StateMismatchError, match="from_generator"):
            iter(other).set_state(state)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"generator": 3}, "from_generator: generator must be callable, got int 3"),
        ({"generator": count, "args": 3}, "args must be a tuple of arguments for the generator"),
        ({"generator": count, "output_signature": 3}, "output_signature must be a TensorSpec"),
        ({"generator": count, "output_signature": (TensorSpec(()), "x")}, "got str 'x'"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        ps.Dataset.from_generator(**kwargs)


def test_generator_must_return_an_iterable() -> None:
    with pytest.raises(TypeError, match=r"generator .*<lambda> must return an iterable, got int 3"):
        next(iter(ps.Dataset.from_generator(lambda: 3)))


def test_tensor_spec() -> None:
    spec = TensorSpec([None, 3], "int32", name="x")
    assert spec == TensorSpec((None, 3), np.int32, "x")
    assert repr(spec) == "TensorSpec(shape=(None, 3), dtype=int32, name='x')"
    assert TensorSpec(None).shape is None
    assert TensorSpec(()).dtype == np.float32
    assert repr(TensorSpec((), bytes)) == "TensorSpec(shape=(), dtype=string, name=None)"
    assert TensorSpec.from_spec(spec) is spec
    with pytest.raises(TypeError, match="dtype must be a bool, numeric or string dtype"):
        TensorSpec((), object)
    with pytest.raises(TypeError, match="dtype must be a NumPy dtype, got 'nope'"):
        TensorSpec((), "nope")
    with pytest.raises(TypeError, match="shape must be a sequence of dims or None, got 3"):
        TensorSpec(3)
    with pytest.raises(ValueError, match="each dim must be a non-negative int or None, got -1"):
        TensorSpec([-1])
    with pytest.raises(TypeError, match="name must be a str or None"):
        TensorSpec((), name=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expects an object with shape and dtype"):
        TensorSpec.from_spec(3)


# --------------------------------------------------------------- TensorFlow parity
def test_same_elements_as_tensorflow() -> None:
    tf = pytest.importorskip("tensorflow")

    def gen() -> Iterator[Any]:
        for i in range(5):
            yield {"i": i, "v": np.arange(i, i + 3, dtype=np.float64), "s": f"s{i}"}

    signature = {
        "i": tf.TensorSpec((), tf.int32),
        "v": tf.TensorSpec((None,), tf.float32),
        "s": tf.TensorSpec((), tf.string),
    }
    theirs = list(
        tf.data.Dataset.from_generator(gen, output_signature=signature).as_numpy_iterator()
    )
    ours = list(ps.Dataset.from_generator(gen, output_signature=signature))
    ours_native = list(
        ps.Dataset.from_generator(
            gen,
            output_signature={
                "i": TensorSpec((), np.int32),
                "v": TensorSpec((None,), np.float32),
                "s": TensorSpec((), "string"),
            },
        )
    )
    assert len(ours) == len(theirs) == len(ours_native) == 5
    for a, b, c in zip(ours, theirs, ours_native):
        assert_elements_equal(a, c)
        assert a["i"].dtype == b["i"].dtype
        assert a["v"].dtype == b["v"].dtype
        assert np.array_equal(a["v"], b["v"])
        assert int(a["i"]) == int(b["i"])
        assert bytes(a["s"]) == b["s"]


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.


def _generate(n: int) -> object:
    for i in range(n):
        yield np.int64(i * 3)


PROPERTY_SOURCE = st.integers(0, 30).map(
    lambda n: ps.Dataset.from_generator(_generate, args=(n,)).with_options(
        ps.data.Options(external_state_policy="ignore")
    )
)
