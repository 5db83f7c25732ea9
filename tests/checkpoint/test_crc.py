"""crc32c over buffers in place equals google_crc32c over the same bytes, on both paths."""

from __future__ import annotations

import mmap

import google_crc32c
import numpy as np
import pytest

from pipestate.checkpoint import _crc


@pytest.fixture(params=["in-place", "copied"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "copied":
        monkeypatch.setattr(_crc, "_EXTEND", None)
        monkeypatch.setattr(_crc, "_CHUNK", 1000)  # several chunks on small data
    return str(request.param)


@pytest.mark.parametrize("size", [0, 1, 9, 4095, 123_457])
def test_equals_google_crc32c(path: str, size: int) -> None:
    data = np.random.default_rng(size).bytes(size)
    expected = google_crc32c.value(data)
    assert _crc.extend(0, data) == expected
    assert _crc.extend(0, memoryview(data)) == expected
    assert _crc.extend(0, np.frombuffer(data, np.uint8)) == expected
    half = size // 2
    assert _crc.extend(_crc.extend(0, data[:half]), data[half:]) == expected


def test_arrays_of_any_dtype_and_shape(path: str) -> None:
    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert _crc.extend(0, array) == google_crc32c.value(array.tobytes())


def test_a_read_only_memory_map(path: str, tmp_path: object) -> None:
    file = tmp_path / "data.bin"  # type: ignore[operator]
    payload = np.random.default_rng(0).bytes(50_000)
    file.write_bytes(payload)
    with open(file, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        assert _crc.extend(0, memoryview(m)[100:40_000]) == google_crc32c.value(payload[100:40_000])


def test_the_library_is_found_here() -> None:
    # google_crc32c's wheels link the C library; a source build without it falls back.
    assert _crc.zero_copy() == (google_crc32c.implementation == "c")
