"""Elements as bytes and back, without pickle: the payload of a materialised element's record.

A payload is::

    uint32  length of the structure text, little endian
    bytes   the structure, as compact JSON: "L" a leaf, ["T", [items]] a tuple,
            ["D", [[key, item], ...]] a dict (str keys, in order),
            ["N", name, [fields], [items]] a named tuple
    then, per leaf in order:
    uint8   length of the dtype text; the dtype text (NumPy ``dtype.str``: "<i8", "|S5")
    uint8   ndim; ndim x uint64 dims
    bytes   the leaf's data, C order (its size follows from the dtype and shape)

Only bool, numeric and byte-string dtypes are written or read, so a payload
never makes NumPy build objects; every length is checked against the bytes
there are, so a damaged or hostile payload raises ``DataLossError`` instead of
allocating what it claims. Compressed payloads (``"GZIP"``) are a uint64
uncompressed length followed by the gzip stream, inflated within that length.
"""

from __future__ import annotations

import collections
import functools
import json
import keyword
import re
import struct
import zlib
from typing import Any

import numpy as np

from pipestate._validate import brief
from pipestate.data._structure import Element, is_namedtuple
from pipestate.errors import DataLossError

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_DTYPE = re.compile(r"[<>|=][biufc][0-9]{1,2}|\|S[0-9]{1,9}|\|b1")
_MAX_NDIM = 32
_MAX_DEPTH = 64
_MAX_RECORD = 1 << 40
_GZIP_WBITS = 31  # a gzip header and trailer around the deflate stream


class _Malformed(Exception):  # noqa: N818 - internal, always turned into DataLossError
    """A payload that does not parse; turned into a DataLossError naming the file."""


def _structure_of(element: Element, leaves: list[Any], what: str, depth: int = 0) -> Any:
    """The structure of ``element`` as nested tuples (hashable), appending its leaves."""
    if depth > _MAX_DEPTH:
        raise TypeError(f"{what}: the element is nested more than {_MAX_DEPTH} levels deep")
    if isinstance(element, dict):
        items = []
        for key, value in element.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{what}: can only store dict elements with str keys, got key "
                    f"{brief(key, 60)}; convert the keys to str in a map() first"
                )
            items.append((key, _structure_of(value, leaves, what, depth + 1)))
        return ("D", tuple(items))
    if is_namedtuple(element):
        fields = tuple(type(element)._fields)
        inner = tuple(_structure_of(value, leaves, what, depth + 1) for value in element)
        return ("N", type(element).__name__, fields, inner)
    if isinstance(element, tuple):
        return ("T", tuple(_structure_of(value, leaves, what, depth + 1) for value in element))
    leaves.append(element)
    return "L"


@functools.lru_cache(maxsize=256)
def _structure_text(structure: Any) -> bytes:
    text = json.dumps(structure, separators=(",", ":")).encode()
    return _U32.pack(len(text)) + text


def encode(element: Element, what: str) -> tuple[bytes, Any]:
    """The payload of ``element`` (NumPy leaves in nested tuples / dicts) and its signature.

    The signature (hashable: the structure and each leaf's dtype and shape) is
    what the writer keeps the elements' spec from.

    Raises:
      TypeError: a leaf that is not a bool, numeric or byte-string NumPy value,
        or a dict key that is not a str.
    """
    leaves: list[Any] = []
    structure = _structure_of(element, leaves, what)
    parts = [_structure_text(structure)]
    specs = []
    for leaf in leaves:
        array = np.asarray(leaf)
        if array.dtype.kind not in "biufcS":
            raise TypeError(
                f"{what}: can only store bool, numeric and byte-string values, got "
                f"{array.dtype} {brief(leaf, 80)}"
            )
        dtype = array.dtype.str
        specs.append((dtype, array.shape))
        encoded = dtype.encode()
        parts += [bytes((len(encoded),)), encoded, bytes((array.ndim,))]
        parts += [_U64.pack(dim) for dim in array.shape]
        parts.append(np.ascontiguousarray(array).tobytes())
    return b"".join(parts), (structure, tuple(specs))


def compress(payload: bytes, compression: str | None) -> bytes:
    """The payload as stored: as it is, or gzip-compressed after its length."""
    if compression is None:
        return payload
    deflate = zlib.compressobj(6, zlib.DEFLATED, _GZIP_WBITS)
    return _U64.pack(len(payload)) + deflate.compress(payload) + deflate.flush()


def decompress(data: bytes, compression: str | None) -> bytes:
    """The payload a stored record holds (raises ``_Malformed``)."""
    if compression is None:
        return data
    if len(data) < _U64.size:
        raise _Malformed("the compressed record is shorter than its length field")
    (size,) = _U64.unpack_from(data)
    if size > _MAX_RECORD:
        raise _Malformed(f"the compressed record claims {size} bytes, more than any record has")
    inflate = zlib.decompressobj(_GZIP_WBITS)
    try:
        out = inflate.decompress(data[_U64.size :], size)
    except zlib.error as err:
        raise _Malformed(f"the compressed record is not valid gzip data ({err})") from None
    if len(out) != size or not inflate.eof or inflate.unconsumed_tail:
        raise _Malformed(f"the compressed record does not inflate to its {size} bytes")
    return out


@functools.lru_cache(maxsize=64)
def _parse_structure(text: bytes) -> Any:
    try:
        structure = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise _Malformed(f"the element structure is not valid JSON ({err})") from None
    _check_structure(structure, 0)
    return structure


def _is_name(text: str) -> bool:
    """A name ``collections.namedtuple`` takes for a class or field (checked before it does)."""
    return text.isidentifier() and not keyword.iskeyword(text) and not text.startswith("_")


def _check_structure(node: Any, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise _Malformed("the element structure is nested too deeply")
    if node == "L":
        return
    if not isinstance(node, list) or not node:
        raise _Malformed(f"unknown element structure node {brief(node, 60)}")
    kind = node[0]
    if kind == "T" and len(node) == 2 and isinstance(node[1], list):
        for item in node[1]:
            _check_structure(item, depth + 1)
    elif kind == "D" and len(node) == 2 and isinstance(node[1], list):
        for pair in node[1]:
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
                raise _Malformed(f"malformed dict entry {brief(pair, 60)} in the structure")
            _check_structure(pair[1], depth + 1)
    elif (
        kind == "N"
        and len(node) == 4
        and isinstance(node[1], str)
        and _is_name(node[1])
        and isinstance(node[2], list)
        and all(isinstance(f, str) and _is_name(f) for f in node[2])
        and len(set(node[2])) == len(node[2])
        and isinstance(node[3], list)
        and len(node[2]) == len(node[3])
    ):
        for item in node[3]:
            _check_structure(item, depth + 1)
    else:
        raise _Malformed(f"unknown element structure node {brief(node, 60)}")


@functools.lru_cache(maxsize=64)
def _namedtuple(name: str, fields: tuple[str, ...]) -> Any:
    # Names and fields were checked as identifiers; namedtuple validates them again.
    return collections.namedtuple(name, fields)


def check_dtype(text: str) -> np.dtype[Any]:
    """The dtype ``text`` names, if bool, numeric or byte-string (else ``_Malformed``)."""
    if not _DTYPE.fullmatch(text):
        raise _Malformed(f"unsupported dtype {text!r}")
    return np.dtype(text)


_LEAF_HEADERS: dict[bytes, tuple[np.dtype[Any], tuple[int, ...], int]] = {}
_MAX_LEAF_HEADERS = 4096


def _leaf_header(header: bytes) -> tuple[np.dtype[Any], tuple[int, ...], int]:
    """The dtype, shape and data size a leaf header names (headers repeat: kept once parsed)."""
    known = _LEAF_HEADERS.get(header)
    if known is not None:
        return known
    size = header[0]
    dtype = check_dtype(header[1 : 1 + size].decode("ascii", "replace"))
    ndim = header[1 + size]
    shape = tuple(_U64.unpack_from(header, 2 + size + 8 * i)[0] for i in range(ndim))
    count = 1
    for dim in shape:
        count *= dim
    parsed = (dtype, shape, count * dtype.itemsize)
    if len(_LEAF_HEADERS) < _MAX_LEAF_HEADERS:
        _LEAF_HEADERS[header] = parsed
    return parsed


class _Cursor:
    """Reads the leaves of a payload in order, checking every length."""

    def __init__(self, payload: bytes, start: int) -> None:
        self.payload = payload
        self.pos = start

    def leaf(self) -> Any:
        payload, pos = self.payload, self.pos
        total = len(payload)
        if pos + 2 > total:
            raise _Malformed("a leaf header runs past the end of the record")
        size = payload[pos]
        if pos + 2 + size > total:
            raise _Malformed("a leaf header runs past the end of the record")
        ndim = payload[pos + 1 + size]
        if ndim > _MAX_NDIM:
            raise _Malformed(f"a leaf has {ndim} dimensions")
        end = pos + 2 + size + 8 * ndim
        if end > total:
            raise _Malformed("a leaf header runs past the end of the record")
        dtype, shape, nbytes = _leaf_header(payload[pos:end])
        if end + nbytes > total:
            raise _Malformed(f"a leaf runs past the end of the record ({end + nbytes} > {total})")
        self.pos = end + nbytes
        array = np.frombuffer(
            payload, dtype, nbytes // dtype.itemsize if dtype.itemsize else 0, end
        )
        if not shape:
            if dtype.kind == "S":
                # From the raw bytes: indexing an S array drops trailing NUL bytes.
                return np.bytes_(bytes(payload[end : end + nbytes]))
            return array[0] if len(array) else np.zeros((), dtype)[()]
        return array.reshape(shape).copy()

    def build(self, node: Any) -> Element:
        if node == "L":
            return self.leaf()
        kind = node[0]
        if kind == "T":
            return tuple(self.build(item) for item in node[1])
        if kind == "D":
            return {key: self.build(item) for key, item in node[1]}
        cls = _namedtuple(node[1], tuple(node[2]))
        return cls(*(self.build(item) for item in node[3]))


def decode_payload(data: bytes, compression: str | None) -> Element:
    """The element a stored record holds; raises ``_Malformed`` (or NumPy's
    ``ValueError`` / ``TypeError``) for one that does not parse."""
    payload = decompress(data, compression)
    if len(payload) < _U32.size:
        raise _Malformed("the record is shorter than its structure length")
    (size,) = _U32.unpack_from(payload)
    end = _U32.size + size
    if end > len(payload):
        raise _Malformed("the structure runs past the end of the record")
    structure = _parse_structure(payload[_U32.size : end])
    cursor = _Cursor(payload, end)
    element = cursor.build(structure)
    if cursor.pos != len(payload):
        raise _Malformed(f"{len(payload) - cursor.pos} bytes follow the last leaf")
    return element


def _leaves_of(node: Any) -> int:
    if node == "L":
        return 1
    items = node[1] if node[0] == "T" else [v for _, v in node[1]] if node[0] == "D" else node[3]
    return sum(_leaves_of(item) for item in items)


def layout(payload: bytes) -> tuple[Any, list[tuple[int, int]], list[tuple[Any, ...]]] | None:
    """Where an uncompressed payload's parts are, or ``None`` if it does not parse.

    Returns the structure, the byte ranges of its headers (the structure's and
    each leaf's) and per leaf ``(data offset, dtype, shape, data size)``:
    payloads whose header ranges hold the same bytes have their leaves at the
    same offsets.
    """
    try:
        (size,) = _U32.unpack_from(payload)
        end = _U32.size + size
        structure = _parse_structure(payload[_U32.size : end])
        headers = [(0, end)]
        leaves: list[tuple[Any, ...]] = []
        pos = end
        for _ in range(_leaves_of(structure)):
            length = payload[pos]
            ndim = payload[pos + 1 + length]
            if ndim > _MAX_NDIM:
                return None
            stop = pos + 2 + length + 8 * ndim
            if stop > len(payload):
                return None
            dtype, shape, nbytes = _leaf_header(payload[pos:stop])
            headers.append((pos, stop))
            leaves.append((stop, dtype, shape, nbytes))
            pos = stop + nbytes
        if pos != len(payload):
            return None
    except (_Malformed, ValueError, TypeError, IndexError, struct.error):
        return None
    return structure, headers, leaves


def build(structure: Any, leaves: Any) -> Element:
    """An element of ``structure`` whose leaves are taken in order from the iterator ``leaves``."""
    if structure == "L":
        return next(leaves)
    kind = structure[0]
    if kind == "T":
        return tuple(build(item, leaves) for item in structure[1])
    if kind == "D":
        return {key: build(item, leaves) for key, item in structure[1]}
    cls = _namedtuple(structure[1], tuple(structure[2]))
    return cls(*(build(item, leaves) for item in structure[3]))


MALFORMED = (_Malformed, ValueError, TypeError)
"""What ``decode_payload`` raises for a payload that does not parse."""


def decode(data: bytes, compression: str | None, where: str) -> Element:
    """The element a stored record holds.

    Raises:
      DataLossError: the record does not parse (``where`` names the file and offset).
    """
    try:
        return decode_payload(data, compression)
    except MALFORMED as err:
        raise DataLossError(f"{where}: not a valid stored element: {err}") from None
