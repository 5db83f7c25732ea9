"""Tar members read one header at a time from a seekable stream, from any member's offset.

Why not ``tarfile.open``: its stream mode (``"r|"``, what WebDataset uses)
can't seek, so a restore would read the shard from its start; and its
seekable mode treats a damaged header after the first member as the end of
the archive, silently cutting the epoch short. Here each member's header is
parsed by ``tarfile.TarInfo.frombuf`` (the stdlib's own parser, checksum
included); the members that need more than one header block (GNU long names,
pax headers, sparse files) are handed to ``tarfile.TarInfo.fromtarfile``, which
reads those extra blocks exactly as ``tarfile`` does. Every damaged or
truncated header, and an archive without its end-of-archive block, raises
:class:`~pipestate.errors.DataLossError` naming the shard and the offset.
"""

from __future__ import annotations

import tarfile
from typing import Any, BinaryIO, NamedTuple

from pipestate.errors import DataLossError

BLOCK = 512
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
# Extended headers hold names and attributes; larger ones are damage, not data.
_MAX_EXTENDED_HEADER = 1 << 20
_EXTENDED = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)
_READ_CHUNK = 1 << 24
# frombuf's HeaderError subclasses (public in tarfile, absent from its type stubs).
_EOF_HEADER: type[Exception] = tarfile.EOFHeaderError  # type: ignore[attr-defined]
_EMPTY_HEADER: type[Exception] = tarfile.EmptyHeaderError  # type: ignore[attr-defined]
_TRUNCATED_HEADER: type[Exception] = tarfile.TruncatedHeaderError  # type: ignore[attr-defined]


class Member(NamedTuple):
    """One tar member: where its headers start, where its data is, and where the next begins."""

    name: str
    offset: int
    data_offset: int
    size: int
    end: int
    regular: bool


class TarCursor:
    """What ``TarInfo.fromtarfile`` reads from a ``TarFile``: the stream and header settings.

    Global pax headers (``g`` members) are kept in ``pax_headers`` and apply
    to the members after them, as in ``tarfile``.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self.fileobj = stream
        self.encoding = tarfile.ENCODING
        self.errors = "surrogateescape"  # tarfile's default for names
        self.pax_headers: dict[str, str] = {}
        self.offset = 0


def read_member(cursor: TarCursor, path: str, offset: int, op: str) -> Member | None:
    """The member whose first header block is at ``offset`` (where the stream is).

    Leaves the stream at the member's data. ``None`` at the end-of-archive
    block.

    Raises:
      DataLossError: a truncated or damaged header, or the file ends without
        an end-of-archive block.
    """
    stream = cursor.fileobj
    buf = stream.read(BLOCK)
    try:
        info = tarfile.TarInfo.frombuf(buf, cursor.encoding, cursor.errors)
    except _EOF_HEADER:
        return None
    except _EMPTY_HEADER:
        raise DataLossError(
            f"{op}: {path!r} ends at byte offset {offset} without the tar end-of-archive block: "
            "the shard is truncated (or not a tar file)"
        ) from None
    except _TRUNCATED_HEADER:
        raise DataLossError(
            f"{op}: truncated tar header at byte offset {offset} of {path!r}: {len(buf)} of "
            f"{BLOCK} bytes"
        ) from None
    except (tarfile.TarError, ValueError, OverflowError) as err:
        raise _damaged(path, offset, op, err) from err
    if info.size < 0:  # base-256 sizes can be negative
        raise _damaged(path, offset, op, ValueError(f"a negative size {info.size}"))
    if info.type in _REGULAR and not cursor.pax_headers:
        # A plain member: one header block, then its data padded to whole blocks.
        data = offset + BLOCK
        return Member(info.name, offset, data, info.size, data + _padded(info.size), True)
    if info.type in _EXTENDED and info.size > _MAX_EXTENDED_HEADER:
        raise _damaged(
            path,
            offset,
            op,
            ValueError(f"an extended header of {info.size} bytes (at most {_MAX_EXTENDED_HEADER})"),
        )
    stream.seek(offset)
    cursor.offset = offset
    try:
        info = tarfile.TarInfo.fromtarfile(cursor)  # type: ignore[arg-type]
    except (tarfile.TarError, ValueError, OverflowError, UnicodeError, EOFError) as err:
        raise _damaged(path, offset, op, err) from err
    if info.size < 0 or cursor.offset < info.offset_data:
        raise _damaged(path, offset, op, ValueError(f"a negative size {info.size}"))
    regular = info.isreg() and info.type != tarfile.GNUTYPE_SPARSE
    return Member(info.name, offset, info.offset_data, info.size, cursor.offset, regular)


def read_data(stream: BinaryIO, member: Member, path: str, op: str) -> bytes:
    """The member's data (the stream is at it), leaving the stream at the next member.

    Raises:
      DataLossError: the file ends inside the data or its padding.
    """
    size = member.size
    if size <= _READ_CHUNK:
        data = stream.read(size)
    else:  # in chunks: a damaged size can't allocate more than the file holds
        parts = []
        remaining = size
        while remaining:
            part = stream.read(min(remaining, _READ_CHUNK))
            if not part:
                break
            parts.append(part)
            remaining -= len(part)
        data = b"".join(parts)
    padding = member.end - member.data_offset - size
    if len(data) < size or (padding and len(stream.read(padding)) < padding):
        raise DataLossError(
            f"{op}: truncated tar member {member.name!r} at byte offset {member.offset} of "
            f"{path!r}: its header says {size} data bytes, the file ends before them "
            "(and their padding)"
        )
    return data


def skip(stream: BinaryIO, member: Member) -> None:
    """Moves the stream past ``member`` without reading its data."""
    stream.seek(member.end)


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _damaged(path: str, offset: int, op: str, err: Any) -> DataLossError:
    return DataLossError(
        f"{op}: damaged tar header at byte offset {offset} of {path!r} "
        f"({type(err).__name__}: {err}); the shard is corrupted or not a tar file"
    )
