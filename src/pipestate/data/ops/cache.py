"""``cache``: the input's elements, kept in memory or in files after the first full pass."""

from __future__ import annotations

from typing import Any

from pipestate.data import _element_store
from pipestate.data._files import to_path
from pipestate.data._materialize import MaterializeDataset, MaterializeIterator
from pipestate.data.dataset import Dataset


class CacheDataset(MaterializeDataset):
    """The input's elements; the first full pass stores them, later passes read the store.

    As ``tf.data.Dataset.cache``: with ``filename=""`` the elements are kept in
    memory (on this dataset, shared by its iterators and by the passes of an
    enclosing ``repeat``); otherwise in files named ``<filename>.<name>`` (a
    local path or an fsspec URL). A pass that stops early, or whose input
    raised, never publishes a store; a store is used only when complete.

    The input is read as its first epoch whichever pass fills the store, so
    the store holds the same elements (a ``shuffle`` below the cache gives one
    fixed order, as in tf.data). A memory cache belongs to the input with its
    seeds resolved: an iterator that draws other seeds (``seed=None`` below
    the cache) fills its own.

    Saving and restoring: while filling, the state holds the input's position
    and the number of bytes of the data file written so far; a restore takes
    the file over (cut to that length) and continues filling without computing
    the stored elements again. Reading a complete store, the state is one
    index, restored in O(1). A memory cache can't be in the state: a restored
    fill passes through without storing (a later pass fills), and a restored
    read in a process without the cache computes the input up to the saved
    position again, storing it. See ``docs/ops.md#cache`` for the files and
    what a crash leaves.

    Two iterators filling the same file cache at once each write their own
    data file; the first to finish publishes, the other's file is dropped.

    Args:
      filename: ``""`` for memory, else the prefix of the cache's files.

    Raises:
      TypeError: ``filename`` is not a str, bytes or ``os.PathLike``.
      InvalidArgumentError: (at ``iter()``) the files hold another pipeline's elements.
      DataLossError: (at ``iter()`` or while reading) a damaged or truncated
        cache file; the message names the file and the offset.

    Example:
      >>> import pipestate as ps
      >>> ds = ps.Dataset.range(3).map(lambda x: x * 10).cache().repeat(2)
      >>> [int(x) for x in ds]
      [0, 10, 20, 0, 10, 20]
    """

    _op_name = "cache"
    _iterator_class = MaterializeIterator

    def __init__(self, parent: Dataset, filename: Any = "") -> None:
        super().__init__(parent, None)
        self._filename = to_path(filename, "cache")

    def _params(self) -> dict[str, Any]:
        return {"filename": self._filename}

    def _location(self, fingerprint: str) -> _element_store.Location | None:
        return _element_store.Location(self._filename + ".") if self._filename else None
