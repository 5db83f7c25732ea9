"""Estimator: training NumPy and torch models, steps semantics, resume, evaluate, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pipestate as ps
from pipestate.training import Estimator, RunConfig, SessionRunHook
from tests.training.conftest import Recorder, record_step, recorder_estimator

TRUE_W = np.array([2.0, -1.0, 0.5])


def regression_data(n: int = 256) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 3))
    return x, x @ TRUE_W + 0.3


class Linear(ps.checkpoint.AutoTrackable):
    def __init__(self) -> None:
        self.w = ps.Variable(np.zeros(3))
        self.b = ps.Variable(np.zeros(()))


def sgd_step(model: Linear, features: np.ndarray, labels: np.ndarray) -> float:
    error = features @ model.w.numpy() + float(model.b.numpy()) - labels
    model.w.assign_sub(0.1 * features.T @ error / len(labels))
    model.b.assign_sub(0.1 * error.mean())
    return float((error**2).mean())


def mse(model: Linear, features: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    error = features @ model.w.numpy() + float(model.b.numpy()) - labels
    return {"loss": float((error**2).mean()), "mae": float(np.abs(error).mean())}


def regression_input(epochs: int | None = None) -> Any:
    x, y = regression_data()
    return lambda: ps.Dataset.from_tensor_slices((x, y)).repeat(epochs).batch(32)


def test_numpy_model_trains_and_resumes(tmp_path: Path) -> None:
    config = RunConfig(str(tmp_path), save_checkpoints_steps=50)
    est = Estimator(Linear(), sgd_step, mse, config=config)
    before = est.evaluate(regression_input(1))
    assert before["global_step"] == 0
    assert before["loss"] > 1.0
    est.train(regression_input(), steps=150)
    after = est.evaluate(regression_input(1))
    assert after["loss"] < 1e-3
    assert after["mae"] < 0.03
    assert after["global_step"] == 150
    # A new Estimator (a restarted job) picks up the model and the global step.
    est2 = Estimator(Linear(), sgd_step, mse, config=config)
    assert est2.latest_checkpoint() == str(tmp_path / "model.ckpt-150")
    assert est2.evaluate(regression_input(1)) == after
    np.testing.assert_array_equal(est2.model.w.numpy(), est.model.w.numpy())
    est2.train(regression_input(), max_steps=160)
    assert est2.global_step == 160


def test_torch_model_trains_and_resumes(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    _x, _y = regression_data()

    def make() -> tuple[Any, Any, Estimator]:
        model = torch.nn.Linear(3, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)

        def train_step(model: Any, features: np.ndarray, labels: np.ndarray) -> Any:
            optimizer.zero_grad()
            prediction = model(torch.from_numpy(features).float()).squeeze(-1)
            loss = torch.nn.functional.mse_loss(prediction, torch.from_numpy(labels).float())
            loss.backward()
            optimizer.step()
            return loss.detach()

        def eval_step(model: Any, features: np.ndarray, labels: np.ndarray) -> Any:
            with torch.no_grad():
                prediction = model(torch.from_numpy(features).float()).squeeze(-1)
                return torch.nn.functional.mse_loss(prediction, torch.from_numpy(labels).float())

        config = RunConfig(str(tmp_path), save_checkpoints_steps=20)
        return (
            model,
            optimizer,
            Estimator(model, train_step, eval_step, config=config, optimizer=optimizer),
        )

    model, optimizer, est = make()
    est.train(regression_input(), steps=60)
    metrics = est.evaluate(regression_input(1))
    assert metrics["loss"] < 1e-2
    assert metrics["global_step"] == 60
    model2, optimizer2, est2 = make()
    assert est2.evaluate(regression_input(1)) == metrics
    torch.testing.assert_close(model2.weight, model.weight)
    momentum = optimizer.state_dict()["state"][0]["momentum_buffer"]
    torch.testing.assert_close(optimizer2.state_dict()["state"][0]["momentum_buffer"], momentum)
    est2.train(regression_input(), steps=5)
    assert est2.global_step == 65


def test_steps_are_added_max_steps_is_total(tmp_path: Path) -> None:
    est, model = recorder_estimator(tmp_path)
    est.train(lambda: ps.Dataset.range(100), steps=3)
    est.train(lambda: ps.Dataset.range(100), steps=3)
    assert est.global_step == 6
    est.train(lambda: ps.Dataset.range(100), max_steps=8)
    assert est.global_step == 8
    est.train(lambda: ps.Dataset.range(100), max_steps=5)  # already past: nothing runs
    assert est.global_step == 8
    assert len(model.seen) == 8


def test_max_steps_skips_without_calling_input_fn(tmp_path: Path) -> None:
    est, _ = recorder_estimator(tmp_path)
    est.train(lambda: ps.Dataset.range(10), steps=4)

    def input_fn() -> ps.Dataset:
        raise AssertionError("input_fn must not be called")

    est.train(input_fn, max_steps=4)
    assert est.global_step == 4


def test_training_stops_at_input_end(tmp_path: Path) -> None:
    est, model = recorder_estimator(tmp_path)
    est.train(lambda: ps.Dataset.range(4))
    assert model.seen == [0, 1, 2, 3]
    assert est.global_step == 4
    assert est.latest_checkpoint() == str(tmp_path / "model.ckpt-4")


def test_features_and_labels(tmp_path: Path) -> None:
    got: list[tuple[Any, Any]] = []

    def step(model: Recorder, features: Any, labels: Any) -> None:
        got.append((features, labels))

    est = Estimator(Recorder(), step, model_dir=str(tmp_path))
    est.train(lambda: ps.Dataset.range(2).map(lambda x: (x, x * 10)))
    est.train(lambda: ps.Dataset.range(1).map(lambda x: {"x": x}))
    est.train(lambda: ps.Dataset.range(1).map(lambda x: (x, x, x)))
    assert [(int(f), int(lab)) for f, lab in got[:2]] == [(0, 0), (1, 10)]
    assert got[2][0] == {"x": 0}
    assert got[2][1] is None
    assert isinstance(got[3][0], tuple)
    assert len(got[3][0]) == 3
    assert got[3][1] is None


def test_input_fn_may_return_an_iterator(tmp_path: Path) -> None:
    est, model = recorder_estimator(tmp_path)
    it = iter(ps.Dataset.range(10))
    est.train(lambda: it, steps=2)
    est.train(lambda: it, steps=2)
    assert model.seen == [0, 1, 2, 3]
    assert int(next(it)) == 4  # not closed: the caller owns it


def test_iterators_are_in_the_session(tmp_path: Path) -> None:
    sessions: list[ps.training.Session] = []

    class Spy(SessionRunHook):
        def after_create_session(self, session: ps.training.Session, coord: Any) -> None:
            sessions.append(session)

    est, model = recorder_estimator(tmp_path)
    est.train(lambda: ps.Dataset.range(5), hooks=[Spy()], steps=1)
    (session,) = sessions
    (iterator,) = session.iterators
    assert isinstance(iterator, ps.data.DatasetIterator)
    assert session.model is model
    assert session.checkpoint is est.checkpoint
    with pytest.raises(RuntimeError, match="closed"):
        next(iterator)  # the runner closes the iterators it created


def test_model_checkpoint_holds_model_and_global_step(tmp_path: Path) -> None:
    est, _ = recorder_estimator(tmp_path)
    est.train(lambda: ps.Dataset.range(5), steps=3)
    names = dict(ps.checkpoint.list_variables(str(tmp_path / "model.ckpt-3")))
    assert "global_step/.ATTRIBUTES/VARIABLE_VALUE" in names
    assert "model/total/.ATTRIBUTES/VARIABLE_VALUE" in names
    step = ps.checkpoint.load_variable(str(tmp_path / "model.ckpt-3"), "global_step")
    assert int(step) == 3


def test_checkpoints_disabled(tmp_path: Path) -> None:
    est, _model = recorder_estimator(
        tmp_path, save_checkpoints_steps=None, save_checkpoints_secs=None
    )
    est.train(lambda: ps.Dataset.range(5), steps=2)
    est.train(lambda: ps.Dataset.range(5), steps=2)
    assert est.global_step == 4
    assert os.listdir(tmp_path) == []


def test_default_config_saves_at_start_and_end(tmp_path: Path) -> None:
    est = Estimator(Recorder(), record_step, model_dir=str(tmp_path))
    est.train(lambda: ps.Dataset.range(5), steps=3)
    assert est.config.save_checkpoints_secs == 600
    assert ps.latest_checkpoint(str(tmp_path)) == str(tmp_path / "model.ckpt-3")
    assert (tmp_path / "model.ckpt-0.index").exists()


def test_own_checkpoint_saver_hook_replaces_the_runners(tmp_path: Path) -> None:
    est, _ = recorder_estimator(tmp_path)
    hook = ps.training.CheckpointSaverHook(str(tmp_path / "mine"), save_steps=1)
    est.train(lambda: ps.Dataset.range(5), hooks=[hook], steps=2)
    assert not any(name.startswith("model.ckpt") for name in os.listdir(tmp_path))
    assert (tmp_path / "mine" / "model.ckpt-2.index").exists()
    with pytest.raises(ValueError, match="already have a CheckpointSaverHook"):
        est.train(
            lambda: ps.Dataset.range(5),
            hooks=[hook],
            steps=1,
            saving_listeners=[ps.training.CheckpointSaverListener()],
        )


def test_saving_listeners(tmp_path: Path) -> None:
    saved: list[int] = []

    class Listener(ps.training.CheckpointSaverListener):
        def after_save(self, session: ps.training.Session, global_step_value: int) -> None:
            saved.append(global_step_value)

    est, _ = recorder_estimator(tmp_path, save_checkpoints_steps=2)
    est.train(lambda: ps.Dataset.range(10), steps=5, saving_listeners=[Listener()])
    assert saved == [0, 2, 4, 5]


def test_non_chief_does_not_save_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tf_config = {
        "cluster": {"chief": ["c:1"], "worker": ["w:1"]},
        "task": {"type": "worker", "index": 0},
    }
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    est, _ = recorder_estimator(tmp_path)
    est.train(lambda: ps.Dataset.range(5), steps=2)
    assert os.listdir(tmp_path) == []


def test_evaluate(tmp_path: Path) -> None:
    est = Estimator(
        Linear(), sgd_step, mse, config=RunConfig(str(tmp_path), save_checkpoints_steps=5)
    )
    est.train(regression_input(), steps=5)
    files_before = sorted(os.listdir(tmp_path))
    metrics = est.evaluate(regression_input(1), steps=3)
    assert set(metrics) == {"loss", "mae", "global_step"}
    assert metrics["global_step"] == 5
    x, y = regression_data()
    expected = np.mean([mse(est.model, x[i : i + 32], y[i : i + 32])["loss"] for i in (0, 32, 64)])
    assert metrics["loss"] == pytest.approx(expected)
    assert sorted(os.listdir(tmp_path)) == files_before  # nothing saved
    assert est.global_step == 5


def test_evaluate_restores_a_given_checkpoint(tmp_path: Path) -> None:
    est = Estimator(
        Linear(), sgd_step, mse, config=RunConfig(str(tmp_path), save_checkpoints_steps=5)
    )
    est.train(regression_input(), steps=10)
    early = est.evaluate(regression_input(1), checkpoint_path=str(tmp_path / "model.ckpt-5"))
    assert early["global_step"] == 5
    assert early["loss"] > est.evaluate(regression_input(1))["loss"]


def test_evaluate_number_result(tmp_path: Path) -> None:
    est, _ = recorder_estimator(tmp_path)
    est._eval_step = lambda model, x, y: np.float32(x)
    assert est.evaluate(lambda: ps.Dataset.range(4)) == {"loss": 1.5, "global_step": 0}


def test_evaluate_errors(tmp_path: Path) -> None:
    est, _ = recorder_estimator(tmp_path)
    with pytest.raises(ValueError, match="evaluate needs an eval_step"):
        est.evaluate(lambda: ps.Dataset.range(3))
    est._eval_step = lambda model, x, y: "bad"
    with pytest.raises(TypeError, match="must be a real number"):
        est.evaluate(lambda: ps.Dataset.range(3))
    est._eval_step = lambda model, x, y: 1.0
    with pytest.raises(ValueError, match="has no elements"):
        est.evaluate(lambda: ps.Dataset.range(0))
    with pytest.raises(ValueError, match=r"Must specify steps > 0, given: 0"):
        est.evaluate(lambda: ps.Dataset.range(3), steps=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        pytest.param(
            {"steps": 1, "max_steps": 2},
            ValueError,
            "Can not provide both steps and max_steps",
            id="both",
        ),
        pytest.param({"steps": 0}, ValueError, r"Must specify steps > 0, given: 0", id="steps-0"),
        pytest.param(
            {"max_steps": -1}, ValueError, r"Must specify max_steps > 0, given: -1", id="max-neg"
        ),
        pytest.param({"steps": 1.5}, TypeError, "steps must be an int", id="steps-float"),
        pytest.param(
            {"hooks": [object()]}, TypeError, "All hooks must be SessionRunHook", id="hooks"
        ),
    ],
)
def test_train_errors(
    tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    est, _ = recorder_estimator(tmp_path)
    with pytest.raises(error, match=match):
        est.train(lambda: ps.Dataset.range(3), **kwargs)


def test_bad_input_fn_and_loss(tmp_path: Path) -> None:
    est, _ = recorder_estimator(tmp_path)
    with pytest.raises(TypeError, match="input_fn must return a pipestate Dataset"):
        est.train(lambda: [1, 2, 3], steps=1)
    # As in TensorFlow's estimator tests: a ValueError too.
    with pytest.raises(ValueError, match="input_fn must return a pipestate Dataset"):
        est.train(lambda: {"features": 1}, steps=1)
    with pytest.raises(TypeError, match="input_fn must be callable"):
        est.train(ps.Dataset.range(3), steps=1)  # type: ignore[arg-type]
    est._train_step = lambda model, x, y: "high"
    with pytest.raises(TypeError, match="train_step's loss must be a real number"):
        est.train(lambda: ps.Dataset.range(3), steps=1)


def test_constructor_errors(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="model must be restorable in place"):
        Estimator({"w": np.zeros(3)}, record_step)
    with pytest.raises(TypeError, match="train_step must be callable"):
        Estimator(Recorder(), None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="eval_step must be callable"):
        Estimator(Recorder(), record_step, eval_step=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="optimizer must be"):
        Estimator(Recorder(), record_step, optimizer=object())
    with pytest.raises(TypeError, match=r"config must be a pipestate\.training\.RunConfig"):
        Estimator(Recorder(), record_step, config={"model_dir": "x"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="model_dir are set both in constructor and RunConfig"):
        Estimator(Recorder(), record_step, model_dir="a", config=RunConfig("b"))
    est = Estimator(
        Recorder(), record_step, model_dir=tmp_path, config=RunConfig(save_checkpoints_steps=3)
    )
    assert est.model_dir == str(tmp_path)
    assert est.config.save_checkpoints_steps == 3
    assert "Estimator(model=Recorder" in repr(est)


def test_temporary_model_dir(caplog: pytest.LogCaptureFixture) -> None:
    est = Estimator(Recorder(), record_step)
    assert os.path.isdir(est.model_dir)
    assert "temporary folder" in caplog.text
