"""Estimator(state=...): extra objects saved and restored with the model, resumed bit for bit."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pipestate as ps
from pipestate.training import CheckpointInputPipelineHook, Estimator, RunConfig

SAVE_EVERY = 3
TOTAL_STEPS = 10


def regression_input() -> ps.Dataset:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0], np.float32) + 0.1).astype(np.float32)
    return ps.Dataset.from_tensor_slices((x, y)).repeat().batch(8)


def train_in_runs(make: Callable[[Path], Estimator], model_dir: Path, runs: list[int]) -> Any:
    """Trains ``runs[i]`` steps in each of a series of fresh Estimators (restarted jobs)."""
    est = None
    for steps in runs:
        est = make(model_dir)
        est.train(regression_input, hooks=[CheckpointInputPipelineHook(est)], steps=steps)
    assert est is not None
    return est


# ------------------------------------------------------------------ NumPy objects
class Schedule(ps.checkpoint.AutoTrackable):
    """A learning rate that decays each step."""

    def __init__(self, lr: float = 0.05) -> None:
        self.lr = ps.Variable(np.float64(lr))

    def step(self) -> None:
        self.lr.assign(self.lr.numpy() * 0.9)


class Linear(ps.checkpoint.AutoTrackable):
    def __init__(self) -> None:
        self.w = ps.Variable(np.zeros(4))


def numpy_estimator(model_dir: Path, names: tuple[str, ...] = ("schedule", "rng")) -> Estimator:
    """A linear model trained with a decaying LR and gradient noise from a NumPy RNG."""
    schedule = Schedule()
    rng = np.random.default_rng(7)

    def train_step(model: Linear, x: np.ndarray, y: np.ndarray) -> float:
        error = x @ model.w.numpy() - y
        noise = rng.standard_normal(4) * 1e-3
        model.w.assign_sub(float(schedule.lr.numpy()) * x.T @ error / len(y) + noise)
        schedule.step()
        return float((error**2).mean())

    objects = {"schedule": schedule, "rng": rng}
    return Estimator(
        Linear(),
        train_step,
        config=RunConfig(str(model_dir), save_checkpoints_steps=SAVE_EVERY),
        state={name: objects[name] for name in names},
    )


@pytest.mark.parametrize("stop_at", [1, 4, 6, 9])
def test_numpy_state_resumes_bit_for_bit(tmp_path: Path, stop_at: int) -> None:
    whole = train_in_runs(numpy_estimator, tmp_path / "whole", [TOTAL_STEPS])
    resumed = train_in_runs(numpy_estimator, tmp_path / "resumed", [stop_at, TOTAL_STEPS - stop_at])
    assert resumed.global_step == whole.global_step == TOTAL_STEPS
    np.testing.assert_array_equal(resumed.model.w.numpy(), whole.model.w.numpy())
    assert resumed.state["schedule"].lr.numpy() == whole.state["schedule"].lr.numpy()
    assert resumed.state["rng"].bit_generator.state == whole.state["rng"].bit_generator.state


def test_without_state_the_resumed_run_differs(tmp_path: Path) -> None:
    # The control of the test above: objects left out of state restart on resume.
    whole = train_in_runs(numpy_estimator, tmp_path / "whole", [TOTAL_STEPS])
    resumed = train_in_runs(
        lambda d: numpy_estimator(d, names=()), tmp_path / "resumed", [4, TOTAL_STEPS - 4]
    )
    assert not np.array_equal(resumed.model.w.numpy(), whole.model.w.numpy())


def test_state_is_saved_under_its_names(tmp_path: Path) -> None:
    est = numpy_estimator(tmp_path)
    est.train(regression_input, steps=2)
    names = [name for name, _ in ps.checkpoint.list_variables(est.latest_checkpoint())]
    assert "schedule/lr/.ATTRIBUTES/VARIABLE_VALUE" in names
    assert "model/w/.ATTRIBUTES/VARIABLE_VALUE" in names
    assert sorted(est.state) == ["rng", "schedule"]
    with pytest.raises(TypeError):
        est.state["other"] = Schedule()  # type: ignore[index]


# ------------------------------------------------------------------ torch objects
def torch_estimator(model_dir: Path) -> Estimator:
    """nn.Linear + AdamW + OneCycleLR, the scheduler saved through ``state``."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=0.1, total_steps=TOTAL_STEPS + 5
    )

    def train_step(model: Any, x: np.ndarray, y: np.ndarray) -> Any:
        optimizer.zero_grad()
        prediction = model(torch.from_numpy(x)).squeeze(-1)
        loss = torch.nn.functional.mse_loss(prediction, torch.from_numpy(y))
        loss.backward()
        optimizer.step()
        scheduler.step()
        return loss.detach()

    return Estimator(
        model,
        train_step,
        config=RunConfig(str(model_dir), save_checkpoints_steps=SAVE_EVERY),
        optimizer=optimizer,
        state={"scheduler": scheduler},
    )


@pytest.mark.parametrize("stop_at", [1, 4, 6, 9])
def test_torch_model_optimizer_scheduler_resume_bit_for_bit(tmp_path: Path, stop_at: int) -> None:
    torch = pytest.importorskip("torch")
    whole = train_in_runs(torch_estimator, tmp_path / "whole", [TOTAL_STEPS])
    resumed = train_in_runs(torch_estimator, tmp_path / "resumed", [stop_at, TOTAL_STEPS - stop_at])
    assert resumed.global_step == whole.global_step == TOTAL_STEPS
    assert torch.equal(resumed.model.weight, whole.model.weight)
    assert torch.equal(resumed.model.bias, whole.model.bias)
    assert resumed.state["scheduler"].get_last_lr() == whole.state["scheduler"].get_last_lr()
    assert resumed.state["scheduler"].last_epoch == TOTAL_STEPS


def _linear(torch: Any) -> Any:
    layer = torch.nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
    return layer


def _make_module(torch: Any) -> tuple[Any, Callable[[], None]]:
    layer = _linear(torch)

    def change() -> None:
        with torch.no_grad():
            layer.weight.add_(0.5)

    return layer, change


def _make_adamw(torch: Any) -> tuple[Any, Callable[[], None]]:
    layer = _linear(torch)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1)

    def change() -> None:
        optimizer.zero_grad()
        layer(torch.ones(1, 2)).sum().backward()
        optimizer.step()

    return optimizer, change


def _make_one_cycle(torch: Any) -> tuple[Any, Callable[[], None]]:
    optimizer = torch.optim.SGD(_linear(torch).parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1.0, total_steps=50)

    def change() -> None:
        optimizer.step()
        scheduler.step()

    return scheduler, change


def _make_grad_scaler(torch: Any) -> tuple[Any, Callable[[], None]]:
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)

    def change() -> None:
        scaler.scale(torch.ones(()))  # creates the scale tensor
        scaler.update(new_scale=float(scaler.get_scale()) / 2)

    return scaler, change


def _make_generator(torch: Any) -> tuple[Any, Callable[[], None]]:
    generator = torch.Generator().manual_seed(0)
    return generator, lambda: torch.rand(3, generator=generator)


def _state_of(obj: Any) -> Any:
    return obj.get_state() if hasattr(obj, "get_state") else obj.state_dict()


def _assert_same(torch: Any, actual: Any, expected: Any) -> None:
    if isinstance(expected, dict):
        assert sorted(actual) == sorted(expected)
        for key in expected:
            _assert_same(torch, actual[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            _assert_same(torch, a, e)
    elif isinstance(expected, torch.Tensor):
        assert torch.equal(torch.as_tensor(actual), expected)
    else:
        assert actual == expected


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(_make_module, id="nn.Linear"),
        pytest.param(_make_adamw, id="AdamW"),
        pytest.param(_make_one_cycle, id="OneCycleLR"),
        pytest.param(_make_grad_scaler, id="GradScaler"),
        pytest.param(_make_generator, id="torch.Generator"),
    ],
)
def test_torch_state_objects_round_trip(tmp_path: Path, make: Callable[[Any], Any]) -> None:
    torch = pytest.importorskip("torch")
    obj, change = make(torch)
    try:
        ps.checkpoint.Checkpoint(probe=obj)
    except ValueError:
        kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
        pytest.skip(f"the checkpoint layer can't track a {kind} yet (it has no adapter for it)")

    def train_step(model: Linear, x: Any, y: Any) -> None:
        change()

    config = RunConfig(str(tmp_path), save_checkpoints_steps=100)
    Estimator(Linear(), train_step, config=config, state={"obj": obj}).train(
        regression_input, steps=3
    )
    fresh, _ = make(torch)
    before = copy.deepcopy(_state_of(fresh))  # a module's state_dict() aliases it
    est = Estimator(Linear(), train_step, config=config, state={"obj": fresh})
    est.train(regression_input, max_steps=3)  # restores, then has nothing to run
    _assert_same(torch, _state_of(fresh), _state_of(obj))
    with pytest.raises(AssertionError):
        _assert_same(torch, _state_of(fresh), before)


# ------------------------------------------------------------------ objects added or dropped
def test_checkpoint_without_the_object_restores_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = numpy_estimator(tmp_path, names=())
    first.train(regression_input, steps=3)
    est = numpy_estimator(tmp_path)
    schedule = est.state["schedule"]
    schedule.lr.assign(0.25)
    with caplog.at_level(logging.WARNING, logger="pipestate.training"):
        est.train(regression_input, max_steps=3)  # restores, runs nothing
    assert "holds no 'schedule', 'rng'" in caplog.text
    assert est.global_step == 3
    np.testing.assert_array_equal(est.model.w.numpy(), first.model.w.numpy())
    assert schedule.lr.numpy() == 0.25  # kept its state
    # Trained on, it is saved from the next checkpoint on.
    est.train(regression_input, steps=2)
    assert est.latest_checkpoint() == str(tmp_path / "model.ckpt-5")
    later = numpy_estimator(tmp_path)
    later.train(regression_input, max_steps=5)
    assert later.state["schedule"].lr.numpy() == schedule.lr.numpy() == 0.25 * 0.9**2
    assert later.state["rng"].bit_generator.state == est.state["rng"].bit_generator.state


def test_checkpoint_with_an_object_no_longer_passed_restores_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = numpy_estimator(tmp_path)
    first.train(regression_input, steps=3)
    for names in [("schedule",), ()]:
        est = numpy_estimator(tmp_path, names=names)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="pipestate.training"):
            est.train(regression_input, max_steps=3)  # restores, runs nothing
        assert "Unresolved object in checkpoint: rng" in caplog.text
        assert ("Unresolved object in checkpoint: schedule" in caplog.text) == (not names)
        assert est.global_step == 3
        np.testing.assert_array_equal(est.model.w.numpy(), first.model.w.numpy())
        assert sorted(est.state) == sorted(names)


def test_a_changed_object_still_fails_to_restore(tmp_path: Path) -> None:
    numpy_estimator(tmp_path).train(regression_input, steps=2)
    other = ps.checkpoint.AutoTrackable()
    other.momentum = ps.Variable(np.zeros(2))  # not what "schedule" saved
    est = Estimator(
        Linear(),
        lambda model, x, y: None,
        config=RunConfig(str(tmp_path), save_checkpoints_steps=100),
        state={"schedule": other},
    )
    with pytest.raises(AssertionError, match="schedule/momentum"):
        est.train(regression_input, steps=1)


# ------------------------------------------------------------------ validation
def _estimator(model_dir: Path, state: Any) -> Estimator:
    return Estimator(Linear(), lambda model, x, y: None, model_dir=model_dir, state=state)


@pytest.mark.parametrize(
    ("state", "error", "match"),
    [
        pytest.param([("schedule", Schedule())], TypeError, "mapping of name", id="not-a-mapping"),
        pytest.param({1: Schedule()}, TypeError, "must be str, got 1", id="int-key"),
        pytest.param({"lr-schedule": Schedule()}, ValueError, "'lr-schedule'", id="dash"),
        pytest.param({"2nd": Schedule()}, ValueError, "'2nd' must be an identifier", id="digit"),
        pytest.param({"_lr": Schedule()}, ValueError, "'_lr' must be an identifier", id="under"),
        pytest.param({"model": Schedule()}, ValueError, "'model' is the name", id="model"),
        pytest.param({"optimizer": Schedule()}, ValueError, "optimizer=", id="optimizer"),
        pytest.param({"global_step": Schedule()}, ValueError, "global step", id="global-step"),
        pytest.param({"save_counter": Schedule()}, ValueError, "Checkpoint.save_counter", id="sc"),
        pytest.param({"restore": Schedule()}, ValueError, "Checkpoint.restore", id="method"),
        pytest.param({"lr": 0.1}, TypeError, r"state\['lr'\].*Variable", id="plain-value"),
        pytest.param({"lr": None}, TypeError, r"state\['lr'\].*drop the key", id="none"),
        pytest.param({"lr": object()}, TypeError, r"state\['lr'\].*state_dict", id="object"),
    ],
)
def test_state_validation(tmp_path: Path, state: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        _estimator(tmp_path, state)


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param(ps.Variable(np.zeros(2)), id="Variable"),
        pytest.param(Schedule(), id="AutoTrackable"),
        pytest.param(np.random.default_rng(0), id="numpy-Generator"),
        pytest.param(np.random.RandomState(0), id="numpy-RandomState"),
    ],
)
def test_state_accepts_trackables(tmp_path: Path, obj: Any) -> None:
    assert _estimator(tmp_path, {"obj": obj}).state["obj"] is obj
