"""Dependencies missing at restore time are restored when they are added."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipestate.checkpoint import AutoTrackable, Checkpoint, CheckpointableSaver, Trackable, Variable

from ._helpers import Model, saved_model


def test_dependency_added_after_restore_is_restored(tmp_path: Path) -> None:
    path, model = saved_model(tmp_path)
    ckpt = Checkpoint(model=AutoTrackable())
    status = ckpt.restore(path).expect_partial()  # model.dense is never added here
    with pytest.raises(AssertionError, match="Unresolved object in checkpoint: model/out"):
        status.assert_consumed()
    status.assert_existing_objects_matched()
    ckpt.model.out = Variable(np.zeros(4))
    np.testing.assert_array_equal(ckpt.model.out.numpy(), model.out.numpy())


def test_nested_two_levels_deep(tmp_path: Path) -> None:
    path, model = saved_model(tmp_path)
    ckpt = Checkpoint(model=AutoTrackable())
    status = ckpt.restore(path)
    dense = AutoTrackable()
    ckpt.model.dense = dense  # level one: matched, its children still missing
    dense.kernel = Variable(np.zeros((3, 4), np.float32))  # level two
    np.testing.assert_array_equal(dense.kernel.numpy(), model.dense.kernel.numpy())
    with pytest.raises(AssertionError, match="model/dense/bias"):
        status.assert_consumed()
    dense.bias = Variable(np.ones(4, np.float32))
    ckpt.model.out = Variable(np.zeros(4))
    status.assert_consumed()
    np.testing.assert_array_equal(dense.bias.numpy(), np.zeros(4, np.float32))


def test_whole_subtree_added_at_once(tmp_path: Path) -> None:
    path, model = saved_model(tmp_path)
    ckpt = Checkpoint()
    status = ckpt.restore(path)
    ckpt.model = Model(seed=9)  # built with different values, restored on assignment
    status.assert_consumed()
    np.testing.assert_array_equal(ckpt.model.dense.kernel.numpy(), model.dense.kernel.numpy())


def test_explicit_track_applies_deferred_restoration(tmp_path: Path) -> None:
    root = Trackable()
    root._track("v", Variable(np.arange(3)))
    path = CheckpointableSaver(root).save(str(tmp_path / "t"))
    fresh = Trackable()
    CheckpointableSaver(fresh).restore(path)
    v = fresh._track("v", Variable(np.zeros(3, np.int64)))
    assert v.numpy().tolist() == [0, 1, 2]


def test_list_elements_appended_later(tmp_path: Path) -> None:
    root = AutoTrackable()
    root.layers = [Variable(1.0), Variable(2.0)]
    path = CheckpointableSaver(root).save(str(tmp_path / "l"))
    fresh = AutoTrackable()
    fresh.layers = []
    status = CheckpointableSaver(fresh).restore(path)
    fresh.layers.append(Variable(0.0))
    fresh.layers.append(Variable(0.0))
    assert [float(v.numpy()) for v in fresh.layers] == [1.0, 2.0]
    status.assert_consumed()


def test_dict_entries_added_later(tmp_path: Path) -> None:
    root = AutoTrackable()
    root.heads = {"a": Variable(1.0)}
    path = CheckpointableSaver(root).save(str(tmp_path / "d"))
    fresh = AutoTrackable()
    fresh.heads = {}
    CheckpointableSaver(fresh).restore(path).expect_partial()
    fresh.heads["a"] = Variable(0.0)
    assert float(fresh.heads["a"].numpy()) == 1.0


def test_plain_value_added_later_takes_the_saved_value(tmp_path: Path) -> None:
    path = Checkpoint(epoch=7).save(str(tmp_path / "p"))
    ckpt = Checkpoint()
    ckpt.restore(path)
    ckpt.epoch = 0
    assert ckpt.epoch == 7


def test_newer_restore_wins_for_deferred_dependencies(tmp_path: Path) -> None:
    v = Variable(1.0)
    saver = Checkpoint(v=v)
    first = saver.save(str(tmp_path / "n"))
    v.assign(2.0)
    second = saver.save(str(tmp_path / "n"))
    ckpt = Checkpoint()
    ckpt.restore(second)
    ckpt.restore(first)  # the newest restore
    ckpt.v = Variable(0.0)
    assert float(ckpt.v.numpy()) == 1.0
    other = Checkpoint()
    other.restore(first)
    other.restore(second)
    other.v = Variable(0.0)
    assert float(other.v.numpy()) == 2.0


def test_older_deferred_values_apply_where_the_newer_restore_has_none(tmp_path: Path) -> None:
    full = AutoTrackable()
    full.a = AutoTrackable()
    full.a.b = Variable(5.0)
    older = CheckpointableSaver(full).save(str(tmp_path / "full"))
    slim = AutoTrackable()
    slim.a = AutoTrackable()
    newer = CheckpointableSaver(slim).save(str(tmp_path / "slim"))
    fresh = AutoTrackable()
    saver = CheckpointableSaver(fresh)
    saver.restore(older).expect_partial()
    saver.restore(newer).expect_partial()
    fresh.a = AutoTrackable()
    fresh.a.b = Variable(0.0)
    assert float(fresh.a.b.numpy()) == 5.0


def test_deferred_into_root_checkpoint_attachments(tmp_path: Path) -> None:
    model = Model(1)
    path = Checkpoint(root=model, step=3).save(str(tmp_path / "r"))
    ckpt = Checkpoint(root=Model(2))
    ckpt.restore(path)
    ckpt.step = 0
    assert ckpt.step == 3
