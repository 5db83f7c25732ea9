"""Pytrees in object-graph checkpoints: saved as one object, restored as new pytrees."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest

jax = pytest.importorskip("jax")

import flax.struct  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import pipestate as ps  # noqa: E402
from pipestate.checkpoint import (  # noqa: E402
    Checkpoint,
    CheckpointManager,
    TrackableDict,
    restore_pytree,
)
from pipestate.errors import (  # noqa: E402
    CheckpointKeyError,
    CheckpointMismatchError,
    CorruptCheckpointError,
    NotFoundError,
)
from pipestate.jax import PyTreeSlot  # noqa: E402


class Pair(NamedTuple):
    first: Any
    second: Any


@flax.struct.dataclass
class FlaxState:
    step: Any
    params: Any
    name: str = flax.struct.field(pytree_node=False, default="model")


@dataclasses.dataclass
class Registered:
    kernel: Any
    bias: Any


jax.tree_util.register_dataclass(Registered, data_fields=["kernel", "bias"], meta_fields=[])


def _params() -> dict[str, Any]:
    return {"dense": {"kernel": jnp.arange(6.0).reshape(2, 3), "bias": jnp.ones(3)}}


def _trees() -> dict[str, Any]:
    return {
        "dict": _params(),
        "list": [jnp.arange(3), np.arange(4, dtype=np.int16), 2.5],
        "tuple": (jnp.zeros(2), (jnp.ones(1), 7)),
        "namedtuple": Pair(jnp.arange(2.0), {"x": jnp.int32(3)}),
        "adamw": optax.adamw(1e-3).init(_params()),
        "flax": FlaxState(step=jnp.array(4), params=_params()),
        "register_dataclass": Registered(kernel=jnp.eye(2), bias=jnp.zeros(2)),
        "scalar": jnp.array(11, dtype=jnp.int32),
        "bf16": {"w": jnp.linspace(-3, 3, 7, dtype=jnp.bfloat16)},
        "numpy_namedtuple": Pair(np.arange(3.0), np.float32(2)),
        "odd_keys": {"a/b.c": jnp.ones(1), "['x']": jnp.zeros(1), "": [{1: jnp.ones(2)}]},
    }


def _scrambled(tree: Any) -> Any:
    """The same structure, dtypes and shapes with other values."""

    def other(leaf: Any) -> Any:
        if isinstance(leaf, jax.Array):
            return jnp.full(leaf.shape, 9, leaf.dtype)
        if isinstance(leaf, (np.ndarray, np.generic)):
            return np.full(np.shape(leaf), 9, leaf.dtype)[()]
        return type(leaf)(9)

    return jax.tree.map(other, tree)


def _same(restored: Any, expected: Any) -> None:
    assert jax.tree.structure(restored) == jax.tree.structure(expected)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(expected), strict=True):
        assert type(got) is type(want)
        assert np.asarray(got).dtype == np.asarray(want).dtype
        assert np.asarray(got).tobytes() == np.asarray(want).tobytes()


@pytest.mark.parametrize("name", list(_trees()))
def test_pytrees_round_trip_bit_for_bit(tmp_path: Path, name: str) -> None:
    tree = _trees()[name]
    ckpt = Checkpoint(tree=tree)
    assert isinstance(ckpt._dependencies()["tree"], PyTreeSlot)
    path = ckpt.save(str(tmp_path / "ckpt"))
    fresh = Checkpoint(tree=_scrambled(tree))
    fresh.restore(path).assert_consumed()
    _same(fresh.tree, tree)


def test_plain_dicts_of_numpy_arrays_keep_their_tracking(tmp_path: Path) -> None:
    ckpt = Checkpoint(d={"a": np.ones(2)}, n=3)
    assert type(ckpt.d) is TrackableDict
    path = ckpt.save(str(tmp_path / "ckpt"))
    index = json.loads(Path(path + ".index").read_text())
    assert "PYTREE" not in json.dumps(index["checkpoint"]["nodes"])


def test_a_dict_holding_a_jax_array_is_one_pytree(tmp_path: Path) -> None:
    ckpt = Checkpoint(state={"w": jnp.ones(2), "n": np.arange(2)})
    path = ckpt.save(str(tmp_path / "ckpt"))
    index = json.loads(Path(path + ".index").read_text())
    node = index["checkpoint"]["nodes"][index["checkpoint"]["nodes"][0]["children"]["state"]]
    assert sorted(node["attributes"]) == ["PYTREE", "['n']", "['w']"]
    assert node["children"] == {}
    structure = node["attributes"]["PYTREE"]["dict"]
    assert structure["leaves"] == [["['n']", [["key", "n"]]], ["['w']", [["key", "w"]]]]


def test_restore_rebinds_to_a_new_tree_and_leaves_the_old_one(tmp_path: Path) -> None:
    params = _params()
    path = Checkpoint(params=params).save(str(tmp_path / "ckpt"))
    old = _scrambled(params)
    fresh = Checkpoint(params=old)
    fresh.restore(path).assert_consumed()
    assert fresh.params is not old
    assert float(old["dense"]["bias"][0]) == 9
    _same(fresh.params, params)
    # The restored tree is saved again.
    again = fresh.save(str(tmp_path / "again"))
    _same(restore_pytree(again, params, key="params"), params)


def test_deferred_restore_fills_the_attribute_when_it_is_assigned(tmp_path: Path) -> None:
    params = _params()
    path = Checkpoint(params=params, step=jnp.array(5)).save(str(tmp_path / "ckpt"))
    fresh = Checkpoint()
    status = fresh.restore(path)
    fresh.params = _scrambled(params)
    fresh.step = jnp.array(0)
    _same(fresh.params, params)
    assert int(fresh.step) == 5
    status.assert_consumed()
    status.assert_existing_objects_matched()


def test_a_pytree_inside_a_tracked_dict(tmp_path: Path) -> None:
    state = Pair(jnp.arange(3.0), jnp.ones(2))
    ckpt = Checkpoint(holder={"opt": state, "data": iter(ps.Dataset.range(5))})
    path = ckpt.save(str(tmp_path / "ckpt"))
    fresh = Checkpoint(holder={"opt": _scrambled(state), "data": iter(ps.Dataset.range(5))})
    fresh.restore(path).assert_consumed()
    _same(fresh.holder["opt"], state)


def test_structure_mismatch_names_missing_and_extra_paths(tmp_path: Path) -> None:
    path = Checkpoint(p={"a": jnp.ones(2), "b": jnp.ones(2)}).save(str(tmp_path / "ckpt"))
    fresh = Checkpoint(p={"a": jnp.ones(2), "c": jnp.ones(2)})
    with pytest.raises(CheckpointMismatchError) as caught:
        fresh.restore(path)
    message = str(caught.value)
    assert "the checkpoint lacks 1 leaves: ['c']" in message
    assert "the target lacks 1 saved leaves: ['b']" in message
    assert "Saved structure: PyTreeDef({'a': *, 'b': *})" in message
    with pytest.raises(CheckpointMismatchError, match=r"lacks 1 leaves: \['c'\]"):
        restore_pytree(path, {"a": jnp.ones(2), "b": jnp.ones(2), "c": jnp.ones(1)}, key="p")


def test_shape_mismatch_names_the_leaf_and_both_shapes(tmp_path: Path) -> None:
    path = Checkpoint(p={"w": jnp.ones(4)}).save(str(tmp_path / "ckpt"))
    expected = r"leaf \['w'\] has shape \[4\] in the checkpoint and \[5\] in the target"
    with pytest.raises(CheckpointMismatchError, match=expected):
        Checkpoint(p={"w": jnp.ones(5)}).restore(path)
    with pytest.raises(CheckpointMismatchError, match=expected):
        restore_pytree(path, {"w": np.ones(5)}, key="p")


def test_restore_pytree_targets(tmp_path: Path) -> None:
    params = {"w": jnp.arange(6.0).reshape(2, 3), "n": jnp.array(3), "s": 1.5}
    path = Checkpoint(params=params, data=iter(ps.Dataset.range(3))).save(str(tmp_path / "ckpt"))
    # jax.Array leaves: their shape, dtype and sharding.
    on_device = restore_pytree(path, params, key="params")
    _same(on_device, params)
    # ShapeDtypeStruct leaves without a sharding: the default device; another dtype is a cast.
    shapes = {
        "w": jax.ShapeDtypeStruct((2, 3), jnp.bfloat16),
        "n": jax.ShapeDtypeStruct((), jnp.float32),
        "s": 0.0,
    }
    cast = restore_pytree(path, shapes)
    assert cast["w"].dtype == jnp.bfloat16
    assert cast["w"].devices() == {jax.devices()[0]}
    assert cast["n"].dtype == jnp.float32
    assert float(cast["n"]) == 3.0
    np.testing.assert_array_equal(np.asarray(cast["w"], np.float32), np.arange(6.0).reshape(2, 3))
    assert cast["s"] == 1.5
    assert type(cast["s"]) is float
    # NumPy leaves: NumPy results of their dtype.
    host = restore_pytree(path, {"w": np.zeros((2, 3), np.float64), "n": np.int8(0), "s": 0.0})
    assert type(host["w"]) is np.ndarray
    assert host["w"].dtype == np.float64
    assert type(host["n"]) is np.int8
    assert host["n"] == 3
    # No target: nested dicts of NumPy arrays.
    plain = restore_pytree(str(tmp_path), key="params")
    assert sorted(plain) == ["n", "s", "w"]
    assert type(plain["w"]) is np.ndarray
    np.testing.assert_array_equal(plain["w"], np.arange(6.0).reshape(2, 3))


def test_restore_pytree_without_target_rebuilds_lists_and_attributes(tmp_path: Path) -> None:
    state = optax.adam(1e-3).init({"w": jnp.ones(2)})
    path = Checkpoint(opt=state).save(str(tmp_path / "ckpt"))
    plain = restore_pytree(path)
    assert isinstance(plain, list)
    assert len(plain) == 1
    assert sorted(plain[0]) == ["count", "mu", "nu"]
    np.testing.assert_array_equal(plain[0]["mu"]["w"], np.zeros(2, np.float32))


def test_restore_pytree_reads_plain_numpy_values(tmp_path: Path) -> None:
    path = Checkpoint(
        d={"a": np.arange(3.0), "b": [np.ones(2, np.int32)]}, data=iter(ps.Dataset.range(2))
    ).save(str(tmp_path / "ckpt"))
    target = {"a": jax.ShapeDtypeStruct((3,), jnp.float32), "b": [jnp.zeros(2, jnp.int32)]}
    tree = restore_pytree(path, target, key="d")
    assert isinstance(tree["a"], jax.Array)
    assert tree["a"].dtype == jnp.float32
    np.testing.assert_array_equal(tree["b"][0], np.ones(2))
    plain = restore_pytree(path)
    np.testing.assert_array_equal(plain["a"], np.arange(3.0))


def test_restore_pytree_key_rules(tmp_path: Path) -> None:
    path = Checkpoint(
        model={"params": {"w": jnp.ones(2)}, "data": iter(ps.Dataset.range(2))},
        opt=Pair(jnp.ones(1), jnp.ones(1)),
    ).save(str(tmp_path / "ckpt"))
    with pytest.raises(CheckpointKeyError, match=r"holds 2 pytrees \('model/params', 'opt'\)"):
        restore_pytree(path)
    tree = restore_pytree(path, key="model/params")
    np.testing.assert_array_equal(tree["w"], np.ones(2))
    with pytest.raises(CheckpointKeyError, match=r"has no object 'model/nope'; model holds"):
        restore_pytree(path, key="model/nope")
    with pytest.raises(CheckpointMismatchError, match="not a pytree"):
        restore_pytree(path, key="model/data")
    # A node of one value (a Variable) is a pytree of one leaf.
    counter = restore_pytree(path, jax.ShapeDtypeStruct((), jnp.int32), key="save_counter")
    assert counter.dtype == jnp.int32
    assert int(counter) == 1
    empty = Checkpoint(data=iter(ps.Dataset.range(2))).save(str(tmp_path / "other"))
    with pytest.raises(CheckpointKeyError, match=r"holds 0 pytrees \(\(none\)\)"):
        restore_pytree(empty)


def test_restore_pytree_checks_its_arguments(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="path must be a checkpoint prefix"):
        restore_pytree(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key must be a str"):
        restore_pytree(str(tmp_path), key=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key must name an object"):
        restore_pytree(str(tmp_path), key="/")
    with pytest.raises(NotFoundError, match="no checkpoint in directory"):
        restore_pytree(str(tmp_path))
    with pytest.raises(NotFoundError, match="no checkpoint at"):
        restore_pytree(str(tmp_path / "missing"))


def test_manager_saves_a_pytree_with_a_data_iterator(tmp_path: Path) -> None:
    params = _params()
    opt = optax.adamw(1e-3)
    state = opt.init(params)
    data = iter(ps.Dataset.range(100).batch(4))
    ckpt = Checkpoint(params=params, opt_state=state, data=data)
    manager = CheckpointManager(ckpt, str(tmp_path), max_to_keep=2)
    for _ in range(3):
        total = float(next(data).sum())
        grads = jax.tree.map(lambda p, t=total: jnp.full(p.shape, t, p.dtype), ckpt.params)
        updates, ckpt.opt_state = opt.update(grads, ckpt.opt_state, ckpt.params)
        ckpt.params = optax.apply_updates(ckpt.params, updates)
        manager.save()
    expected_next = next(data)
    fresh = Checkpoint(
        params=_scrambled(params),
        opt_state=_scrambled(state),
        data=iter(ps.Dataset.range(100).batch(4)),
    )
    CheckpointManager(fresh, str(tmp_path), max_to_keep=2).restore_or_initialize()
    _same(fresh.params, ckpt.params)
    _same(fresh.opt_state, ckpt.opt_state)
    np.testing.assert_array_equal(next(fresh.data), expected_next)


def test_async_save_snapshots_jax_arrays(tmp_path: Path) -> None:
    params = {"w": jnp.arange(1000.0), "b": jnp.ones(10, jnp.bfloat16)}
    ckpt = Checkpoint(params=params)
    manager = CheckpointManager(ckpt, str(tmp_path), max_to_keep=1, enable_async=True)
    manager.save()
    ckpt.params = {"w": jnp.zeros(1000), "b": jnp.zeros(10, jnp.bfloat16)}
    manager.sync()
    _same(restore_pytree(str(tmp_path), params), params)


def test_pytree_leaves_must_be_arrays_or_scalars(tmp_path: Path) -> None:
    # An object leaf next to a jax array: refused when saved, never dropped silently.
    ckpt = Checkpoint()
    ckpt.stuff = Pair(jnp.ones(1), object())
    expected = r"cannot save the pytree at 'stuff': leaf \.second is <object object"
    with pytest.raises(TypeError, match=expected):
        ckpt.save(str(tmp_path / "ckpt"))


def test_a_plain_value_and_a_pytree_restore_into_each_other(tmp_path: Path) -> None:
    # Saved as a dict of NumPy arrays, restored into a pytree of jax arrays, and back.
    plain = {"w": np.arange(3.0), "n": [np.int32(4)]}
    path = Checkpoint(p=plain).save(str(tmp_path / "plain"))
    fresh = Checkpoint(p={"w": jnp.zeros(3), "n": [jnp.int32(0)]})
    fresh.restore(path).assert_consumed()
    assert isinstance(fresh.p["w"], jax.Array)
    np.testing.assert_array_equal(fresh.p["w"], np.arange(3.0))
    assert int(fresh.p["n"][0]) == 4
    tree = {"w": jnp.arange(3.0), "n": [jnp.int32(4)]}
    path = Checkpoint(p=tree).save(str(tmp_path / "tree"))
    back = Checkpoint(p={"w": np.zeros(3), "n": [np.int32(0)]})
    assert type(back.p) is TrackableDict
    back.restore(path).assert_consumed()
    np.testing.assert_array_equal(back.p["w"], np.arange(3.0))
    np.testing.assert_array_equal(back.p["n"][0], 4)


def _tampered(path: str, name: str, change: Any) -> None:
    from pipestate.checkpoint._index import body_crc

    index = Path(path + ".index")
    document = json.loads(index.read_text())
    body = document["checkpoint"]
    change(body["nodes"][body["nodes"][0]["children"][name]]["attributes"])
    document["crc32c"] = body_crc(body)
    index.write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            lambda a: a["PYTREE"]["dict"]["leaves"].pop(),
            "names other leaves than the saved ones",
            id="leaf-missing-from-structure",
        ),
        pytest.param(
            lambda a: a["PYTREE"]["dict"]["leaves"][0][1].append(["call", "os.system"]),
            r"malformed key path entry \['call', 'os.system'\]",
            id="unknown-entry",
        ),
        pytest.param(
            lambda a: a["PYTREE"].update({"dict": {"leaves": 3, "treedef": "x"}}),
            "the saved pytree structure is malformed",
            id="not-a-list",
        ),
    ],
)
def test_a_malformed_saved_structure_is_refused(tmp_path: Path, change: Any, message: str) -> None:
    path = Checkpoint(p={"a": jnp.ones(2), "b": jnp.ones(2)}).save(str(tmp_path / "ckpt"))
    _tampered(path, "p", change)
    with pytest.raises(CorruptCheckpointError, match=message):
        Checkpoint(p={"a": jnp.ones(2), "b": jnp.ones(2)}).restore(path)
    with pytest.raises(CorruptCheckpointError, match=message):
        restore_pytree(path)


def test_the_checkpoint_package_never_imports_jax(tmp_path: Path) -> None:
    code = (
        "import sys, numpy as np, pipestate as ps\n"
        "from pipestate.checkpoint import *\n"
        f"ps.Checkpoint(d={{'a': np.ones(2)}}).save({str(tmp_path / 'ckpt')!r})\n"
        "assert 'jax' not in sys.modules and 'ml_dtypes' not in sys.modules, 'imported'\n"
        "from pipestate.checkpoint import restore_pytree\n"
        "assert 'jax' in sys.modules\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_abstract_leaves_restore_in_place_and_are_never_saved(tmp_path: Path) -> None:
    params = _params()
    path = Checkpoint(params=params).save(str(tmp_path / "ckpt"))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    fresh = Checkpoint(params=abstract)
    with pytest.raises(TypeError, match=r"leaf \['dense'\]\['bias'\] is a jax.ShapeDtypeStruct"):
        fresh.save(str(tmp_path / "abstract"))
    fresh.restore(path).assert_consumed()
    _same(fresh.params, params)


def test_typed_prng_keys_round_trip_with_their_implementation(tmp_path: Path) -> None:
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("x",))
    spread = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x"))
    keys = jax.device_put(jax.random.split(jax.random.key(0), 8), spread)
    tree = {"keys": keys, "rbg": jax.random.key(3, impl="rbg"), "raw": jax.random.PRNGKey(1)}
    path = Checkpoint(tree=tree).save(str(tmp_path / "ckpt"))

    fresh = {
        "keys": jax.random.split(jax.random.key(9), 8),
        "rbg": jax.random.key(9, impl="rbg"),
        "raw": jax.random.PRNGKey(9),
    }
    ckpt = Checkpoint(tree=fresh)
    ckpt.restore(path).assert_consumed()
    for name in tree:
        restored, saved = ckpt.tree[name], tree[name]
        assert restored.dtype == saved.dtype
        if jax.numpy.issubdtype(saved.dtype, jax.dtypes.prng_key):
            assert jax.random.key_impl(restored) == jax.random.key_impl(saved)
            restored, saved = jax.random.key_data(restored), jax.random.key_data(saved)
        np.testing.assert_array_equal(np.asarray(restored), np.asarray(saved))
    # The same draws follow from the restored keys.
    np.testing.assert_array_equal(
        jax.random.uniform(ckpt.tree["keys"][3], (4,)), jax.random.uniform(keys[3], (4,))
    )

    # Abstract targets keep their sharding; no target gives key arrays too.
    abstract = jax.tree_util.tree_map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding), tree
    )
    placed = restore_pytree(path, abstract, key="tree")
    assert placed["keys"].sharding == spread
    assert bool((placed["keys"] == keys).all())
    loose = restore_pytree(path, key="tree")
    assert bool((loose["rbg"] == tree["rbg"]).all())

    with pytest.raises(CheckpointMismatchError, match=r"\['rbg'\] holds rbg PRNG keys in the "):
        restore_pytree(path, {**fresh, "rbg": jax.random.key(0)}, key="tree")
    with pytest.raises(CheckpointMismatchError, match=r"\['keys'\] holds PRNG keys in the check"):
        restore_pytree(path, {**fresh, "keys": np.zeros(8)}, key="tree")
    with pytest.raises(CheckpointMismatchError, match=r"\['raw'\] is an array of PRNG keys in"):
        restore_pytree(path, {**fresh, "raw": jax.random.key(0)}, key="tree")


def test_a_prng_key_restores_into_a_plain_dict_as_its_key_data(tmp_path: Path) -> None:
    key = jax.random.key(7)
    saved = {"w": jnp.arange(3.0), "k": key, "ks": [jax.random.split(key, 2)]}
    path = Checkpoint(t=saved).save(str(tmp_path / "ckpt"))
    # A process without device arrays: NumPy values where the pytree was.
    plain = Checkpoint(t={"w": np.zeros(3, np.float32), "k": np.zeros(2, np.uint32), "ks": []})
    assert type(plain.t) is TrackableDict
    plain.restore(path).assert_consumed()
    assert sorted(plain.t) == ["k", "ks", "w"]
    assert type(plain.t["k"]) is np.ndarray
    np.testing.assert_array_equal(plain.t["k"], np.asarray(jax.random.key_data(key)))
    np.testing.assert_array_equal(plain.t["ks"][0], np.asarray(jax.random.key_data(saved["ks"][0])))
    np.testing.assert_array_equal(plain.t["w"], np.arange(3.0))
    # The key data makes the same keys again.
    again = jax.random.wrap_key_data(plain.t["k"], impl="threefry2x32")
    np.testing.assert_array_equal(jax.random.uniform(again, (3,)), jax.random.uniform(key, (3,)))


def _restructured(path: str, leaves: list[tuple[str, list[Any]]]) -> None:
    """Give the saved leaves of ``p`` (in saved order) other names and key paths."""

    def change(attributes: dict[str, Any]) -> None:
        items = attributes["PYTREE"]["dict"]["leaves"]
        values = [attributes.pop(name) for name, _ in items]
        for item, value, (name, entries) in zip(items, values, leaves, strict=True):
            item[:] = [name, entries]
            attributes[name] = value

    _tampered(path, "p", change)


@pytest.mark.parametrize(
    ("leaves", "message"),
    [
        pytest.param(
            [("[0]", [["index", 0]]), ("['b']", [["key", "b"]]), ("['c']", [["key", "c"]])],
            "an indexed child of one that has named children",
            id="index-and-key-siblings",
        ),
        pytest.param(
            [("LEAF", []), ("['b']", [["key", "b"]]), ("['c']", [["key", "c"]])],
            r"the leaf 'LEAF' \(the whole tree\) is saved next to other leaves",
            id="root-leaf-and-others",
        ),
        pytest.param(
            [("['a']", [["key", "a"]]), ("['b']", [["key", "c"]]), ("['c']", [["key", "b"]])],
            "leaf \"\\['b'\\]\" is saved under another name than its key path \"\\['c'\\]\"",
            id="names-swapped",
        ),
        pytest.param(
            [("['a']", [["key", "a"]]), (".a", [["attr", "a"]]), ("['c']", [["key", "c"]])],
            r"leaf '.a' is at the place of another leaf",
            id="key-and-attribute-of-one-name",
        ),
        pytest.param(
            [("[0]", [["index", 0]]), ("[<flat index 0>]", [["flat", 0]]), ("[1]", [["index", 1]])],
            r"leaf '\[<flat index 0>\]' is at the place of another leaf",
            id="index-and-flat-index-of-one-place",
        ),
        pytest.param(
            [
                ("['a']", [["key", "a"]]),
                ("['a']['x']", [["key", "a"], ["key", "x"]]),
                ("['c']", [["key", "c"]]),
            ],
            r"leaf \"\['a'\]\['x'\]\" has its path through another leaf",
            id="leaf-through-a-leaf",
        ),
        pytest.param(
            [
                ("[0]", [["index", 0]]),
                ("[1]", [["index", 1]]),
                ("[1099511627776]", [["index", 2**40]]),
            ],
            "its sequences have more than 1048576 positions without leaves",
            id="huge-index",
        ),
    ],
)
def test_an_inconsistent_saved_structure_is_refused(
    tmp_path: Path, leaves: list[tuple[str, list[Any]]], message: str
) -> None:
    path = Checkpoint(p={"a": jnp.zeros(1), "b": jnp.ones(1), "c": jnp.full(1, 2.0)}).save(
        str(tmp_path / "ckpt")
    )
    _restructured(path, leaves)
    with pytest.raises(CorruptCheckpointError, match=message):
        restore_pytree(path, key="p")
    with pytest.raises(CorruptCheckpointError, match=message):
        Checkpoint(p={"a": jnp.zeros(1), "b": jnp.zeros(1), "c": jnp.zeros(1)}).restore(path)
    with pytest.raises(CorruptCheckpointError, match=message):
        Checkpoint(p={"a": np.zeros(1), "b": np.zeros(1)}).restore(path)
    with pytest.raises(CorruptCheckpointError, match=message):
        Checkpoint(p=None).restore(path)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        pytest.param({"dict": {"x": 1}}, "dict", id="dict"),
        pytest.param({"dict": {"prng_impl": "rbg", "key_data": 3}}, "dict", id="key-without-data"),
        pytest.param([1, 2], "list", id="list"),
        pytest.param(None, "NoneType", id="none"),
    ],
)
def test_a_saved_leaf_that_is_a_container_is_refused(tmp_path: Path, value: Any, kind: str) -> None:
    path = Checkpoint(p={"a": jnp.zeros(1), "b": jnp.ones(1)}).save(str(tmp_path / "ckpt"))
    _tampered(path, "p", lambda attributes: attributes.update({"['a']": value}))
    message = rf"saved pytree leaf \"\['a'\]\" holds {kind} "
    with pytest.raises(CorruptCheckpointError, match=message):
        restore_pytree(path, key="p")
    with pytest.raises(CorruptCheckpointError, match=message):
        restore_pytree(path, {"a": jnp.zeros(1), "b": jnp.zeros(1)}, key="p")
    with pytest.raises(CorruptCheckpointError, match=message):
        Checkpoint(p={"a": np.zeros(1), "b": np.zeros(1)}).restore(path)


def test_names_match_their_key_paths_across_unicode_versions(tmp_path: Path) -> None:
    # U+0378 is unassigned (repr escapes it); a Python whose Unicode database assigns it
    # writes it as it is, and the name still matches its key path.
    path = Checkpoint(p={"\u0378": jnp.ones(1), "é": jnp.zeros(1)}).save(str(tmp_path / "ckpt"))
    # Saved in flattening order: "é" (U+00E9) first.
    _restructured(path, [("['é']", [["key", "é"]]), ("['\u0378']", [["key", "\u0378"]])])
    plain = restore_pytree(path, key="p")
    np.testing.assert_array_equal(plain["\u0378"], np.ones(1))
    np.testing.assert_array_equal(plain["é"], np.zeros(1))


def test_sequences_keep_the_positions_of_children_without_leaves(tmp_path: Path) -> None:
    chained = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    state = chained.init({"w": jnp.ones(2)})
    tree = [None, jnp.ones(1), (), jnp.zeros(2), optax.EmptyState()]
    path = Checkpoint(opt=state, tree=tree).save(str(tmp_path / "ckpt"))
    # clip_by_global_norm's state has no leaves: adam's keeps its position.
    opt = restore_pytree(path, key="opt")
    assert opt[0] is None
    assert sorted(opt[1][0]) == ["count", "mu", "nu"]
    plain = restore_pytree(path, key="tree")
    assert len(plain) == 4
    assert plain[0] is None
    assert plain[2] is None
    np.testing.assert_array_equal(plain[3], np.zeros(2))
    fresh = Checkpoint(opt=chained.init({"w": jnp.zeros(2)}), tree=_scrambled(tree))
    fresh.restore(path).assert_consumed()
    _same(fresh.opt, state)
    _same(fresh.tree, tree)


class Mixed:
    """A custom node whose children have a sequence index and a dict key."""

    def __init__(self, first: Any, second: Any) -> None:
        self.first, self.second = first, second


jax.tree_util.register_pytree_with_keys(
    Mixed,
    lambda m: (
        ((jax.tree_util.SequenceKey(0), m.first), (jax.tree_util.DictKey("x"), m.second)),
        None,
    ),
    lambda _, children: Mixed(*children),
)


def test_a_pytree_a_reader_would_refuse_is_refused_when_saved(tmp_path: Path) -> None:
    ckpt = Checkpoint(p=Mixed(jnp.ones(1), jnp.zeros(1)))
    with pytest.raises(ValueError, match="cannot save the pytree at 'p': its key paths cannot be"):
        ckpt.save(str(tmp_path / "ckpt"))
    assert not list(tmp_path.iterdir())


def test_a_sharded_leaf_whose_chunks_share_a_tensor_is_refused(tmp_path: Path) -> None:
    from pipestate.checkpoint import load_variable

    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("x",))
    rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x"))
    w = jax.device_put(jnp.arange(16.0).reshape(8, 2), rows)
    path = Checkpoint(p={"w": w}).save(str(tmp_path / "ckpt"))

    def share(attributes: dict[str, Any]) -> None:
        chunks = attributes["['w']"]["sharded"]["chunks"]
        chunks[1]["of"] = chunks[0]["of"]

    _tampered(path, "p", share)
    message = r"two 'sharded' chunks are stored in one tensor \"p/.ATTRIBUTES/\['w'\]@\[0,0\]\""
    with pytest.raises(CorruptCheckpointError, match=message):
        restore_pytree(path, key="p")
    with pytest.raises(CorruptCheckpointError, match=message):
        restore_pytree(path, {"w": w}, key="p")
    with pytest.raises(CorruptCheckpointError, match=message):
        load_variable(path, "p/.ATTRIBUTES/['w']")


def test_a_pytree_restores_into_a_plain_slot_as_nested_values(tmp_path: Path) -> None:
    key = jax.random.key(1)
    saved = {"w": jnp.arange(3.0), "k": key, "state": Pair(jnp.ones(2), 4)}
    path = Checkpoint(params=saved).save(str(tmp_path / "ckpt"))
    # Not made yet (None): the leaves as NumPy values, a key as its key data.
    ckpt = Checkpoint(params=None)
    ckpt.restore(path).assert_consumed()
    assert sorted(ckpt.params) == ["k", "state", "w"]
    np.testing.assert_array_equal(ckpt.params["w"], np.arange(3.0))
    np.testing.assert_array_equal(ckpt.params["k"], np.asarray(jax.random.key_data(key)))
    assert sorted(ckpt.params["state"]) == ["first", "second"]
    assert int(ckpt.params["state"]["second"]) == 4
    # Assigned after a restore that had no place for it: restored then.
    late = Checkpoint()
    status = late.restore(path)
    late.params = None
    np.testing.assert_array_equal(late.params["w"], np.arange(3.0))
    status.assert_consumed()


def test_restore_pytree_keys_are_escaped_as_checkpoint_keys(tmp_path: Path) -> None:
    path = Checkpoint(
        state={
            "enc/dec": {"w": jnp.ones(2)},
            "v1.0": [jnp.zeros(1)],
            "it": iter(ps.Dataset.range(4)),
        }
    ).save(str(tmp_path / "ckpt"))
    np.testing.assert_array_equal(restore_pytree(path, key="state/enc./dec")["w"], np.ones(2))
    np.testing.assert_array_equal(restore_pytree(path, key="/state/v1..0/")[0], np.zeros(1))
    with pytest.raises(
        CheckpointKeyError,
        match=r"has no object 'state/enc'; state holds 'enc./dec', 'it', 'v1..0'",
    ):
        restore_pytree(path, key="state/enc/dec")
    with pytest.raises(ValueError, match=r"key 'state/v1.0' has a '.' at position 8 that escapes"):
        restore_pytree(path, key="state/v1.0")
    with pytest.raises(CheckpointKeyError, match=r"\('state/enc./dec', 'state/v1..0'\)"):
        restore_pytree(path)


def test_saving_a_donated_array_names_its_leaf(tmp_path: Path) -> None:
    params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)}}
    ckpt = Checkpoint(params=params)
    # What donating the tree to a jitted step does to its buffers (where donation is supported).
    for leaf in jax.tree.leaves(params):
        leaf.delete()
    with pytest.raises(
        ValueError, match=r"leaf \['dense'\]\['bias'\] is a deleted jax.Array"
    ) as caught:
        ckpt.save(str(tmp_path / "ckpt"))
    assert isinstance(caught.value.__cause__, RuntimeError)
