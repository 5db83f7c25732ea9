"""Checkpoint and CheckpointableSaver: saving, writing, restoring and adapters."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipestate.checkpoint import (
    AutoTrackable,
    Checkpoint,
    CheckpointableSaver,
    CheckpointLoadStatus,
    CheckpointOptions,
    TrackableSaver,
    Variable,
)
from pipestate.checkpoint._storage import Storage
from pipestate.errors import CheckpointMismatchError, NotFoundError

from ._helpers import Model, read_index, rewrite_index


class Stateful:
    """A plain Python object following the Stateful protocol."""

    def __init__(self, step: int = 0) -> None:
        self.step = step
        self.weights = np.arange(3.0) * step
        self.schedule = {"lr": 0.1 * step, "milestones": (10, 20)}

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "weights": self.weights, "schedule": self.schedule}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = state["step"]
        self.weights = state["weights"]
        self.schedule = state["schedule"]


def test_save_increments_counter_and_updates_state_file(tmp_path: Path) -> None:
    ckpt = Checkpoint(model=Model())
    prefix = str(tmp_path / "run" / "ckpt")
    assert ckpt.save(prefix) == f"{prefix}-1"
    assert ckpt.save(prefix) == f"{prefix}-2"
    assert int(ckpt.save_counter.numpy()) == 2
    assert (tmp_path / "run" / "checkpoint").read_text().splitlines()[:2] == [
        'model_checkpoint_path: "ckpt-2"',
        'all_model_checkpoint_paths: "ckpt-2"',
    ]
    restored = Checkpoint(model=Model())
    restored.restore(f"{prefix}-1").assert_consumed()
    assert int(restored.save_counter.numpy()) == 1


def test_write_writes_exactly_the_prefix(tmp_path: Path) -> None:
    ckpt = Checkpoint(model=Model(1))
    assert ckpt.write(str(tmp_path / "w")) == str(tmp_path / "w")
    assert (tmp_path / "w.index").exists()
    assert not (tmp_path / "checkpoint").exists()
    assert (
        "save_counter" not in read_index(str(tmp_path / "w"))["checkpoint"]["nodes"][0]["children"]
    )
    model = Model(2)
    Checkpoint(model=model).read(str(tmp_path / "w")).assert_consumed()
    np.testing.assert_array_equal(model.out.numpy(), Model(1).out.numpy())


def test_read_does_not_expect_save_counter(tmp_path: Path) -> None:
    saved = Checkpoint(model=Model(1)).save(str(tmp_path / "s"))
    Checkpoint(model=Model(2)).read(saved).assert_consumed()
    written = Checkpoint(model=Model(1)).write(str(tmp_path / "w"))
    reader = Checkpoint(model=Model(2))
    reader.save_counter  # noqa: B018 - the counter exists but the file has none
    reader.read(written).assert_consumed()
    with pytest.raises(AssertionError, match="not assigned a value from checkpoint: save_counter"):
        Checkpoint(model=Model(2)).restore(written).assert_consumed()


def test_saved_counter_is_restored_when_created_later_by_read(tmp_path: Path) -> None:
    ckpt = Checkpoint(model=Model())
    ckpt.save(str(tmp_path / "c"))
    path = ckpt.save(str(tmp_path / "c"))
    fresh = Checkpoint(model=Model())
    fresh.read(path).assert_consumed()
    assert int(fresh.save_counter.numpy()) == 2  # deferred restoration on creation
    assert fresh.save(str(tmp_path / "c")).endswith("c-3")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param(
            {"x": object()},
            r"Checkpoint was expecting a trackable object .* for keyword argument 'x', "
            r"got <object object at .*> of type object",
            id="object",
        ),
        pytest.param(
            {"f": len},
            "got <built-in function len> of type builtin_function_or_method",
            id="function",
        ),
        pytest.param({"s": {1, 2}}, "got {1, 2} of type set", id="set"),
        pytest.param({"save": Variable(1.0)}, "'save' would shadow Checkpoint.save", id="shadow"),
        pytest.param({"root": None, "restore": 1}, "'restore' would shadow", id="shadow-restore"),
        pytest.param({"_x": 1}, "'_x' starts with '_'.* drop the underscore", id="underscore"),
    ],
)
def test_non_trackable_values_raise(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Checkpoint(**kwargs)


def test_non_trackable_root_raises() -> None:
    with pytest.raises(
        ValueError, match=r"expecting a trackable object .* for 'root', got 5 of type int"
    ):
        Checkpoint(root=5)
    with pytest.raises(
        ValueError, match=r"CheckpointableSaver was expecting .* got 'x' of type str"
    ):
        CheckpointableSaver("x")


def test_root_checkpoint_saves_root_with_attached_dependencies(tmp_path: Path) -> None:
    model = Model(1)
    ckpt = Checkpoint(root=model, step=5)
    path = ckpt.save(str(tmp_path / "r"))
    root = read_index(path)["checkpoint"]["nodes"][0]
    assert root["kind"] == "Model"
    assert set(root["children"]) == {"dense", "out", "step", "save_counter"}
    assert "step" not in model._trackable_children()
    other = Model(2)
    restored = Checkpoint(root=other, step=0)
    restored.restore(path).assert_consumed()
    assert restored.step == 5
    np.testing.assert_array_equal(other.out.numpy(), model.out.numpy())
    # The same graph saved without the Checkpoint wrapper matches too.
    CheckpointableSaver(Model(3)).restore(path).expect_partial().assert_existing_objects_matched()


def test_root_with_conflicting_keyword_raises() -> None:
    model = Model()
    with pytest.raises(ValueError, match=r"keyword argument 'out' because root.out already exists"):
        Checkpoint(root=model, out=Variable(1.0))
    Checkpoint(root=model, out=model.out)  # the same object is fine


def test_checkpointable_saver_numbers_only_when_asked(tmp_path: Path) -> None:
    saver = CheckpointableSaver(Model())
    assert saver.save(str(tmp_path / "m")) == str(tmp_path / "m")
    assert saver.save(str(tmp_path / "m"), checkpoint_number=7) == str(tmp_path / "m-7")
    assert saver.save(str(tmp_path / "m"), checkpoint_number=np.int64(8)).endswith("m-8")
    assert not (tmp_path / "checkpoint").exists()
    status = TrackableSaver(Model()).restore(str(tmp_path / "m-7"))
    assert isinstance(status, CheckpointLoadStatus)
    status.assert_consumed()
    assert TrackableSaver is CheckpointableSaver


@pytest.mark.parametrize(
    ("number", "error", "match"),
    [
        pytest.param(-1, ValueError, "checkpoint_number must be >= 0, got -1", id="negative"),
        pytest.param(1.5, TypeError, "must be an int or None, got 1.5 of type float", id="float"),
        pytest.param(True, TypeError, "must be an int or None, got True", id="bool"),
    ],
)
def test_checkpoint_number_is_validated(
    tmp_path: Path, number: Any, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        CheckpointableSaver(Model()).save(str(tmp_path / "m"), checkpoint_number=number)


@pytest.mark.parametrize(
    ("prefix", "error", "match"),
    [
        pytest.param(
            3, TypeError, "file_prefix must be a str or os.PathLike .* got 3 of type int", id="int"
        ),
        pytest.param("", ValueError, "file_prefix must not be empty", id="empty"),
        pytest.param(b"x", TypeError, "got b'x' of type bytes", id="bytes"),
    ],
)
def test_prefix_is_validated(prefix: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        Checkpoint().save(prefix)


def test_pathlike_prefix(tmp_path: Path) -> None:
    path = Checkpoint(step=1).save(tmp_path / "p")
    assert path == f"{tmp_path / 'p'}-1"


def test_missing_prefix_suggests_numbered_checkpoint(tmp_path: Path) -> None:
    ckpt = Checkpoint(step=1)
    ckpt.save(str(tmp_path / "ckpt"))
    ckpt.save(str(tmp_path / "ckpt"))
    prefix = str(tmp_path / "ckpt")
    with pytest.raises(NotFoundError, match=re.escape(f"did you mean {prefix}-2?")):
        ckpt.restore(prefix)
    with pytest.raises(NotFoundError, match=r"Pass the path save\(\) returned, e.g. 'ckpt-1'"):
        ckpt.restore(str(tmp_path / "other"))
    with pytest.raises(FileNotFoundError, match=r"is a directory, .* names 'ckpt-2' as the latest"):
        ckpt.restore(str(tmp_path))


def test_index_path_is_accepted_as_prefix(tmp_path: Path) -> None:
    path = Checkpoint(step=1).save(str(tmp_path / "c"))
    ckpt = Checkpoint(step=0)
    ckpt.restore(path + ".index").assert_consumed()
    assert ckpt.step == 1


def test_python_state_round_trip(tmp_path: Path) -> None:
    ckpt = Checkpoint(epoch=3, name="run", history=[0.5, 0.25], config={"lr": 0.1, 1: (2, 3)})
    path = ckpt.save(str(tmp_path / "p"))
    ckpt.epoch, ckpt.name, ckpt.history, ckpt.config = 0, "", [], {}
    ckpt.restore(path).assert_consumed()
    assert (ckpt.epoch, ckpt.name, ckpt.history, ckpt.config) == (
        3,
        "run",
        [0.5, 0.25],
        {"lr": 0.1, 1: (2, 3)},
    )


def test_rng_round_trips(tmp_path: Path) -> None:
    gen, legacy, py = np.random.default_rng(1), np.random.RandomState(2), random.Random(3)
    mt = np.random.Generator(np.random.MT19937(4))
    py.gauss(0, 1)  # leaves a cached gauss_next in the state
    ckpt = Checkpoint(gen=gen, legacy=legacy, py=py, mt=mt)
    path = ckpt.save(str(tmp_path / "rng"))
    expected = (gen.random(3), legacy.rand(3), [py.gauss(0, 1), py.random()], mt.integers(0, 99, 3))
    gen2, legacy2, py2 = np.random.default_rng(9), np.random.RandomState(9), random.Random(9)
    mt2 = np.random.Generator(np.random.MT19937(9))
    Checkpoint(gen=gen2, legacy=legacy2, py=py2, mt=mt2).restore(path).assert_consumed()
    got = (gen2.random(3), legacy2.rand(3), [py2.gauss(0, 1), py2.random()], mt2.integers(0, 99, 3))
    for a, b in zip(expected, got):
        np.testing.assert_array_equal(a, b)


def test_generator_with_other_bit_generator_is_refused(tmp_path: Path) -> None:
    path = Checkpoint(gen=np.random.default_rng(1)).save(str(tmp_path / "g"))
    other = np.random.Generator(np.random.Philox(1))
    with pytest.raises(
        CheckpointMismatchError, match="cannot restore a Philox generator from saved 'PCG64'"
    ):
        Checkpoint(gen=other).restore(path)


def test_system_random_is_not_trackable() -> None:
    with pytest.raises(ValueError, match="of type SystemRandom"):
        Checkpoint(rng=random.SystemRandom())


def test_stateful_protocol_objects_are_adapted(tmp_path: Path) -> None:
    obj = Stateful(step=4)
    path = Checkpoint(trainer=obj).save(str(tmp_path / "s"))
    assert read_index(path)["checkpoint"]["nodes"][1]["kind"] == "Stateful"
    fresh = Stateful()
    Checkpoint(trainer=fresh).restore(path).assert_consumed()
    assert fresh.step == 4
    np.testing.assert_array_equal(fresh.weights, np.arange(3.0) * 4)
    assert fresh.schedule == {"lr": 0.4, "milestones": (10, 20)}
    CheckpointableSaver(Stateful()).save(str(tmp_path / "root"))  # as a root too


def test_stateful_with_bad_state_dict_is_refused(tmp_path: Path) -> None:
    class Bad(Stateful):
        def state_dict(self) -> dict[str, Any]:
            return {1: 2}  # type: ignore[dict-item]

    with pytest.raises(TypeError, match=r"Bad.state_dict\(\) must return a mapping with str keys"):
        Checkpoint(bad=Bad()).save(str(tmp_path / "b"))


def test_save_time_check_can_refuse_the_save(tmp_path: Path) -> None:
    class Refuses(AutoTrackable):
        def _serialize_to_values(self) -> dict[str, Any]:
            raise ValueError("external state: refusing to save")

    ckpt = Checkpoint(model=Model(), it=Refuses())
    with pytest.raises(ValueError, match="refusing to save"):
        ckpt.save(str(tmp_path / "x"))
    assert list(tmp_path.iterdir()) == []
    assert int(ckpt.save_counter.numpy()) == 0


def test_shared_objects_are_saved_once(tmp_path: Path) -> None:
    shared = Variable(np.ones(2))
    root = AutoTrackable()
    root.a = shared
    root.b = shared
    path = CheckpointableSaver(root).save(str(tmp_path / "x"))
    nodes = read_index(path)["checkpoint"]["nodes"]
    assert nodes[0]["children"]["a"] == nodes[0]["children"]["b"]
    fresh = AutoTrackable()
    fresh.a = fresh.b = Variable(np.zeros(2))
    CheckpointableSaver(fresh).restore(path).assert_consumed()
    assert fresh.a.numpy().tolist() == [1.0, 1.0]


def test_cycles_in_the_graph_are_fine(tmp_path: Path) -> None:
    a, b = AutoTrackable(), AutoTrackable()
    a.b, b.a, a.v = b, a, Variable(3.0)
    path = CheckpointableSaver(a).save(str(tmp_path / "x"))
    a2, b2 = AutoTrackable(), AutoTrackable()
    a2.b, b2.a, a2.v = b2, a2, Variable(0.0)
    CheckpointableSaver(a2).restore(path).assert_consumed()
    assert float(a2.v.numpy()) == 3.0


def test_reprs(tmp_path: Path) -> None:
    ckpt = Checkpoint(step=1)
    assert repr(ckpt) == "Checkpoint(dependencies=[step])"
    assert repr(Checkpoint(root=Model(), x=1)).startswith(
        "Checkpoint(root=Model(dependencies=[dense, out])"
    )
    assert (
        repr(CheckpointableSaver(Model()))
        == "CheckpointableSaver(root=Model(dependencies=[dense, out]))"
    )
    status = ckpt.restore(ckpt.save(str(tmp_path / "r")))
    assert re.fullmatch(r"CheckpointLoadStatus\('.*r-1', matched 3 of 3 objects\)", repr(status))


def test_torch_module_and_optimizer(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    path = Checkpoint(net=net, opt=opt).save(str(tmp_path / "t"))
    net2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.Adam(net2.parameters(), lr=0.5)
    Checkpoint(net=net2, opt=opt2).restore(path).assert_consumed()
    assert torch.equal(net.weight, net2.weight)
    assert opt2.param_groups[0]["lr"] == 0.01


def test_dataset_iterator_is_a_dependency_through_its_state_dict(tmp_path: Path) -> None:
    import pipestate as ps

    dataset = ps.Dataset.range(20).global_shuffle(seed=3).batch(4)
    iterator = iter(dataset)
    next(iterator)
    path = Checkpoint(iterator=iterator).save(str(tmp_path / "it"))
    expected = next(iterator)
    fresh = iter(dataset)
    Checkpoint(iterator=fresh).restore(path).assert_consumed()
    np.testing.assert_array_equal(next(fresh), expected)


def test_torch_shape_mismatch_is_a_typed_error(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = CheckpointableSaver(torch.nn.Linear(3, 2)).save(str(tmp_path / "lin"))
    with pytest.raises(CheckpointMismatchError, match=r"Linear.load_state_dict\(\) refused"):
        CheckpointableSaver(torch.nn.Linear(4, 2)).restore(path)


_OVERWRITE_WHILE_MAPPED = """
import sys
import numpy as np
from pipestate.checkpoint import AutoTrackable, CheckpointableSaver, Variable

prefix = sys.argv[1]
root = AutoTrackable()
root.a = Variable(np.arange(10.0))
root.b = Variable(np.arange(100_000.0))
CheckpointableSaver(root).save(prefix)
fresh = AutoTrackable()
fresh.a = Variable(np.zeros(10))
status = CheckpointableSaver(fresh).restore(prefix)  # maps the shard; 'b' waits
small = AutoTrackable()
small.a = Variable(np.arange(1.0))
CheckpointableSaver(small).save(prefix)  # the same prefix, a much smaller shard
fresh.b = Variable(np.zeros(100_000))  # deferred: read from the shard mapped before
assert fresh.b.numpy()[-1] == 99_999.0
status.assert_consumed()
"""


def test_overwriting_a_checkpoint_being_restored_does_not_crash(tmp_path: Path) -> None:
    """Rewriting a shard in place under a live memory map would kill the process (SIGBUS)."""
    done = subprocess.run(
        [sys.executable, "-c", _OVERWRITE_WHILE_MAPPED, str(tmp_path / "ckpt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, (done.returncode, done.stderr)


def test_leftovers_of_a_crashed_save_are_removed(tmp_path: Path) -> None:
    saver = CheckpointableSaver(Model())
    stale = tmp_path / f".ckpt.index.tmp-{'0' * 32}"
    stale.write_bytes(b"half an index")
    other = tmp_path / f".other.index.tmp-{'0' * 32}"  # another prefix's: not ours to remove
    other.write_bytes(b"x")
    saver.save(str(tmp_path / "ckpt"))
    assert not stale.exists()
    assert other.exists()


def test_index_is_committed_after_the_shards_are_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync_dir, real_write_atomic = Storage.fsync_dir, Storage.write_atomic

    def fsync_dir(self: Storage, directory: str) -> None:
        events.append("fsync_dir")
        real_fsync_dir(self, directory)

    def write_atomic(self: Storage, path: str, data: bytes, *, fsync: bool) -> None:
        events.append(f"write {Path(path).name}")
        real_write_atomic(self, path, data, fsync=fsync)

    monkeypatch.setattr(Storage, "fsync_dir", fsync_dir)
    monkeypatch.setattr(Storage, "write_atomic", write_atomic)
    ckpt = Checkpoint(model=Model())
    ckpt.save(str(tmp_path / "ckpt"))
    assert events == [
        "fsync_dir",  # the shards' directory entries
        "write ckpt-1.index",
        "fsync_dir",
        "write checkpoint",
        "fsync_dir",
    ]
    events.clear()
    ckpt.write(str(tmp_path / "ckpt-1"))  # replaces a checkpoint: its index goes first
    assert events[:3] == ["fsync_dir", "fsync_dir", "write ckpt-1.index"]
    events.clear()
    ckpt.save(str(tmp_path / "ckpt"), options=CheckpointOptions(fsync=False))
    assert events == ["write ckpt-2.index", "write checkpoint"]


@pytest.mark.parametrize(
    ("make", "state"),
    [
        pytest.param(
            lambda: random.Random(1), {"array": "rng/.ATTRIBUTES/STATE/internal"}, id="py"
        ),
        pytest.param(lambda: random.Random(1), {"dict": {"version": 3}}, id="py-missing"),
        pytest.param(lambda: np.random.default_rng(1), [1, 2], id="generator"),
        pytest.param(  # found by fuzzing: compared an array with a str
            lambda: np.random.default_rng(1),
            {"dict": {"bit_generator": {"array": "w/.ATTRIBUTES/VARIABLE_VALUE"}}},
            id="generator-name-not-a-str",
        ),
        pytest.param(lambda: np.random.RandomState(1), {"tuple": [1]}, id="random-state"),
    ],
)
def test_malformed_rng_state_is_a_typed_error(tmp_path: Path, make: Any, state: Any) -> None:
    """Found by fuzzing: a random.Random state swapped for an array raised IndexError."""
    path = Checkpoint(rng=make(), w=Variable(np.zeros(2))).save(str(tmp_path / "c"))
    rng_node = read_index(path)["checkpoint"]["nodes"][0]["children"]["rng"]
    rewrite_index(
        path, lambda body: body["nodes"][rng_node]["attributes"].__setitem__("STATE", state)
    )
    with pytest.raises(CheckpointMismatchError, match="state"):
        Checkpoint(rng=make(), w=Variable(np.zeros(2))).restore(path)
