from __future__ import annotations

import json

import numpy as np
import pytest

import pipestate as ps
from pipestate.data.iterator import state_from_json, state_to_json
from pipestate.errors import StateMismatchError


def pipeline(batch_size: int = 4, seed: int = 1) -> ps.Dataset:
    return ps.Dataset.range(100).global_shuffle(seed=seed).map(lambda x: x + 1).batch(batch_size)


def test_state_envelope() -> None:
    it = iter(pipeline())
    next(it)
    state = it.get_state()
    assert state["version"] == ps.data.STATE_VERSION
    assert state["fingerprint"] == pipeline().fingerprint
    assert [op.split(":")[0] for op in state["ops"]] == ["range", "global_shuffle", "map", "batch"]
    assert state["iterator"] == {"index": 1, "seed": None}
    assert json.loads(json.dumps(state)) == state


def test_state_dict_aliases_follow_the_stateful_protocol() -> None:
    it = iter(pipeline())
    next(it)
    other = iter(pipeline())
    other.load_state_dict(it.state_dict())
    assert np.array_equal(next(other), next(it))


def test_json_helpers_round_trip() -> None:
    it = iter(pipeline())
    next(it)
    assert state_from_json(state_to_json(it.get_state())) == it.get_state()
    with pytest.raises(StateMismatchError, match="not valid JSON"):
        state_from_json("{")
    with pytest.raises(StateMismatchError, match="must be an object, got"):
        state_from_json("[1]")


def test_set_state_discards_current_position() -> None:
    ds = pipeline()
    fresh_state = iter(ds).get_state()
    it = iter(ds)
    for _ in range(5):
        next(it)
    it.set_state(fresh_state)
    assert np.array_equal(next(it), ds[0])


def test_restore_time_does_not_depend_on_position() -> None:
    ds = ps.Dataset.range(10**15).map(lambda x: x * 2)
    it = iter(ds)
    state = it.get_state()
    state["iterator"]["index"] = 10**15 - 1
    it.set_state(state)
    assert next(it) == (10**15 - 1) * 2
    with pytest.raises(StopIteration):
        next(it)


@pytest.mark.parametrize(
    ("other", "message"),
    [
        pytest.param(
            pipeline(batch_size=8),
            r"op #3 'batch' had different settings than this dataset's batch\(batch_size=8",
            id="batch-size",
        ),
        pytest.param(
            pipeline(seed=2), r"op #1 'global_shuffle' had different settings .*seed=2", id="seed"
        ),
        pytest.param(
            ps.Dataset.range(100).global_shuffle(seed=1).batch(4),
            r"op #2 \(counting from the sources\) was 'map' but this dataset has batch",
            id="missing-op",
        ),
        pytest.param(
            pipeline().batch(2),
            r"has 4 ops \(range, global_shuffle, map, batch\) but this dataset has 5",
            id="extra-op",
        ),
        pytest.param(
            ps.Dataset.range(100).global_shuffle(seed=1).take(5).batch(4),
            r"op #2 \(counting from the sources\) was 'map' but this dataset has take\(count=5\)",
            id="other-op",
        ),
    ],
)
def test_restoring_into_a_different_definition_names_the_op(
    other: ps.Dataset, message: str
) -> None:
    it = iter(pipeline())
    next(it)
    with pytest.raises(StateMismatchError, match=message):
        iter(other).set_state(it.get_state())


def test_mismatch_error_is_a_value_error() -> None:
    assert issubclass(StateMismatchError, ValueError)


def test_function_name_is_part_of_the_definition() -> None:
    def plus_one(x: np.int64) -> np.int64:
        return x + 1

    def plus_two(x: np.int64) -> np.int64:
        return x + 2

    state = iter(ps.Dataset.range(3).map(plus_one)).get_state()
    with pytest.raises(
        StateMismatchError, match="op #1 'map' had different settings than this dataset's map"
    ):
        iter(ps.Dataset.range(3).map(plus_two)).set_state(state)


def good_state() -> dict[str, object]:
    it = iter(pipeline())
    next(it)
    return it.get_state()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        pytest.param(lambda s: [1, 2], "expects the dict returned by get_state", id="not-a-dict"),
        pytest.param(
            lambda s: {k: v for k, v in s.items() if k != "iterator"},
            r"missing \['iterator'\]",
            id="missing-key",
        ),
        pytest.param(
            lambda s: {**s, "version": 99}, "Unsupported iterator state version 99", id="version"
        ),
        pytest.param(
            lambda s: {**s, "iterator": 5}, r"state\['iterator'\] must be a dict", id="inner-type"
        ),
        pytest.param(
            lambda s: {**s, "iterator": {"index": -1, "seed": None}},
            r"state\['index'\]=-1 is out of range \[0, 25\]",
            id="negative",
        ),
        pytest.param(
            lambda s: {**s, "iterator": {"index": 26, "seed": None}},
            r"state\['index'\]=26 is out of range",
            id="beyond-end",
        ),
        pytest.param(
            lambda s: {**s, "iterator": {"index": "3", "seed": None}},
            r"state\['index'\] must be an int, got '3'",
            id="index-type",
        ),
        pytest.param(
            lambda s: {**s, "iterator": {"index": 3}},
            r"iterator state keys \['index'\] != expected",
            id="inner-keys",
        ),
        pytest.param(
            lambda s: {**s, "iterator": {"index": 3, "seed": 5}},
            r"state\['seed'\] must be None here, got 5",
            id="seed",
        ),
        pytest.param(
            lambda s: {**s, "fingerprint": "x", "ops": "bad"}, "malformed 'ops' list", id="ops"
        ),
    ],
)
def test_malformed_states_raise_typed_errors(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    it = iter(pipeline())
    with pytest.raises(StateMismatchError, match=message):
        it.set_state(mutate(good_state()))
    assert np.array_equal(next(it), pipeline()[0])  # a failed restore leaves the iterator usable


def test_close() -> None:
    it = iter(pipeline())
    next(it)
    it.close()
    it.close()  # idempotent
    with pytest.raises(RuntimeError, match="is closed"):
        next(it)
    with pytest.raises(RuntimeError, match="is closed"):
        it.get_state()
    with iter(pipeline()) as managed:
        next(managed)
    with pytest.raises(RuntimeError, match="is closed"):
        next(managed)


def test_repr_shows_settings() -> None:
    assert repr(iter(ps.Dataset.range(3).batch(2))) == (
        "IndexIterator(range(start=0, stop=3, step=1, dtype='int64')"
        ".batch(batch_size=2, drop_remainder=False))"
    )
