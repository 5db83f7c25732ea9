from __future__ import annotations

import logging

import numpy as np
import pytest

import pipestate as ps
from pipestate.data import ExternalStatePolicy, Options
from pipestate.errors import ExternalStateError


def add_one(x: np.int64) -> np.int64:
    return x + 1


def stateful_pipeline() -> ps.Dataset:
    return ps.Dataset.range(10).map(add_one, stateful=True).batch(2)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("warn", ExternalStatePolicy.WARN),
        ("ignore", ExternalStatePolicy.IGNORE),
        ("fail", ExternalStatePolicy.FAIL),
        (ExternalStatePolicy.WARN, ExternalStatePolicy.WARN),
    ],
)
def test_policy_accepts_members_and_strings(value: object, expected: ExternalStatePolicy) -> None:
    assert ExternalStatePolicy.coerce(value) is expected
    assert Options(external_state_policy=value).external_state_policy is expected  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["WARN", "skip", 1, True])
def test_invalid_policy_lists_the_allowed_values(value: object) -> None:
    with pytest.raises(
        ValueError, match=r"Supported values include 'warn', 'ignore', and 'fail\.'"
    ):
        ExternalStatePolicy.coerce(value)
    options = Options()
    with pytest.raises(ValueError, match=f"Received {value!r}"):
        options.external_state_policy = value  # type: ignore[assignment]


def test_unknown_option_is_an_error() -> None:
    with pytest.raises(AttributeError, match="Options has no option 'deterministic_order'"):
        Options().deterministic_order = True  # type: ignore[attr-defined]


def test_merge_requires_options() -> None:
    with pytest.raises(TypeError, match=r"Options\.merge expects Options, got dict"):
        Options().merge({"external_state_policy": "warn"})  # type: ignore[arg-type]


def test_with_options_requires_options() -> None:
    with pytest.raises(TypeError, match=r"with_options expects pipestate\.data\.Options, got dict"):
        ps.Dataset.range(3).with_options({"external_state_policy": "warn"})  # type: ignore[arg-type]


def test_options_merge_later_wins_and_do_not_change_the_fingerprint() -> None:
    ds = ps.Dataset.range(3)
    warned = ds.with_options(Options(external_state_policy="warn"))
    assert ds.options().external_state_policy is None
    assert warned.options().external_state_policy is ExternalStatePolicy.WARN
    later = warned.map(add_one).with_options(Options(external_state_policy="ignore"))
    assert later.options().external_state_policy is ExternalStatePolicy.IGNORE
    unset = warned.map(add_one).with_options(Options())
    assert unset.options().external_state_policy is ExternalStatePolicy.WARN
    assert warned.fingerprint == ds.fingerprint
    it = iter(ds)
    next(it)
    other = iter(warned)
    other.set_state(it.get_state())
    assert int(next(other)) == 1


def test_fail_is_the_default_and_names_the_op() -> None:
    it = iter(stateful_pipeline())
    next(it)
    with pytest.raises(
        ExternalStateError, match=r"map\(map_func='add_one'\) \(stateful function\)"
    ):
        it.get_state()
    with pytest.raises(ExternalStateError, match="set the external state policy"):
        it.get_state(external_state_policy="fail")


def test_warn_logs_and_saves(caplog: pytest.LogCaptureFixture) -> None:
    ds = stateful_pipeline().with_options(Options(external_state_policy="warn"))
    it = iter(ds)
    next(it)
    with caplog.at_level(logging.WARNING, logger="pipestate.data"):
        state = it.get_state()
    assert "map(map_func='add_one') (stateful function)" in caplog.text
    fresh = iter(ds)
    fresh.set_state(state)
    assert np.array_equal(next(fresh), [3, 4])


def test_ignore_is_silent(caplog: pytest.LogCaptureFixture) -> None:
    it = iter(stateful_pipeline())
    with caplog.at_level(logging.DEBUG, logger="pipestate.data"):
        it.get_state(external_state_policy=ExternalStatePolicy.IGNORE)
    assert caplog.text == ""


def test_explicit_policy_overrides_options() -> None:
    ds = stateful_pipeline().with_options(Options(external_state_policy="ignore"))
    with pytest.raises(ExternalStateError):
        iter(ds).get_state(external_state_policy="fail")


def test_pure_pipelines_need_no_policy_but_validate_it() -> None:
    it = iter(ps.Dataset.range(3).filter(lambda x: x > 0))
    assert it.get_state(external_state_policy="fail")["iterator"]["parent"]["index"] == 0
    with pytest.raises(ValueError, match="Received 'sometimes'"):
        it.get_state(external_state_policy="sometimes")


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda ds: ds.map(add_one, stateful=True), id="map"),
        pytest.param(lambda ds: ds.filter(lambda x: True, stateful=True), id="filter"),
    ],
)
def test_ops_marked_stateful_have_external_state(make) -> None:  # type: ignore[no-untyped-def]
    ds = make(ps.Dataset.range(4)).shuffle(2, seed=1)
    assert len(ds._external_ops()) == 1
    with pytest.raises(ExternalStateError):
        iter(ds).get_state()


# ---------------------------------------------------------------- deterministic
NOT_DETERMINISTIC = Options(deterministic=False)


def test_deterministic_option_is_checked() -> None:
    assert Options().deterministic is None
    assert Options(deterministic=np.bool_(False)).deterministic is False
    with pytest.raises(TypeError, match="Options: deterministic must be a bool"):
        Options(deterministic="no")  # type: ignore[arg-type]
    merged = Options(deterministic=False).merge(Options(external_state_policy="warn"))
    assert merged.deterministic is False


PARALLEL_OPS = {
    "map": lambda ds, d: ds.map(add_one, num_parallel_calls=2, deterministic=d),
    "batch": lambda ds, d: ds.batch(2, num_parallel_calls=2, deterministic=d),
}


@pytest.mark.parametrize("op", sorted(PARALLEL_OPS))
@pytest.mark.parametrize(
    ("option", "argument", "reorders"),
    [
        (None, None, False),
        (False, None, True),
        (True, None, False),
        (False, True, False),  # an op's own argument wins over the option
    ],
)
def test_deterministic_option_is_the_default_of_parallel_ops(
    op: str, option: bool | None, argument: bool | None, reorders: bool
) -> None:
    ds = PARALLEL_OPS[op](ps.Dataset.range(20), argument)
    if option is not None:
        ds = ds.with_options(Options(deterministic=option))
    it = iter(ds)
    next(it)
    # Out-of-order delivery saves the ranges delivered past the first missing one.
    assert ("ahead" in it.get_state()["iterator"]) == reorders
    it.close()


def test_deterministic_option_leaves_interleave_in_order() -> None:
    def inner(x: np.int64) -> ps.Dataset:
        return ps.Dataset.range(x)

    ds = ps.Dataset.range(6).interleave(inner, cycle_length=2, num_parallel_calls=2)
    expected = [int(x) for x in ds]
    assert [int(x) for x in ds.with_options(NOT_DETERMINISTIC)] == expected


@pytest.mark.parametrize("saved_with", [None, False])
def test_states_restore_across_the_deterministic_option(saved_with: bool | None) -> None:
    base = ps.Dataset.range(30).map(add_one, num_parallel_calls=2)
    save = base if saved_with is None else base.with_options(NOT_DETERMINISTIC)
    load = base.with_options(NOT_DETERMINISTIC) if saved_with is None else base
    it = iter(save)
    seen = [int(next(it)) for _ in range(7)]
    state = it.get_state()
    it.close()
    restored = iter(load)
    restored.set_state(state)
    rest = [int(x) for x in restored]
    restored.close()
    assert sorted(seen + rest) == list(range(1, 31))
