"""Torch tensors through a ``Loader``'s shared memory: every dtype, detached, zero-copy."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pipestate as ps  # noqa: E402

pytestmark = pytest.mark.timeout(120)

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.int8, torch.uint8, torch.bool]
DTYPES += [torch.complex64, torch.float8_e4m3fn, torch.uint16]


def tensors(index: np.int64) -> dict[str, Any]:
    i = int(index)
    out: dict[str, Any] = {
        dtype_name(dtype): (torch.arange(6) + i).reshape(2, 3).to(dtype) for dtype in DTYPES
    }
    out["grad"] = torch.full((3,), float(i), requires_grad=True) * 2  # not a leaf
    out["scalar"] = torch.tensor(i, dtype=torch.bfloat16)
    out["strided"] = torch.arange(12.0).reshape(3, 4).t()[::2]
    return out


def ragged(index: np.int64) -> Any:
    return [torch.zeros(int(index) % 3, dtype=torch.bfloat16), "text", int(index)]


def sparse(index: np.int64) -> Any:
    return torch.eye(2).to_sparse()


def dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


@pytest.mark.parametrize("num_workers", [0, 2])
def test_tensors_of_every_dtype_come_back_equal_and_detached(num_workers: int) -> None:
    ds = ps.Dataset.range(7)
    loader = ps.data.Loader(ds, num_workers=num_workers, collate_fn=tensors, chunk_size=3)
    for index, element in enumerate(loader):
        expected = tensors(np.int64(index))
        assert list(element) == list(expected)
        for key, value in expected.items():
            got = element[key]
            assert got.dtype == value.dtype, key
            assert got.shape == value.shape, key
            assert torch.equal(got, value.detach()), key
        if num_workers:
            assert not element["grad"].requires_grad  # the documented rule: detached
            assert element["float32"].is_contiguous()


def test_ragged_elements_and_python_values() -> None:
    loader = ps.data.Loader(ps.Dataset.range(6), num_workers=2, collate_fn=ragged, chunk_size=4)
    for index, (tensor, text, number) in enumerate(loader):
        assert tensor.shape == (index % 3,)
        assert tensor.dtype == torch.bfloat16
        assert (text, number) == ("text", index)


def test_a_stacked_chunk_shares_one_buffer() -> None:
    """Tensors of a chunk come from one array per leaf: torch.from_numpy, no copy per element."""
    loader = ps.data.Loader(ps.Dataset.range(8), num_workers=1, collate_fn=tensors, chunk_size=4)
    first, second = list(loader)[:2]
    a, b = first["bfloat16"], second["bfloat16"]
    assert b.data_ptr() - a.data_ptr() == a.numel() * a.element_size()  # adjacent rows


def test_a_sparse_tensor_is_refused_with_a_fix() -> None:
    it = iter(ps.data.Loader(ps.Dataset.range(2), num_workers=1, collate_fn=sparse))
    with pytest.raises(TypeError, match="to_dense"):
        next(it)
    it.close()
