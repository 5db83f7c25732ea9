"""Hooks, Session, MonitoredSession, timers, StopAtStepHook, CheckpointSaverHook, LoggingHook."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pipestate as ps
from pipestate.training import (
    CheckpointSaverHook,
    CheckpointSaverListener,
    Coordinator,
    LoggingHook,
    MonitoredSession,
    SecondOrStepTimer,
    Session,
    SessionRunArgs,
    SessionRunContext,
    SessionRunHook,
    SessionRunValues,
    StopAtStepHook,
)


class CallLog(SessionRunHook):
    """Records every call, and asks for fetches."""

    def __init__(self, fetches: Any = None) -> None:
        self.calls: list[Any] = []
        self.fetches = fetches

    def begin(self) -> None:
        self.calls.append("begin")

    def after_create_session(self, session: Session, coord: Coordinator) -> None:
        self.calls.append(("after_create_session", session.global_step))

    def before_run(self, run_context: SessionRunContext) -> SessionRunArgs | None:
        self.calls.append(("before_run", run_context.session.global_step))
        return None if self.fetches is None else SessionRunArgs(self.fetches, options="opt")

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        self.calls.append(("after_run", run_values.results, run_values.options))

    def end(self, session: Session) -> None:
        self.calls.append(("end", session.global_step))


def test_hook_call_order_and_fetches() -> None:
    hook = CallLog(fetches={"g": "global_step", "pair": ("loss", "acc")})
    session = Session()
    with MonitoredSession(session, [hook]) as mon:
        out = mon.run(lambda: {"loss": 0.5, "acc": 1.0})
        mon.run(lambda: {"loss": 0.25, "acc": 0.0})
    assert out == {"loss": 0.5, "acc": 1.0}
    assert hook.calls == [
        "begin",
        ("after_create_session", 0),
        ("before_run", 0),
        ("after_run", {"g": 1, "pair": (0.5, 1.0)}, "opt"),
        ("before_run", 1),
        ("after_run", {"g": 2, "pair": (0.25, 0.0)}, "opt"),
        ("end", 2),
    ]


def test_number_output_is_loss_and_list_fetches() -> None:
    hook = CallLog(fetches=["loss", "global_step"])
    with MonitoredSession(Session(global_step=5), [hook]) as mon:
        mon.run(lambda: np.float32(2.0))
    assert hook.calls[3] == ("after_run", [np.float32(2.0), 6], "opt")


def test_unknown_fetch_names_the_outputs() -> None:
    mon = MonitoredSession(Session(), [CallLog(fetches="accuracy")])
    with pytest.raises(ValueError, match=r"asked for 'accuracy', but the step produced only"):
        mon.run(lambda: 1.0)


@pytest.mark.parametrize(
    ("request_", "error", "match"),
    [
        pytest.param(SessionRunArgs(3), TypeError, "fetches are output names", id="bad-fetch"),
        pytest.param(SessionRunArgs("loss", {"x": 1}), ValueError, "feed_dict", id="feed-dict"),
        pytest.param(("loss",), TypeError, "must return SessionRunArgs", id="not-args"),
    ],
)
def test_bad_before_run_results(request_: Any, error: type[Exception], match: str) -> None:
    class Bad(SessionRunHook):
        def before_run(self, run_context: SessionRunContext) -> Any:
            return request_

    mon = MonitoredSession(Session(), [Bad()])
    with pytest.raises(error, match=match):
        mon.run(lambda: 1.0)


def test_stop_iteration_ends_the_run_normally() -> None:
    hook = CallLog()
    it = iter(ps.Dataset.range(2))
    session = Session(iterators=[it])
    with MonitoredSession(session, [hook]) as mon:
        while not mon.should_stop():
            mon.run(lambda: next(it))
    assert session.global_step == 2  # the failed third step did not count
    assert hook.calls[-1] == ("end", 2)
    assert [c for c in hook.calls if c[0] == "after_run"] == [("after_run", None, None)] * 2
    assert mon.should_stop()


def test_an_error_skips_end() -> None:
    hook = CallLog()
    with pytest.raises(ZeroDivisionError), MonitoredSession(Session(), [hook]) as mon:
        mon.run(lambda: 1 / 0)
    assert not any(c[0] == "end" for c in hook.calls)


def test_run_after_stop_raises() -> None:
    mon = MonitoredSession(Session(), [StopAtStepHook(last_step=1)])
    mon.run(lambda: None)
    assert mon.should_stop()
    with pytest.raises(RuntimeError, match="even after should_stop"):
        mon.run(lambda: None)


def test_request_stop_from_context_and_coordinator() -> None:
    class StopNow(SessionRunHook):
        def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
            run_context.request_stop()
            assert run_context.stop_requested

    mon = MonitoredSession(Session(), [StopNow()])
    assert not mon.should_stop()
    mon.run(lambda: None)
    assert mon.should_stop()
    mon2 = MonitoredSession(Session(), [])
    mon2.coordinator.request_stop()
    assert mon2.should_stop()
    assert "stop_requested=True" in repr(mon2.coordinator)


def test_close_is_idempotent() -> None:
    hook = CallLog()
    mon = MonitoredSession(Session(), [hook])
    mon.close()
    mon.close()
    assert [c for c in hook.calls if c[0] == "end"] == [("end", 0)]


def test_monitored_session_arguments() -> None:
    with pytest.raises(TypeError, match=r"must be a pipestate\.training\.Session"):
        MonitoredSession("session")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="All hooks must be SessionRunHook instances"):
        MonitoredSession(Session(), [object()])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="a single hook"):
        MonitoredSession(Session(), StopAtStepHook(1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="increment_global_step must be a bool"):
        MonitoredSession(Session(), increment_global_step=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="step_fn must be callable"):
        MonitoredSession(Session()).run(3)  # type: ignore[arg-type]


def test_session() -> None:
    it = iter(ps.Dataset.range(3))
    step = ps.Variable(np.int64(4))
    session = Session(global_step=step, iterators=[it, it])
    assert session.global_step == 4
    assert session.global_step_variable is step
    assert session.iterators == [it]  # registered once
    session.iterators.clear()  # a copy
    assert session.iterators == [it]
    assert session.add_iterator(it) is it
    assert "global_step=4" in repr(session)
    with pytest.raises(TypeError, match="0-d integer Variable"):
        Session(global_step=ps.Variable(np.zeros(2)))
    with pytest.raises(ValueError, match="global_step must be >= 0"):
        Session(global_step=-1)
    with pytest.raises(TypeError, match="DatasetIterator"):
        Session(iterators=[iter([1, 2])])
    with pytest.raises(TypeError, match="iterable of DatasetIterator"):
        Session(iterators=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Checkpoint or None"):
        Session(checkpoint={"a": 1})  # type: ignore[arg-type]


def test_session_run_tuples() -> None:
    args = SessionRunArgs("loss")
    assert (args.fetches, args.feed_dict, args.options) == ("loss", None, None)
    values = SessionRunValues(1.0)
    assert (values.results, values.options, values.run_metadata) == (1.0, None, None)
    context = SessionRunContext(args, Session())
    assert context.original_args is args
    assert not context.stop_requested


# ---------------------------------------------------------------------------- timer
def test_second_or_step_timer_steps() -> None:
    timer = SecondOrStepTimer(every_steps=3)
    assert timer.should_trigger_for_step(0)
    assert timer.update_last_triggered_step(0) == (None, None)
    assert not timer.should_trigger_for_step(0)
    assert not timer.should_trigger_for_step(2)
    assert timer.should_trigger_for_step(3)
    _, steps = timer.update_last_triggered_step(3)
    assert steps == 3
    assert timer.last_triggered_step() == 3
    timer.reset()
    assert timer.last_triggered_step() is None
    assert timer.should_trigger_for_step(3)


def test_second_or_step_timer_secs(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("pipestate.training._timer.time.time", lambda: clock[0])
    timer = SecondOrStepTimer(every_secs=10)
    timer.update_last_triggered_step(0)
    clock[0] = 109.0
    assert not timer.should_trigger_for_step(5)
    clock[0] = 110.0
    assert timer.should_trigger_for_step(5)
    assert timer.update_last_triggered_step(5) == (10.0, 5)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        pytest.param({}, ValueError, "Either every_secs or every_steps", id="neither"),
        pytest.param(
            {"every_secs": 1, "every_steps": 1}, ValueError, "Can not provide both", id="both"
        ),
        pytest.param({"every_steps": 0}, ValueError, "every_steps must be >= 1", id="zero-steps"),
        pytest.param({"every_secs": -1.0}, ValueError, "positive", id="negative-secs"),
        pytest.param({"every_secs": "1"}, TypeError, "number of seconds", id="str-secs"),
        pytest.param({"every_steps": 1.5}, TypeError, "must be an int", id="float-steps"),
    ],
)
def test_timer_errors(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        SecondOrStepTimer(**kwargs)


# ------------------------------------------------------------------------- StopAtStepHook
def run_until_stop(session: Session, hooks: list[SessionRunHook]) -> int:
    steps = 0
    with MonitoredSession(session, hooks) as mon:
        while not mon.should_stop():
            mon.run(lambda: None)
            steps += 1
    return steps


def test_stop_at_step_num_steps_counts_from_the_session_start() -> None:
    hook = StopAtStepHook(num_steps=3)
    assert run_until_stop(Session(global_step=10), [hook]) == 3
    assert hook.last_step == 13
    assert run_until_stop(Session(global_step=20), [hook]) == 3  # reused: counts again
    assert "num_steps=3" in repr(hook)


def test_stop_at_step_last_step() -> None:
    session = Session(global_step=2)
    assert run_until_stop(session, [StopAtStepHook(last_step=5)]) == 3
    assert session.global_step == 5
    assert run_until_stop(session, [StopAtStepHook(last_step=5)]) == 0  # already there
    assert "last_step=5" in repr(StopAtStepHook(last_step=5))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        pytest.param({}, ValueError, "One of num_steps or last_step must be specified", id="none"),
        pytest.param(
            {"num_steps": 1, "last_step": 2},
            ValueError,
            "Only one of num_steps or last_step",
            id="both",
        ),
        pytest.param({"num_steps": -1}, ValueError, "num_steps must be >= 0", id="negative"),
        pytest.param({"last_step": "5"}, TypeError, "last_step must be an int", id="str"),
    ],
)
def test_stop_at_step_errors(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        StopAtStepHook(**kwargs)


# ---------------------------------------------------------------------- CheckpointSaverHook
def model_session(step: int = 0) -> tuple[Session, ps.Checkpoint]:
    step_var = ps.Variable(np.int64(step))
    weights = ps.Variable(np.zeros(3))
    checkpoint = ps.Checkpoint(weights=weights, global_step=step_var)
    return Session(global_step=step_var, checkpoint=checkpoint), checkpoint


def indexes(directory: Path, prefix: str = "model.ckpt") -> list[int]:
    names = [
        n for n in os.listdir(directory) if n.startswith(prefix + "-") and n.endswith(".index")
    ]
    return sorted(int(n[len(prefix) + 1 : -len(".index")]) for n in names)


def test_saver_hook_saves_at_start_every_n_steps_and_at_end(tmp_path: Path) -> None:
    session, _ = model_session()
    hook = CheckpointSaverHook(str(tmp_path), save_steps=2, max_to_keep=None)
    run_until_stop(session, [StopAtStepHook(last_step=5), hook])
    assert indexes(tmp_path) == [0, 2, 4, 5]
    assert ps.latest_checkpoint(str(tmp_path)) == str(tmp_path / "model.ckpt-5")
    assert hook.manager is not None
    assert hook.manager.latest_checkpoint is not None


def test_saver_hook_does_not_rewrite_the_restored_checkpoint(tmp_path: Path) -> None:
    session, _checkpoint = model_session()
    run_until_stop(
        session, [StopAtStepHook(last_step=3), CheckpointSaverHook(str(tmp_path), save_steps=10)]
    )
    mtime = (tmp_path / "model.ckpt-3.index").stat().st_mtime_ns
    session2, checkpoint2 = model_session()
    checkpoint2.restore(ps.latest_checkpoint(str(tmp_path)))
    assert session2.global_step == 3
    run_until_stop(
        session2, [StopAtStepHook(num_steps=1), CheckpointSaverHook(str(tmp_path), save_steps=10)]
    )
    assert (tmp_path / "model.ckpt-3.index").stat().st_mtime_ns == mtime
    assert indexes(tmp_path) == [0, 3, 4]


def test_saver_hook_with_explicit_saver_and_names(tmp_path: Path) -> None:
    extra = ps.Checkpoint(counter=ps.Variable(np.int64(7)))
    hook = CheckpointSaverHook(
        str(tmp_path),
        save_steps=1,
        saver=extra,
        checkpoint_basename="extra",
        latest_filename="state_x",
    )
    run_until_stop(Session(), [StopAtStepHook(last_step=2), hook])
    assert indexes(tmp_path, "extra") == [0, 1, 2]
    assert ps.latest_checkpoint(str(tmp_path), latest_filename="state_x") == str(
        tmp_path / "extra-2"
    )
    assert not (tmp_path / "checkpoint").exists()


def test_saver_hook_keeps_max_to_keep(tmp_path: Path) -> None:
    session, _ = model_session()
    run_until_stop(
        session,
        [
            StopAtStepHook(last_step=6),
            CheckpointSaverHook(str(tmp_path), save_steps=1, max_to_keep=2),
        ],
    )
    assert indexes(tmp_path) == [5, 6]


def test_saver_hook_listeners(tmp_path: Path) -> None:
    events: list[Any] = []

    class Listener(CheckpointSaverListener):
        def begin(self) -> None:
            events.append("begin")

        def before_save(self, session: Session, global_step_value: int) -> None:
            events.append(("before", global_step_value))

        def after_save(self, session: Session, global_step_value: int) -> bool:
            events.append(("after", global_step_value))
            return global_step_value >= 4  # stop the run after the save at step 4

        def end(self, session: Session, global_step_value: int) -> None:
            events.append(("end", global_step_value))

    session, _ = model_session()
    hook = CheckpointSaverHook(str(tmp_path), save_steps=2, listeners=[Listener()])
    assert run_until_stop(session, [hook]) == 4
    assert events == [
        "begin",
        ("before", 0),
        ("after", 0),
        ("before", 2),
        ("after", 2),
        ("before", 4),
        ("after", 4),
        ("end", 4),
    ]


def test_saver_hook_needs_something_to_save(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="has nothing to save"):
        MonitoredSession(Session(), [CheckpointSaverHook(str(tmp_path), save_steps=1)])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        pytest.param({}, ValueError, "Either every_secs or every_steps", id="neither"),
        pytest.param(
            {"save_steps": 1, "save_secs": 1}, ValueError, "Can not provide both", id="both"
        ),
        pytest.param({"save_steps": 1, "saver": object()}, TypeError, "saver must be", id="saver"),
        pytest.param(
            {"save_steps": 1, "checkpoint_basename": ""},
            ValueError,
            "checkpoint_basename",
            id="name",
        ),
        pytest.param(
            {"save_steps": 1, "listeners": [1]}, TypeError, "listeners must be", id="listener"
        ),
        pytest.param({"save_steps": 1, "max_to_keep": 0}, ValueError, "max_to_keep", id="max"),
        pytest.param(
            {"save_steps": 1, "latest_filename": ""}, ValueError, "latest_filename", id="state-file"
        ),
    ],
)
def test_saver_hook_errors(
    tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        CheckpointSaverHook(str(tmp_path), **kwargs)
    with pytest.raises(ValueError, match="checkpoint_dir must be given"):
        CheckpointSaverHook(None, save_steps=1)


# ---------------------------------------------------------------------------- LoggingHook
def test_logging_hook(caplog: pytest.LogCaptureFixture) -> None:
    hook = LoggingHook({"l": "loss", "step": "global_step"}, every_n_iter=2, at_end=True)
    with caplog.at_level(logging.INFO, logger="pipestate.training"):
        session = Session()
        with MonitoredSession(session, [hook]) as mon:
            for i in range(3):
                mon.run(lambda i=i: float(i))  # type: ignore[misc]
    messages = [r.getMessage() for r in caplog.records if r.name == "pipestate.training"]
    assert messages == ["l = 0.0, step = 1", "l = 2.0, step = 3", "l = 2.0, step = 3"]


def test_logging_hook_formatter_and_errors(caplog: pytest.LogCaptureFixture) -> None:
    hook = LoggingHook("loss", at_end=True, formatter=lambda v: f"LOSS {v['loss']}")
    with (
        caplog.at_level(logging.INFO, logger="pipestate.training"),
        MonitoredSession(Session(), [hook]) as mon,
    ):
        mon.run(lambda: 1.5)
    assert "LOSS 1.5" in caplog.text
    with pytest.raises(ValueError, match="at_end and/or exactly one"):
        LoggingHook("loss")
    with pytest.raises(TypeError, match="fetches must be"):
        LoggingHook(3, every_n_iter=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one output"):
        LoggingHook([], every_n_iter=1)
    with pytest.raises(TypeError, match="formatter must be callable"):
        LoggingHook("loss", every_n_iter=1, formatter="x")  # type: ignore[arg-type]
