"""ML dtypes (bfloat16, float8) stored as their own safetensors types, NumPy and jax arrays."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402
import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from pipestate.checkpoint import (  # noqa: E402
    Checkpoint,
    Variable,
    _safetensors,
    load_variable,
    restore_pytree,
)

CODES = {
    "bfloat16": "BF16",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "float8_e4m3fnuz": "F8_E4M3FNUZ",
    "float8_e5m2fnuz": "F8_E5M2FNUZ",
    "float8_e8m0fnu": "F8_E8M0",
}


def _every_pattern(name: str) -> np.ndarray:
    """Every bit pattern of the type (NaNs, infinities, subnormals, negative zero)."""
    dtype = np.dtype(getattr(ml_dtypes, name))
    bits = np.arange(
        1 << (8 * dtype.itemsize), dtype=np.uint16 if dtype.itemsize == 2 else np.uint8
    )
    return bits.view(dtype).reshape(-1, 16)


def _shard_header(tmp_path: Path) -> dict[str, Any]:
    data = next(tmp_path.glob("ckpt-1.data-*")).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header: dict[str, Any] = json.loads(data[8 : 8 + n])
    return header


@pytest.mark.parametrize("name", list(CODES))
def test_numpy_ml_dtypes_are_stored_natively(tmp_path: Path, name: str) -> None:
    array = _every_pattern(name)
    path = Checkpoint(x=array, v=Variable(array[:2])).save(str(tmp_path / "ckpt"))
    index = json.loads(Path(path + ".index").read_text())["checkpoint"]
    assert index["tensors"]["x/.ATTRIBUTES/VALUE"]["dtype"] == CODES[name]
    assert _shard_header(tmp_path)["x/.ATTRIBUTES/VALUE"]["dtype"] == CODES[name]
    fresh = Checkpoint(x=None, v=Variable(np.zeros_like(array[:2])))
    fresh.restore(path).assert_consumed()
    assert fresh.x.dtype == array.dtype
    assert fresh.x.tobytes() == array.tobytes()
    assert fresh.v.numpy().tobytes() == array[:2].tobytes()
    # By its tensor's key, as for torch tensors: widened exactly to float32.
    loaded = load_variable(path, "x/.ATTRIBUTES/VALUE")
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, array.astype(np.float32))


@pytest.mark.parametrize("name", list(CODES))
def test_sharded_jax_arrays_of_ml_dtypes_round_trip(tmp_path: Path, name: str) -> None:
    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("x", "y"))
    values = _every_pattern(name)[:8]
    array = jax.device_put(values, NamedSharding(mesh, P("x", "y")))
    path = Checkpoint(w=array).save(str(tmp_path / "ckpt"))
    index = json.loads(Path(path + ".index").read_text())["checkpoint"]
    body = index["nodes"][index["nodes"][0]["children"]["w"]]["attributes"]["LEAF"]["sharded"]
    assert body["dtype"] == name
    assert {index["tensors"][c["of"]]["dtype"] for c in body["chunks"]} == {CODES[name]}
    restored = restore_pytree(path, array)
    assert restored.dtype == array.dtype
    assert restored.sharding == array.sharding
    assert np.asarray(restored).tobytes() == values.tobytes()


def test_without_ml_dtypes_values_are_widened_to_float32(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = np.array([1.5, -2.0, np.inf, 3.140625], dtype=ml_dtypes.bfloat16)
    mesh = Mesh(np.array(jax.devices()[:2]), ("x",))
    path = Checkpoint(x=values, w=jax.device_put(values, NamedSharding(mesh, P("x")))).save(
        str(tmp_path / "ckpt")
    )
    monkeypatch.setattr(_safetensors, "ml_dtypes_module", lambda: None)
    widened = load_variable(path, "w/.ATTRIBUTES/LEAF")
    assert widened.dtype == np.float32
    np.testing.assert_array_equal(widened, values.astype(np.float32))
    fresh = Checkpoint(x=None)
    fresh.restore(path).expect_partial()
    assert fresh.x.dtype == np.float32
    np.testing.assert_array_equal(fresh.x, values.astype(np.float32))


@pytest.mark.parametrize("name", ["int4", "uint4", "float4_e2m1fn", "float8_e3m4"])
def test_ml_dtypes_without_a_safetensors_type_are_refused(tmp_path: Path, name: str) -> None:
    array = np.zeros(4, dtype=getattr(ml_dtypes, name))
    expected = f"cannot save the array at 'x/.ATTRIBUTES/VALUE': dtype {name} has no safetensors"
    with pytest.raises(TypeError, match=expected):
        Checkpoint(x=array).save(str(tmp_path / "ckpt"))
    with pytest.raises(TypeError, match=f"dtype {name} has no safetensors"):
        Checkpoint(w=jnp.zeros(4, dtype=getattr(ml_dtypes, name))).save(str(tmp_path / "jax"))


def test_restore_casts_to_the_target_dtype(tmp_path: Path) -> None:
    params = {"w": jnp.array([1.0, 2.5, -3.0], jnp.float32)}
    path = Checkpoint(params=params).save(str(tmp_path / "ckpt"))
    low = restore_pytree(path, {"w": jax.ShapeDtypeStruct((3,), jnp.bfloat16)})
    assert low["w"].dtype == jnp.bfloat16
    assert np.asarray(low["w"]).tobytes() == np.asarray(params["w"].astype(jnp.bfloat16)).tobytes()
    f8 = restore_pytree(path, {"w": np.zeros(3, ml_dtypes.float8_e4m3fn)})
    assert f8["w"].dtype == ml_dtypes.float8_e4m3fn
    np.testing.assert_array_equal(f8["w"].astype(np.float32), [1.0, 2.5, -3.0])
