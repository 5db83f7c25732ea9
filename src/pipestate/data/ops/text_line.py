"""``TextLineDataset``: the lines of text files, in order."""

from __future__ import annotations

from typing import Any, BinaryIO

import numpy as np

from pipestate.data._files import FileDataset
from pipestate.data._remote import ReadOptions


class TextLineDataset(FileDataset):
    """The lines of one or more text files, as ``tf.data.TextLineDataset``.

    Each element is a line as an ``np.bytes_`` scalar, without its ``\\n`` or
    ``\\r\\n`` terminator; a last line without a terminator is kept. As in
    TensorFlow, every ``\\r`` is dropped, also inside a line. Files are read
    one after another in the order of ``filenames``.

    The iterator state is the current file (its index in a list of names, or
    the name read from a dataset of names, with that dataset's state) and the
    byte offset of the next line in it. A restore opens that file and seeks to
    the offset, without reading what comes before. A compressed file can't
    seek: its restore decompresses and discards everything before the offset.

    Args:
      filenames: a file name (str, bytes or ``os.PathLike``; a local path or
        an fsspec URL such as ``memory://x.txt`` or ``s3://bucket/x.txt``),
        a list or tuple of them, or a Dataset of them (e.g. ``list_files``).
      compression_type: ``None`` or ``""`` (none), ``"GZIP"`` or ``"ZLIB"``.
      buffer_size: bytes to read ahead from remote filesystems and buffer
        for decompression; ``None`` for the default.
      num_parallel_reads: files read at once, interleaved one element at a
        time in tf.data's order (``cycle_length=num_parallel_reads``,
        ``block_length=1``), each read ahead on a thread; ``AUTOTUNE`` reads
        4; ``None`` or 1 reads them one after another.
      name: a label for the op (``Dataset.name``), shown in ``repr``.
      read_options: read-ahead and retries for remote filesystems
        (:class:`ReadOptions`; ``None`` for the defaults). ``buffer_size``,
        when given, is the block size.

    Raises:
      TypeError: ``filenames`` is not a name, a sequence of names or a Dataset,
        ``buffer_size`` or ``num_parallel_reads`` is not an integer,
        ``read_options`` is not a ``ReadOptions``, or ``name`` is not a
        non-empty string.
      ValueError: an unknown ``compression_type``, a negative ``buffer_size``,
        or ``num_parallel_reads < 1`` (other than ``AUTOTUNE``).
      NotFoundError: (while iterating) a file does not exist.
      UnavailableError: (while iterating) a remote read kept failing with
        transient errors through every attempt ``read_options`` allows.
      DataLossError: (while iterating) a compressed file is damaged.

    Example:
      >>> import pipestate as ps
      >>> ds = ps.data.TextLineDataset(ps.Dataset.list_files("data/*.txt", shuffle=False))
    """

    _op_name = "text_line"

    def __init__(
        self,
        filenames: Any,
        compression_type: str | None = None,
        buffer_size: int | None = None,
        num_parallel_reads: int | None = None,
        name: str | None = None,
        *,
        read_options: ReadOptions | None = None,
    ) -> None:
        super().__init__(filenames, compression_type, buffer_size, num_parallel_reads, read_options)
        self._named(name)

    def _read(self, stream: BinaryIO, path: str, offset: int) -> tuple[Any, int] | None:
        line = stream.readline()
        if not line:
            return None
        end = offset + len(line)
        terminated = line.endswith(b"\n")
        if terminated:
            line = line[:-1]
        if b"\r" in line:
            line = line.replace(b"\r", b"")  # as TensorFlow: every CR goes, not only before LF
            if not (line or terminated):
                return None  # as TensorFlow: nothing but CRs after the last LF is no line
        return np.bytes_(line), end
