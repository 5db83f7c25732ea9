"""Status objects: every assertion, its message, and the warning about unused values."""

from __future__ import annotations

import gc
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from pipestate.checkpoint import (
    AutoTrackable,
    Checkpoint,
    CheckpointableSaver,
    InitializationOnlyStatus,
    Variable,
)
from pipestate.errors import CheckpointMismatchError

from ._helpers import Model, saved_model

NO_CHECKPOINT = re.escape("No checkpoint specified (save_path=None); nothing is being restored.")


def test_full_match_passes_every_assertion(tmp_path: Path) -> None:
    path, model = saved_model(tmp_path)
    fresh = Model(seed=7)
    status = Checkpoint(model=fresh).restore(path)
    assert status.assert_consumed() is status
    assert status.assert_existing_objects_matched() is status
    assert status.assert_nontrivial_match() is status
    status.run_restore_ops()  # eager: nothing to run, and no error
    status.initialize_or_restore()
    np.testing.assert_array_equal(fresh.dense.kernel.numpy(), model.dense.kernel.numpy())


def test_checkpoint_object_missing_in_python(tmp_path: Path) -> None:
    path, _ = saved_model(tmp_path)
    partial = Model()
    del partial.dense
    status = Checkpoint(model=partial).restore(path).expect_partial()
    with pytest.raises(AssertionError) as info:
        status.assert_consumed()
    message = str(info.value)
    assert "was not fully consumed" in message
    assert "Unresolved object in checkpoint: model/dense/kernel (Variable)" in message
    # As in TensorFlow, an object that saved no values is not listed; its dependencies are.
    assert "model/dense (AutoTrackable)" not in message
    status.assert_existing_objects_matched()  # what exists did match
    status.assert_nontrivial_match()


def test_python_object_missing_in_checkpoint(tmp_path: Path) -> None:
    path, _ = saved_model(tmp_path)
    bigger = Model()
    bigger.extra = Variable(np.zeros(2))
    status = Checkpoint(model=bigger).restore(path)
    expected = r"Object not assigned a value from checkpoint: model/extra \(Variable\(shape=\(2,\)"
    with pytest.raises(AssertionError, match=expected):
        status.assert_consumed()
    match = r"Some Python objects were not bound.*\n.*model/extra"
    with pytest.raises(AssertionError, match=match):
        status.assert_existing_objects_matched()
    status.assert_nontrivial_match()


def test_unused_attributes_are_named(tmp_path: Path) -> None:
    root = AutoTrackable()
    root.x = Variable(np.ones(2))
    path = CheckpointableSaver(root).save(str(tmp_path / "a"))
    other = AutoTrackable()
    other.x = AutoTrackable()  # same name, but saves no value
    status = CheckpointableSaver(other).restore(path).expect_partial()
    unused = "Unused attribute in checkpoint: x/.ATTRIBUTES/VARIABLE_VALUE"
    with pytest.raises(AssertionError, match=re.escape(unused)):
        status.assert_consumed()
    with pytest.raises(AssertionError, match=re.escape(unused)):
        status.assert_existing_objects_matched()


def test_variable_matched_to_a_node_without_value_is_not_assigned(tmp_path: Path) -> None:
    root = AutoTrackable()
    root.x = AutoTrackable()
    path = CheckpointableSaver(root).save(str(tmp_path / "a"))
    other = AutoTrackable()
    other.x = Variable(1.0)
    status = CheckpointableSaver(other).restore(path)
    with pytest.raises(AssertionError, match="Object not assigned a value from checkpoint: x "):
        status.assert_existing_objects_matched()


def test_nontrivial_match_fails_when_only_root_and_counter_match(tmp_path: Path) -> None:
    path = Checkpoint(a=Variable(1.0)).save(str(tmp_path / "a"))
    status = Checkpoint(b=Variable(2.0)).restore(path).expect_partial()
    with pytest.raises(
        AssertionError,
        match=r"Nothing except the root object matched a checkpointed value in '.*a-1'\. "
        r"Typically this means that the checkpoint does not match the Python program\. "
        r"The following objects have no matching checkpointed value:\n  Object not assigned "
        r"a value from checkpoint: b",
    ):
        status.assert_nontrivial_match()


def test_restore_none_gives_initialization_only_status() -> None:
    status = Checkpoint(model=Model()).restore(None)
    assert isinstance(status, InitializationOnlyStatus)
    for assertion in (
        status.assert_consumed,
        status.assert_existing_objects_matched,
        status.assert_nontrivial_match,
    ):
        with pytest.raises(AssertionError, match=f"^{NO_CHECKPOINT}$"):
            assertion()
    with pytest.raises(AssertionError, match="No checkpoint specified, so no restore ops"):
        status.run_restore_ops()
    status.initialize_or_restore()  # keeps initial values, no error
    assert status.expect_partial() is status
    assert isinstance(CheckpointableSaver(Model()).restore(None), InitializationOnlyStatus)
    assert isinstance(Checkpoint().read(None), InitializationOnlyStatus)


def test_discarded_status_warns_about_unused_values(tmp_path: Path) -> None:
    path, _ = saved_model(tmp_path)
    partial = Model()
    del partial.out
    match = r"only partly restored.*\n  Unresolved object in checkpoint: model/out"
    Checkpoint(model=partial).restore(path)
    # The model keeps a deferred restoration for "out" (and so the restore) alive.
    with pytest.warns(UserWarning, match=match):
        del partial  # no reference cycles: the restore ends here, without a collection


def test_expect_partial_silences_the_warning(tmp_path: Path) -> None:
    path, _ = saved_model(tmp_path)
    partial = Model()
    del partial.out
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Checkpoint(model=partial).restore(path).expect_partial()
        del partial
        gc.collect()


def test_no_warning_once_deferred_values_are_consumed(tmp_path: Path) -> None:
    path, _ = saved_model(tmp_path)
    ckpt = Checkpoint(model=AutoTrackable())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ckpt.restore(path)  # status discarded; the model's parts come later
        model = ckpt.model
        model.dense = AutoTrackable()
        model.dense.kernel = Variable(np.zeros((3, 4), np.float32))
        model.dense.bias = Variable(np.zeros(4, np.float32))
        model.out = Variable(np.zeros(4))
        gc.collect()


def test_mismatched_value_raises_typed_error_naming_the_object(tmp_path: Path) -> None:
    path, _ = saved_model(tmp_path)
    wrong = Model()
    wrong.out = Variable(np.zeros(5))
    with pytest.raises(
        CheckpointMismatchError, match=r"dtype float64 and shape \(4,\).*shape \(5,\)"
    ):
        Checkpoint(model=wrong).restore(path)


def test_restore_error_in_custom_trackable_names_the_path(tmp_path: Path) -> None:
    class Strict(AutoTrackable):
        def _serialize_to_values(self) -> dict[str, object]:
            return {"a": 1}

        def _restore_from_values(self, values: object) -> None:
            raise KeyError("b")

    path = Checkpoint(s=Strict()).save(str(tmp_path / "k"))
    with pytest.raises(
        CheckpointMismatchError, match=r"cannot restore .* from 's' in checkpoint .*KeyError: 'b'"
    ):
        Checkpoint(s=Strict()).restore(path)


def test_newer_restore_wins_over_older_on_existing_objects(tmp_path: Path) -> None:
    v = Variable(0.0)
    ckpt = Checkpoint(v=v)
    v.assign(1.0)
    first = ckpt.save(str(tmp_path / "n"))
    v.assign(2.0)
    second = ckpt.save(str(tmp_path / "n"))
    older = ckpt.restore(first)
    newer = ckpt.restore(second)
    assert float(v.numpy()) == 2.0
    older.assert_consumed()  # objects restored by a newer restore count as restored
    newer.assert_consumed()


def test_objects_without_values_need_no_match_either_way(tmp_path: Path) -> None:
    """TensorFlow's rule: only objects with values count, in the checkpoint and in Python."""
    root = AutoTrackable()
    root.kept = Variable(np.ones(2))
    root.gone = AutoTrackable()  # saves nothing
    path = CheckpointableSaver(root).save(str(tmp_path / "a"))
    fresh = AutoTrackable()
    fresh.kept = Variable(np.zeros(2))
    fresh.added = AutoTrackable()  # restores nothing
    status = CheckpointableSaver(fresh).restore(path)
    status.assert_consumed().assert_existing_objects_matched().assert_nontrivial_match()
    fresh.added.v = Variable(np.zeros(1))  # now it holds a value the checkpoint lacks
    with pytest.raises(AssertionError, match=r"not assigned a value from checkpoint: added/v \("):
        status.assert_existing_objects_matched()
