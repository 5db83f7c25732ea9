"""Iterators in checkpoints: directly, and through make_saveable_from_iterator."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pipestate as ps
from pipestate.data import ExternalStatePolicy, make_saveable_from_iterator

POLICY_MESSAGE = (
    r"Invalid `ExternalStatePolicy.` Supported values include 'warn', 'ignore', and 'fail.' "
    r"Received "
)


def streaming_shuffle() -> ps.Dataset:
    """A pipeline whose state holds a buffer of elements (NumPy arrays)."""
    return ps.Dataset.range(50).filter(lambda x: x % 3 != 0).shuffle(6, seed=1).batch(2)


def external() -> ps.Dataset:
    return ps.Dataset.range(6).map(lambda x: x + 1, stateful=True)


def contains_array(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return True
    if isinstance(value, dict):
        return any(contains_array(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(contains_array(v) for v in value)
    return False


def as_lists(elements: Any) -> list[list[int]]:
    return [[int(v) for v in e] for e in elements]


@pytest.mark.parametrize("via_saveable", [False, True], ids=["iterator", "saveable"])
def test_checkpoint_round_trip_with_arrays(tmp_path: Path, via_saveable: bool) -> None:
    it = iter(streaming_shuffle())
    for _ in range(4):
        next(it)
    assert contains_array(it.get_state())
    dep = make_saveable_from_iterator(it) if via_saveable else it
    model = ps.Variable(np.arange(3.0))
    path = ps.Checkpoint(iterator=dep, model=model).save(str(tmp_path / "ckpt"))
    expected = as_lists(it)

    fresh = iter(streaming_shuffle())
    next(fresh)  # some current state, discarded by the restore
    dep2 = make_saveable_from_iterator(fresh) if via_saveable else fresh
    model2 = ps.Variable(np.zeros(3))
    ps.Checkpoint(iterator=dep2, model=model2).restore(path).assert_consumed()
    assert as_lists(fresh) == expected
    np.testing.assert_array_equal(model2.numpy(), np.arange(3.0))


def test_restore_discards_the_current_state(tmp_path: Path) -> None:
    it = iter(ps.Dataset.range(10).shuffle(4, seed=2))
    next(it)
    path = ps.Checkpoint(input=make_saveable_from_iterator(it)).save(str(tmp_path / "ckpt"))
    rest = [int(x) for x in it]
    other = iter(ps.Dataset.range(10).shuffle(4, seed=2))
    for _ in range(7):
        next(other)
    ps.Checkpoint(input=make_saveable_from_iterator(other)).restore(path)
    assert [int(x) for x in other] == rest
    assert other.get_state()["iterator"]["produced"] == 10


def test_saveable_and_iterator_checkpoints_are_interchangeable(tmp_path: Path) -> None:
    it = iter(streaming_shuffle())
    next(it)
    by_iterator = ps.Checkpoint(input=it).write(str(tmp_path / "a"))
    by_saveable = ps.Checkpoint(input=make_saveable_from_iterator(it)).write(str(tmp_path / "b"))
    expected = as_lists(it)
    for path, wrap in [(by_iterator, True), (by_saveable, False)]:
        fresh = iter(streaming_shuffle())
        dep = make_saveable_from_iterator(fresh) if wrap else fresh
        ps.Checkpoint(input=dep).read(path).assert_consumed()
        assert as_lists(fresh) == expected


def test_list_of_saveables_in_a_checkpoint_and_a_saver(tmp_path: Path) -> None:
    a, b = iter(ps.Dataset.range(5)), iter(ps.Dataset.range(100, 105))
    next(a)
    next(b), next(b)
    saveables = [make_saveable_from_iterator(a), make_saveable_from_iterator(b)]
    path = ps.Checkpoint(inputs=saveables).write(str(tmp_path / "ckpt"))
    saver_path = ps.CheckpointableSaver(ps.checkpoint.TrackableList(saveables)).save(
        str(tmp_path / "saver"), checkpoint_number=1
    )
    root_path = ps.CheckpointableSaver(saveables[0]).save(str(tmp_path / "root"))
    a2, b2 = iter(ps.Dataset.range(5)), iter(ps.Dataset.range(100, 105))
    restored = [make_saveable_from_iterator(a2), make_saveable_from_iterator(b2)]
    ps.Checkpoint(inputs=restored).read(path).assert_consumed()
    assert (int(next(a2)), int(next(b2))) == (1, 102)
    a3, b3 = iter(ps.Dataset.range(5)), iter(ps.Dataset.range(100, 105))
    ps.CheckpointableSaver(
        ps.checkpoint.TrackableList(
            [make_saveable_from_iterator(a3), make_saveable_from_iterator(b3)]
        )
    ).restore(saver_path).assert_consumed()
    assert (int(next(a3)), int(next(b3))) == (1, 102)
    a4 = iter(ps.Dataset.range(5))
    ps.CheckpointableSaver(make_saveable_from_iterator(a4)).restore(root_path).assert_consumed()
    assert int(next(a4)) == 1


@pytest.mark.parametrize(
    "policy",
    [None, "fail", ExternalStatePolicy.FAIL, "warn", "ignore", ExternalStatePolicy.IGNORE],
    ids=["none", "fail", "fail-enum", "warn", "ignore", "ignore-enum"],
)
def test_policies_accepted(policy: Any) -> None:
    saveable = make_saveable_from_iterator(iter(ps.Dataset.range(3)), policy)
    expected = ExternalStatePolicy.FAIL if policy is None else ExternalStatePolicy.coerce(policy)
    assert saveable.external_state_policy is expected
    assert f"external_state_policy='{expected.value}'" in repr(saveable)


@pytest.mark.parametrize(
    "policy", ["Warn", "", 0, True, ["warn"]], ids=["case", "empty", "int", "bool", "list"]
)
def test_invalid_policy_message(policy: Any) -> None:
    with pytest.raises(ValueError, match=POLICY_MESSAGE + repr(policy).replace("[", r"\[")):
        make_saveable_from_iterator(iter(ps.Dataset.range(3)), policy)


@pytest.mark.parametrize(
    "iterator",
    [iter([1, 2, 3]), (x for x in range(3)), ps.Dataset.range(3), None],
    ids=["list-iterator", "generator", "dataset", "none"],
)
def test_not_checkpointable(iterator: Any) -> None:
    with pytest.raises(ValueError, match="can't be checkpointed"):
        make_saveable_from_iterator(iterator)


def test_closed_iterator() -> None:
    it = iter(ps.Dataset.range(3))
    it.close()
    with pytest.raises(ValueError, match="is closed and can't be checkpointed"):
        make_saveable_from_iterator(it)


@pytest.mark.parametrize("policy", [None, "fail"], ids=["none", "fail"])
def test_external_state_with_fail_policy(policy: Any) -> None:
    with pytest.raises(
        ps.errors.ExternalStateError, match=r"map\(map_func='.*<lambda>'\) \(stateful function\)"
    ):
        make_saveable_from_iterator(iter(external()), policy)


def test_none_means_fail_whatever_the_options() -> None:
    options = ps.data.Options()
    options.external_state_policy = "ignore"
    it = iter(external().with_options(options))
    it.get_state()  # the dataset's own policy allows it
    with pytest.raises(ValueError, match="external state"):
        make_saveable_from_iterator(it)


def test_policy_governs_at_save_time(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    it = iter(external())
    next(it)
    with caplog.at_level(logging.WARNING, logger="pipestate.data"):
        ps.Checkpoint(input=make_saveable_from_iterator(it, "ignore")).write(str(tmp_path / "i"))
    assert caplog.text == ""
    with caplog.at_level(logging.WARNING, logger="pipestate.data"):
        path = ps.Checkpoint(input=make_saveable_from_iterator(it, "warn")).write(
            str(tmp_path / "w")
        )
    assert "without the external state" in caplog.text
    fresh = iter(external())
    ps.Checkpoint(input=make_saveable_from_iterator(fresh, "ignore")).read(path).assert_consumed()
    assert [int(x) for x in fresh] == [2, 3, 4, 5, 6]
    # Saving the iterator directly follows the dataset's options (default 'fail').
    with pytest.raises(ps.errors.ExternalStateError):
        ps.Checkpoint(input=it).write(str(tmp_path / "direct"))


def test_saveable_properties() -> None:
    it = iter(ps.Dataset.range(3))
    saveable = make_saveable_from_iterator(it, ExternalStatePolicy.WARN)
    assert saveable.iterator is it
    assert saveable.state_dict() == it.get_state()
    next(it)
    saveable.load_state_dict(make_saveable_from_iterator(iter(ps.Dataset.range(3))).state_dict())
    assert int(next(it)) == 0
