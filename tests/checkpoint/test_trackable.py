from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from pipestate.checkpoint import (
    AutoTrackable,
    Trackable,
    TrackableDict,
    TrackableList,
    TrackableProtocol,
    Variable,
)
from pipestate.checkpoint._adapters import PythonValue


def test_track_returns_the_dependency_and_lists_it_in_order() -> None:
    parent = Trackable()
    a, b = Variable(1.0), Variable(2.0)
    assert parent._track("b", b) is b
    parent._track("a", a)
    assert list(parent._trackable_children()) == ["b", "a"]
    assert parent._lookup_dependency("a") is a
    assert parent._lookup_dependency("missing") is None


def test_duplicate_name_raises_unless_overwritten_on_purpose() -> None:
    parent = Trackable()
    first, second = Variable(1.0), Variable(2.0)
    parent._track("v", first)
    parent._track("v", first)  # the same object again is not a conflict
    with pytest.raises(ValueError, match=r"already has a dependency named 'v' .*overwrite=True"):
        parent._track("v", second)
    parent._track("v", second, overwrite=True)
    assert parent._lookup_dependency("v") is second


@pytest.mark.parametrize(
    ("name", "obj", "error", "match"),
    [
        pytest.param(3, Variable(1.0), TypeError, "name must be a str, got 3", id="int-name"),
        pytest.param("", Variable(1.0), ValueError, "must not be empty", id="empty-name"),
        pytest.param("x", 5, TypeError, "must be a Trackable, got 5 of type int", id="plain-value"),
    ],
)
def test_track_validates_arguments(name: Any, obj: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        Trackable()._track(name, obj)


def test_untrack_removes_the_dependency() -> None:
    parent = Trackable()
    parent._track("v", Variable(1.0))
    parent._untrack("v")
    parent._untrack("never-there")
    assert dict(parent._trackable_children()) == {}


def test_trackables_follow_the_protocol() -> None:
    assert isinstance(Variable(1.0), TrackableProtocol)
    assert isinstance(AutoTrackable(), TrackableProtocol)
    assert not isinstance(object(), TrackableProtocol)


def test_value_names_default_depends_on_restore_override() -> None:
    class Saves(Trackable):
        def _restore_from_values(self, values: Mapping[str, Any]) -> None:
            pass

    assert Trackable()._value_names() == ()
    assert Saves()._value_names() is None


def test_auto_trackable_tracks_public_attributes() -> None:
    obj = AutoTrackable()
    obj.kernel = Variable(np.zeros(2))
    obj.epoch = 3
    obj.rng = np.random.default_rng(0)
    obj.py_rng = random.Random(0)
    obj._private = Variable(1.0)
    obj.lock = threading.Lock()
    children = obj._trackable_children()
    assert list(children) == ["kernel", "epoch", "rng", "py_rng"]
    assert children["kernel"] is obj.kernel
    assert isinstance(children["epoch"], PythonValue)
    assert obj.epoch == 3  # the attribute keeps the plain value


def test_reassigning_keeps_or_replaces_the_dependency() -> None:
    obj = AutoTrackable()
    obj.step = 1
    slot = obj._trackable_children()["step"]
    obj.step = 2
    assert obj._trackable_children()["step"] is slot
    obj.step = Variable(2)
    assert obj._trackable_children()["step"] is obj.step
    obj.step = threading.Lock()
    assert "step" not in obj._trackable_children()
    obj.other = 1
    del obj.other
    assert "other" not in obj._trackable_children()


def test_lists_and_dicts_of_trackables_are_wrapped_and_tracked() -> None:
    obj = AutoTrackable()
    obj.layers = [Variable(1.0)]
    obj.heads = {"a": Variable(2.0)}
    obj.history = [1.0, 2.0]
    assert isinstance(obj.layers, TrackableList)
    assert isinstance(obj.heads, TrackableDict)
    assert isinstance(obj.history, TrackableList)
    assert dict(obj.history._trackable_children()) == {}
    assert obj.history._serialize_to_values() == {"VALUE": [1.0, 2.0]}
    obj.layers.append(Variable(3.0))
    obj.heads["b"] = [Variable(4.0)]
    assert list(obj.layers._trackable_children()) == ["0", "1"]
    assert list(obj.heads._trackable_children()) == ["a", "b"]
    assert isinstance(obj.heads["b"], TrackableList)
    assert obj.layers._serialize_to_values() == {}


def test_empty_list_is_wrapped_so_later_elements_are_tracked() -> None:
    obj = AutoTrackable()
    obj.layers = []
    obj.layers.extend([Variable(1.0), 5])
    children = obj.layers._trackable_children()
    assert children["0"] is obj.layers[0]
    assert isinstance(children["1"], PythonValue)
    assert obj.layers._trackable_children()["1"] is children["1"]  # adapters are stable


def test_container_entries_that_cannot_be_saved_raise_on_use() -> None:
    bad_list = TrackableList([threading.Lock()])
    with pytest.raises(
        TypeError, match=r"entry 0 is <unlocked _thread.lock.*cannot be checkpointed"
    ):
        bad_list._trackable_children()
    bad_dict = TrackableDict({1: Variable(1.0)})
    with pytest.raises(TypeError, match=r"holding trackables needs str keys .* got 1 of type int"):
        bad_dict._trackable_children()


def test_reprs_name_the_dependencies() -> None:
    obj = AutoTrackable()
    obj.a = Variable(np.arange(3))
    obj.b = 7
    assert repr(obj) == "AutoTrackable(dependencies=[a, b])"
    assert repr(obj.a) == "Variable(shape=(3,), dtype=int64, numpy=[0, 1, 2])"
    assert repr(obj._trackable_children()["b"]) == "PythonValue(b=7)"
    assert repr(TrackableList([1])) == "TrackableList([1])"
    assert repr(TrackableDict({"k": 1})) == "TrackableDict({'k': 1})"
