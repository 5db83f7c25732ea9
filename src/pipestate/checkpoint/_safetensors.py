"""The safetensors container: writing headers, and reading them without trusting them.

A safetensors file is an 8-byte little-endian header length ``N``, ``N`` bytes
of JSON (padded with spaces), then the tensor bytes. Each tensor's entry gives
``dtype``, ``shape`` and ``data_offsets`` relative to the end of the header.
Tensors must tile the data region exactly, so writers order them by falling
alignment to keep every tensor aligned to its item size.
"""

from __future__ import annotations

import itertools
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipestate._validate import is_int
from pipestate.checkpoint._limits import HEADER_LIMIT
from pipestate.errors import CorruptCheckpointError

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_JSON_DEPTH",
    "ML_DTYPE_NAMES",
    "NATIVE_CARRIERS",
    "TensorInfo",
    "build_header",
    "carrier_dtype",
    "empty_shape_fits",
    "json_depth",
    "ml_dtype_code",
    "ml_dtypes_module",
    "native_array",
    "numpy_dtype",
    "parse_header",
    "safetensors_dtype",
    "shape_is_valid",
    "strict_json_loads",
    "widen_to_float32",
]

MAX_HEADER_BYTES = HEADER_LIMIT.default
MAX_NDIM = 64
# Enough for values nested MAX_DEPTH (100) levels ({"items": [[k, v]]} is three JSON
# levels per value level) inside the index; shallow enough that nothing recursive
# that walks a parsed document can run out of stack.
MAX_JSON_DEPTH = 400
# NumPy refuses shapes whose size in bytes (zero-length dimensions counted as one)
# does not fit in an intp, even for empty arrays.
_MAX_SHAPE_BYTES = 2**62

_ST_TO_NP: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype("<u1"),
    "I8": np.dtype("<i1"),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "C64": np.dtype("<c8"),
}
_NP_TO_ST = {dt.str: name for name, dt in _ST_TO_NP.items()}
# Types NumPy cannot hold natively: readable (BF16 widens exactly to float32) or refused.
_ITEMSIZE_ONLY = {
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E4M3FNUZ": 1,
    "F8_E5M2FNUZ": 1,
    "F8_E8M0": 1,
    "F4": 1,
    "F6_E2M3": 1,
    "F6_E3M2": 1,
}


# Types NumPy lacks that checkpoints store as themselves (torch tensors of these dtypes).
# Their bytes travel as an unsigned "carrier" array of the same item size; the index
# names them by their safetensors code instead of a NumPy dtype.
NATIVE_CARRIERS: dict[str, np.dtype[Any]] = {
    "BF16": np.dtype("<u2"),
    "F8_E4M3": np.dtype("|u1"),
    "F8_E5M2": np.dtype("|u1"),
    "F8_E4M3FNUZ": np.dtype("|u1"),
    "F8_E5M2FNUZ": np.dtype("|u1"),
    "F8_E8M0": np.dtype("|u1"),
}
# (exponent bits, mantissa bits, bias, encoding of infinities and NaN) of the float8 types.
_FLOAT8 = {
    "F8_E4M3": (4, 3, 7, "fn"),
    "F8_E5M2": (5, 2, 15, "ieee"),
    "F8_E4M3FNUZ": (4, 3, 8, "fnuz"),
    "F8_E5M2FNUZ": (5, 2, 16, "fnuz"),
    "F8_E8M0": (8, 0, 127, "e8m0"),
}


# The ml_dtypes types (NumPy's bfloat16 and float8 as JAX uses them) by safetensors code.
ML_DTYPE_NAMES = {
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F8_E8M0": "float8_e8m0fnu",
}
_ML_CODES = {name: code for code, name in ML_DTYPE_NAMES.items()}


def ml_dtype_code(dtype: np.dtype[Any], key: str) -> str | None:
    """The safetensors code of an ml_dtypes dtype (``"BF16"`` for bfloat16); ``None`` for others.

    Raises:
        TypeError: For an ml_dtypes dtype safetensors has no code for (int4,
            float4_e2m1fn, float8_e3m4, ...), naming ``key``.
    """
    if getattr(dtype.type, "__module__", "") != "ml_dtypes":
        return None
    code = _ML_CODES.get(dtype.name)
    if code is None or NATIVE_CARRIERS[code].itemsize != dtype.itemsize:
        raise TypeError(
            f"cannot save the array at {key!r}: dtype {dtype.name} has no safetensors type "
            f"(supported ml_dtypes types: {', '.join(ML_DTYPE_NAMES.values())}); cast it to "
            "one of them or to a NumPy dtype first, e.g. array.astype(numpy.int8)"
        )
    return code


def ml_dtypes_module() -> Any:
    """The ml_dtypes module, or ``None`` where it is not installed."""
    try:
        import ml_dtypes
    except ImportError:
        return None
    return ml_dtypes


def native_array(carrier: np.ndarray, code: str) -> np.ndarray:
    """``carrier``'s bytes as the ml_dtypes type of ``code`` (no copy); where ml_dtypes is not
    installed, widened exactly to float32 (see :func:`widen_to_float32`).

    Raises:
        ValueError: For a code that is not one of ``NATIVE_CARRIERS``.
    """
    module = ml_dtypes_module()
    if module is None:
        return widen_to_float32(carrier, code)
    return carrier.view(np.dtype(getattr(module, ML_DTYPE_NAMES[code])))


def carrier_dtype(code: str) -> np.dtype[Any] | None:
    """The unsigned NumPy dtype carrying the bytes of safetensors type ``code`` (``None``: none)."""
    return NATIVE_CARRIERS.get(code)


def _float8_table(code: str) -> np.ndarray:
    """The float32 value of each of the 256 bit patterns of a float8 type (exact)."""
    exp_bits, man_bits, bias, encoding = _FLOAT8[code]
    bits = np.arange(256, dtype=np.int64)
    if encoding == "e8m0":
        table = np.ldexp(1.0, bits - bias)
        table[bits == 0xFF] = np.nan
        return table.astype(np.float32)
    sign = np.where(bits >> 7 == 1, -1.0, 1.0)
    exponent = (bits >> man_bits) & ((1 << exp_bits) - 1)
    mantissa = (bits & ((1 << man_bits) - 1)).astype(np.float64) / (1 << man_bits)
    normal = np.ldexp(1.0 + mantissa, exponent - bias)
    subnormal = np.ldexp(mantissa, 1 - bias)
    table = sign * np.where(exponent == 0, subnormal, normal)
    top = (1 << exp_bits) - 1
    if encoding == "ieee":
        table[(exponent == top) & (mantissa == 0)] = (
            sign[(exponent == top) & (mantissa == 0)] * np.inf
        )
        table[(exponent == top) & (mantissa != 0)] = np.nan
    elif encoding == "fn":
        table[(exponent == top) & (mantissa == 1 - 1 / (1 << man_bits))] = np.nan
    else:  # fnuz: no infinities, no negative zero; 0x80 is the NaN
        table[0x80] = np.nan
    return table.astype(np.float32)


def widen_to_float32(carrier: np.ndarray, code: str) -> np.ndarray:
    """The float32 values of ``carrier``'s bytes read as safetensors type ``code`` (exact).

    This is what NumPy readers get for BF16 and float8 tensors, which NumPy
    cannot hold: every value of those types is a float32 value.

    Raises:
        ValueError: For a code that is not one of ``NATIVE_CARRIERS``.
    """
    if code == "BF16":
        bits = carrier.astype(np.uint32) << 16
        return bits.view(np.float32)
    if code in _FLOAT8:
        widened: np.ndarray = _float8_table(code)[carrier]
        return widened
    raise ValueError(f"no float32 widening for safetensors dtype {code!r}")


def safetensors_dtype(dtype: np.dtype[Any]) -> str:
    """The safetensors dtype for a little-endian NumPy dtype; ``U8`` (raw bytes) when none fits."""
    return _NP_TO_ST.get(dtype.str, "U8")


def numpy_dtype(name: str) -> np.dtype[Any] | None:
    """The NumPy dtype for a safetensors dtype name, or ``None`` when NumPy has none."""
    return _ST_TO_NP.get(name)


def _reject_constant(token: str) -> Any:
    raise ValueError(f"non-standard JSON constant {token}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r:.100}")
            seen.add(key)
    return out


_DEPTH_CHUNK = 1 << 24
# Every byte but the ones that matter for nesting: quotes and brackets.
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')


def json_depth(data: bytes) -> int:
    """How deeply JSON text nests lists and objects, found without parsing it.

    Linear and without recursion (a few passes in C and NumPy), so it can run
    before a parser that recurses once per level. Exact for valid JSON; for
    invalid JSON, at least the depth a parser reaches before it fails.
    """
    if b"\\" in data:
        # Escaped backslashes pair up from the left; then every escaped quote is one.
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    kept = np.frombuffer(data.translate(None, _NOT_STRUCTURE), dtype=np.uint8)
    quote = kept == ord('"')
    # Quotes so far odd: inside a string (an opening quote counts, a closing one does not).
    structural = np.bitwise_xor.accumulate(quote.view(np.uint8)).view(np.bool_)
    np.logical_or(structural, quote, out=structural)
    np.logical_not(structural, out=structural)
    # "[" and "{" have bit 1 set, "]" and "}" do not: steps of +1 and -1.
    steps = (kept[structural] & 2).view(np.int8) - 1
    del kept, quote, structural
    deepest = level = 0
    for start in range(0, len(steps), _DEPTH_CHUNK):
        levels = np.cumsum(steps[start : start + _DEPTH_CHUNK], dtype=np.int64)
        deepest = max(deepest, level + int(levels.max()))
        level += int(levels[-1])
    return deepest


def strict_json_loads(data: bytes, what: str) -> Any:
    """Parse standard JSON (no NaN, no duplicate keys, at most ``MAX_JSON_DEPTH`` levels).

    The depth is checked before parsing, so deep nesting never reaches the
    (recursive) parser.

    Raises:
        CorruptCheckpointError: For anything else, including text that is not UTF-8.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CorruptCheckpointError(f"{what} is not valid JSON: {err}") from None
    if json_depth(data) > MAX_JSON_DEPTH:
        raise CorruptCheckpointError(
            f"{what} is not valid JSON: nested more than {MAX_JSON_DEPTH} levels deep"
        )
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as err:
        raise CorruptCheckpointError(f"{what} is not valid JSON: {err}") from None


def shape_is_valid(shape: object) -> bool:
    """Whether ``shape`` is a list of at most ``MAX_NDIM`` ints >= 0."""
    return (
        isinstance(shape, list)
        and len(shape) <= MAX_NDIM
        and all(is_int(d) and d >= 0 for d in shape)
    )


def empty_shape_fits(shape: list[int], itemsize: int) -> bool:
    """Whether NumPy can make an array of ``shape`` (an empty one may still be refused)."""
    return math.prod(max(d, 1) for d in shape) * max(itemsize, 1) <= _MAX_SHAPE_BYTES


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry in a safetensors header, with absolute file offsets."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    length: int


def build_header(
    entries: list[tuple[str, str, tuple[int, ...], int]], metadata: Mapping[str, str]
) -> bytes:
    """Build the length prefix and padded JSON header for ``(name, dtype, shape, nbytes)`` entries.

    Returns:
        The bytes to write before the tensor data; tensors follow in ``entries`` order.
    """
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    start = 0
    for name, dtype, shape, nbytes in entries:
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [start, start + nbytes],
        }
        start += nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text


def parse_header(
    head: bytes, file_size: int, *, what: str, read_more: Any
) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Validate a safetensors header and return its tensors and metadata.

    Args:
        head: The first bytes of the file (at least 8 when the file has them).
        file_size: The file's size in bytes.
        what: How to name the file in errors.
        read_more: ``read_more(offset, length) -> bytes`` for the header JSON.

    Raises:
        CorruptCheckpointError: When the header length, JSON, dtypes, shapes
            or offsets do not describe tensors inside the file.
        CheckpointTooLargeError: When the header is larger than
            ``PIPESTATE_MAX_HEADER_BYTES`` (100 MB by default).
    """
    if file_size < 8 or len(head) < 8:
        raise CorruptCheckpointError(
            f"{what} is {file_size} bytes, too short to be a safetensors file"
        )
    (n,) = struct.unpack("<Q", head[:8])
    if n > file_size - 8:
        raise CorruptCheckpointError(
            f"{what}: header length {n} is larger than the file ({file_size} bytes) allows"
        )
    HEADER_LIMIT.check(n, f"{what}: the header")
    raw = read_more(8, n)
    if not raw.lstrip().startswith(b"{"):
        raise CorruptCheckpointError(f"{what}: header is not a JSON object")
    header = strict_json_loads(raw, f"{what} header")
    if not isinstance(header, dict):
        raise CorruptCheckpointError(f"{what}: header is not a JSON object")
    data_start = 8 + n
    data_size = file_size - data_start
    metadata: dict[str, str] = {}
    tensors: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise CorruptCheckpointError(f"{what}: __metadata__ must map str to str")
            metadata = entry
            continue
        tensors[name] = _parse_entry(name, entry, data_start, data_size, what)
    spans = sorted((t.offset, t.offset + t.length, t.name) for t in tensors.values())
    for (_, end, left), (start, _, right) in itertools.pairwise(spans):
        if start < end:
            raise CorruptCheckpointError(
                f"{what}: tensors {left!r:.200} and {right!r:.200} overlap"
            )
    return tensors, metadata


def _parse_entry(
    name: str, entry: object, data_start: int, data_size: int, what: str
) -> TensorInfo:
    where = f"{what}: tensor {name!r:.200}"
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise CorruptCheckpointError(f"{where} must have exactly dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or (dtype not in _ST_TO_NP and dtype not in _ITEMSIZE_ONLY):
        raise CorruptCheckpointError(f"{where} has unknown dtype {dtype!r:.50}")
    np_dtype = _ST_TO_NP.get(dtype)
    itemsize = np_dtype.itemsize if np_dtype is not None else _ITEMSIZE_ONLY[dtype]
    if not shape_is_valid(shape):
        raise CorruptCheckpointError(f"{where} has invalid shape {shape!r:.200}")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(is_int(o) for o in offsets):
        raise CorruptCheckpointError(f"{where} has invalid data_offsets {offsets!r:.100}")
    begin, end = offsets
    if not 0 <= begin <= end <= data_size:
        raise CorruptCheckpointError(
            f"{where} has data_offsets [{begin}, {end}] outside the file's {data_size} data bytes"
        )
    expected = math.prod(shape) * itemsize
    if expected != end - begin:
        raise CorruptCheckpointError(
            f"{where}: dtype {dtype} and shape {shape!r:.200} need {expected} bytes, "
            f"data_offsets span {end - begin}"
        )
    if not empty_shape_fits(shape, itemsize):
        raise CorruptCheckpointError(f"{where} has shape {shape!r:.200}, too large for NumPy")
    return TensorInfo(name, dtype, tuple(shape), data_start + begin, end - begin)
