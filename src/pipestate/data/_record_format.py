"""The TFRecord file format: framing and checksums.

Each record is::

    uint64  length, little endian
    uint32  masked crc32c of the 8 length bytes
    bytes   data[length]
    uint32  masked crc32c of the data

where ``masked(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8 (mod 2**32)``.
It is TensorFlow's format exactly, so files written by ``tf.io.TFRecordWriter``
read back here and the other way around.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

import google_crc32c

from pipestate.errors import DataLossError

HEADER_SIZE = 12
FOOTER_SIZE = 4
_MASK_DELTA = 0xA282EAD8
_MASK32 = 0xFFFFFFFF
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_HEADER = struct.Struct("<QI")
_READ_CHUNK = 1 << 24  # large records are read in chunks: a damaged length can't allocate


def masked_crc(data: bytes | memoryview) -> int:
    """The masked crc32c of ``data``, as stored in record files."""
    crc = int(google_crc32c.value(bytes(data)))
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _MASK32


def frame(data: bytes) -> tuple[bytes, bytes]:
    """The header and footer that surround ``data`` in a record file."""
    length = _LENGTH.pack(len(data))
    return length + _CRC.pack(masked_crc(length)), _CRC.pack(masked_crc(data))


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    if size <= _READ_CHUNK:
        return stream.read(size)
    parts = []
    while size:
        part = stream.read(min(size, _READ_CHUNK))
        if not part:
            break
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def read_record(stream: BinaryIO, path: str, offset: int, op: str) -> tuple[bytes, int] | None:
    """The record at ``offset`` of ``stream`` and the offset after it; ``None`` at the end.

    Raises:
      DataLossError: a truncated record or a checksum mismatch (naming the
        file and the record's byte offset).
    """
    header = stream.read(HEADER_SIZE)
    if not header:
        return None
    if len(header) < HEADER_SIZE:
        raise DataLossError(
            f"{op}: truncated record at byte offset {offset} of {path!r}: the header has "
            f"{len(header)} of {HEADER_SIZE} bytes"
        )
    length, length_crc = _HEADER.unpack(header)
    if masked_crc(header[:8]) != length_crc:
        raise DataLossError(
            f"{op}: corrupted record at byte offset {offset} of {path!r}: the checksum of its "
            "length does not match (a damaged file, or not a record file)"
        )
    data = _read_exact(stream, length)
    footer = stream.read(FOOTER_SIZE) if len(data) == length else b""
    if len(footer) < FOOTER_SIZE:
        raise DataLossError(
            f"{op}: truncated record at byte offset {offset} of {path!r}: expected "
            f"{length} data bytes and a {FOOTER_SIZE}-byte checksum, the file ends after "
            f"{len(data) + len(footer)}"
        )
    if masked_crc(data) != _CRC.unpack(footer)[0]:
        raise DataLossError(
            f"{op}: corrupted record at byte offset {offset} of {path!r}: the checksum of its "
            f"{length} data bytes does not match"
        )
    return data, offset + HEADER_SIZE + length + FOOTER_SIZE
