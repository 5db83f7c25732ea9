"""``snapshot``: the first run writes the input's elements to a directory, later runs read it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipestate._validate import check_function
from pipestate.data import _element_reader, _element_store
from pipestate.data._element_store import check_compression, directory_root
from pipestate.data._fingerprint import describe_callable
from pipestate.data._materialize import MaterializeDataset, MaterializeIterator
from pipestate.data._save import shard_of
from pipestate.data._structure import Element
from pipestate.data.dataset import Dataset
from pipestate.data.ops.load import read_through


class SnapshotDataset(MaterializeDataset):
    """The input's elements, written to ``path`` by the first full pass and read back after.

    As ``tf.data.Dataset.snapshot``: the snapshot of an input lives in
    ``<path>/<fingerprint of the input>/``, so a changed pipeline writes a new
    one beside the old. The first pass of a run whose snapshot is not complete
    passes the input's elements on while writing them (the same files as
    :meth:`Dataset.save`, so ``Dataset.load`` reads a snapshot directory); a
    pass over a complete snapshot reads it, in the order written, or through
    ``reader_func``.

    Saving and restoring: while writing, the state holds the input's position
    and the bytes written; a restore in a new process takes the data file over
    and continues writing (on a local filesystem; elsewhere it passes the
    elements through and a later run writes the snapshot). While reading, the
    state is one index (or the ``reader_func`` dataset's state). See
    ``docs/ops.md#snapshot``.

    Args:
      path: the snapshots' directory (a local path or an fsspec URL).
      compression: ``"AUTO"`` (none), ``None`` or ``""`` (none), or ``"GZIP"``.
      reader_func: reads a complete snapshot: a function of the dataset of its
        per-shard datasets, returning the dataset to read.
      shard_func: maps an element (a tuple unpacked) to its scalar integer shard.

    Raises:
      TypeError: a bad ``path``, or a ``reader_func`` / ``shard_func`` that is not callable.
      ValueError: an unknown ``compression``.

    Example:
      >>> import pipestate as ps
      >>> ds = ps.Dataset.range(3).snapshot("memory://snapshots/doc")
      >>> [int(x) for x in ds], [int(x) for x in ds]  # written, then read
      ([0, 1, 2], [0, 1, 2])
    """

    _op_name = "snapshot"
    _iterator_class = MaterializeIterator

    def __init__(
        self,
        parent: Dataset,
        path: Any,
        compression: Any = "AUTO",
        reader_func: Callable[[Dataset], Any] | None = None,
        shard_func: Callable[..., Any] | None = None,
    ) -> None:
        self._root = directory_root(path, "snapshot")
        super().__init__(parent, check_compression(compression, "snapshot", auto=True))
        self._reader_func = check_function("reader_func", reader_func, "snapshot", allow_none=True)
        self._shard_func = check_function("shard_func", shard_func, "snapshot", allow_none=True)
        if reader_func is not None:
            # Checked now, on a dataset of no shards, as tf.data traces it when built.
            read_through(reader_func, self._root, None, "snapshot")

    def _params(self) -> dict[str, Any]:
        return {
            "path": self._root.rstrip("/"),
            "compression": self._compression,
            "reader_func": None
            if self._reader_func is None
            else describe_callable(self._reader_func),
            "shard_func": None if self._shard_func is None else describe_callable(self._shard_func),
        }

    def _location(self, fingerprint: str) -> _element_store.Location | None:
        return _element_store.Location(f"{self._root}{fingerprint}/")

    def _shard(self, element: Element) -> int:
        return shard_of(self._shard_func, element, "snapshot")

    def _reader(self, stored: _element_reader.StoredElements) -> Dataset | None:
        if self._reader_func is None:
            return None
        root = stored.location.url
        return read_through(self._reader_func, root, stored, "snapshot")
