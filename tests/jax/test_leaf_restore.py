"""How a saved leaf is restored into a target leaf: copies, dtypes, and the kinds of leaves."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from pipestate.checkpoint import Checkpoint, restore_pytree  # noqa: E402
from pipestate.errors import CheckpointMismatchError  # noqa: E402


def _data_files(prefix: str) -> list[str]:
    directory, base = os.path.split(prefix)
    return [
        os.path.join(directory, f) for f in os.listdir(directory) if f.startswith(base + ".data")
    ]


@pytest.mark.parametrize("spec", [P("x"), P()])
def test_restored_arrays_own_their_memory(tmp_path: Path, spec: Any) -> None:
    """The CPU backend keeps host arrays it is given: a restored array must not be a view of
    the checkpoint's memory map, which the file's later changes (or truncation) would reach."""
    mesh = Mesh(np.array(jax.devices()), ("x",))
    sharding = NamedSharding(mesh, spec)
    x = np.arange(8 * 4096, dtype=np.float32).reshape(8, 4096)
    path = Checkpoint(t={"w": jax.device_put(x, sharding)}).save(str(tmp_path / "ckpt"))
    target = {"w": jax.ShapeDtypeStruct(x.shape, jnp.float32, sharding=sharding)}
    functional = restore_pytree(path, target, key="t")
    in_place = Checkpoint(t={"w": jax.device_put(np.zeros_like(x), sharding)})
    in_place.restore(path).assert_consumed()
    for name in _data_files(path):
        with open(name, "r+b") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(0)
            f.write(b"\0" * size)
        os.truncate(name, 0)
    # Summed on the devices (np.asarray would read a cached host copy).
    assert float(jnp.sum(functional["w"])) == float(x.sum())
    assert float(jnp.sum(in_place.t["w"])) == float(x.sum())


def test_64_bit_targets_without_x64_are_refused(tmp_path: Path) -> None:
    path = Checkpoint(t={"n": np.array([2**40 + 5], np.int64)}).save(str(tmp_path / "ckpt"))
    with pytest.raises(
        CheckpointMismatchError, match=r"asked for as int64, which JAX holds as int32"
    ):
        restore_pytree(path, {"n": jax.ShapeDtypeStruct((1,), np.int64)}, key="t")
    # Into 32 bits: the value does not fit, and is refused rather than wrapped.
    with pytest.raises(CheckpointMismatchError, match=r"from 1099511627781 to 1099511627781"):
        restore_pytree(path, {"n": jax.ShapeDtypeStruct((1,), np.int32)}, key="t")
    small = Checkpoint(t={"n": np.array([7, -3], np.int64)}).save(str(tmp_path / "small"))
    out = restore_pytree(small, {"n": jax.ShapeDtypeStruct((2,), np.int32)}, key="t")
    assert out["n"].dtype == np.int32
    np.testing.assert_array_equal(out["n"], [7, -3])


def test_casts_that_lose_values_are_refused(tmp_path: Path) -> None:
    path = Checkpoint(
        t={"f": np.array([1.5, 2.0], np.float32), "i": np.array([300, 2], np.int32)}
    ).save(str(tmp_path / "ckpt"))
    with pytest.raises(CheckpointMismatchError, match=r"\['f'\] holds float32 values and the"):
        restore_pytree(path, {"f": np.zeros(2, np.int32), "i": np.zeros(2, np.int32)}, key="t")
    with pytest.raises(CheckpointMismatchError, match=r"\['i'\] holds int32 values from 2 to 300"):
        restore_pytree(path, {"f": np.zeros(2, np.float32), "i": np.zeros(2, np.uint8)}, key="t")
    # Floats narrow as NumPy rounds them; integers widen.
    out = restore_pytree(
        path, {"f": jnp.zeros(2, jnp.bfloat16), "i": np.zeros(2, np.int64)}, key="t"
    )
    assert out["f"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(out["f"], np.float32), [1.5, 2.0])
    assert out["i"].dtype == np.int64


def test_leaf_kinds_must_fit_the_target(tmp_path: Path) -> None:
    tree = {"big": 2**70, "name": "adamw", "rate": 0.5, "w": jnp.ones(1)}
    path = Checkpoint(t=tree).save(str(tmp_path / "ckpt"))
    same = restore_pytree(path, tree, key="t")
    assert same["big"] == 2**70
    assert same["name"] == "adamw"
    ckpt = Checkpoint(t={"big": 0, "name": "", "rate": 0.0, "w": jnp.zeros(1)})
    ckpt.restore(path).assert_consumed()
    assert (ckpt.t["big"], ckpt.t["name"], ckpt.t["rate"]) == (2**70, "adamw", 0.5)

    with pytest.raises(CheckpointMismatchError, match=r"\['big'\] holds the int 1180591620717"):
        restore_pytree(path, {**tree, "big": np.int64(0)}, key="t")
    with pytest.raises(CheckpointMismatchError, match=r"\['name'\] holds the string 'adamw'"):
        restore_pytree(path, {**tree, "name": 0}, key="t")
    with pytest.raises(CheckpointMismatchError, match=r"\['name'\] holds the string 'adamw'"):
        restore_pytree(path, {**tree, "name": jnp.zeros(())}, key="t")
    with pytest.raises(CheckpointMismatchError, match=r"\['w'\] is a str in the target"):
        restore_pytree(path, {**tree, "w": ""}, key="t")
    with pytest.raises(CheckpointMismatchError, match=r"\['rate'\] holds the float 0.5 and the"):
        restore_pytree(path, {**tree, "rate": 0}, key="t")
    # A Python number into an array target becomes an array of the target's dtype.
    out = restore_pytree(path, {**tree, "rate": jax.ShapeDtypeStruct((), jnp.float32)}, key="t")
    assert out["rate"].dtype == jnp.float32
    assert float(out["rate"]) == 0.5
