"""The iterator ``cache`` and ``snapshot`` share: fill a store while passing elements, or read it.

An iterator is in one of three modes, saved in its state as ``"mode"``:

- ``"fill"``: reads its input (opened as its epoch 0, so what is stored does
  not depend on which pass filled it), passes each element on and appends
  it to the store being filled; at the input's end the store is published
  (a file store's manifest is written; a memory store is kept on the dataset).
- ``"pass"``: reads its input without storing: the store can't be completed
  from this pass (a restored fill whose written part is gone or held by a live
  writer, an input that raised). A later pass fills it.
- ``"read"``: reads the complete store, element ``"count"`` next: O(1) restore.

The state: ``{"mode", "count", "file", "bytes", "source", "parent", "seed"}``:
the elements passed or read so far, the data file being filled (its token, or
``None``) and how many bytes of it hold those elements, while reading the
digest of the input (seeds resolved) the store was filled from, and the
input's state (``None`` when reading). A restored read whose store is gone
computes it again from the input, if this iterator's input is that one.
A restored iterator acts on a ``"fill"`` or ``"read"`` state at its first
element, so the state just after ``set_state(s)`` is ``s``.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from pipestate._validate import brief
from pipestate.data import _element_reader, _element_store, _element_writer, _fingerprint
from pipestate.data._structure import Element, flatten
from pipestate.data.dataset import Dataset
from pipestate.data.iterator import DatasetIterator, State, StreamIterator, read_int
from pipestate.errors import InvalidArgumentError, NotFoundError, StateMismatchError

_logger = logging.getLogger("pipestate.data")

FILL = "fill"
PASS = "pass"
READ = "read"
_MODES = (FILL, PASS, READ)
_TOKEN = re.compile(r"[0-9a-f]{16}")
_READ_AHEAD = 64  # stored elements read with one request while reading a file store


def tree_digest(dataset: Dataset) -> str:
    """A digest of a pipeline with its seeds resolved (``fingerprint`` leaves drawn seeds out)."""

    def tree(ds: Dataset) -> Any:
        return [ds._op_name, ds._params(), [tree(parent) for parent in ds._parents]]

    return _fingerprint.digest(tree(dataset))


class MemoryStores:
    """The complete memory caches of a dataset, by their input's fingerprint; shared by copies.

    Each is kept with the digest of the input it was filled from, seeds resolved.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stores: dict[str, tuple[tuple[Element, ...], str]] = {}

    def get(self, key: str) -> tuple[tuple[Element, ...], str] | None:
        return self._stores.get(key)

    def publish(self, key: str, elements: list[Element], source: str) -> None:
        with self._lock:
            self._stores.setdefault(key, (tuple(elements), source))

    def __getstate__(self) -> dict[str, Any]:
        return {}  # a copy in another process starts empty: memory caches are per process

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._lock = threading.Lock()
        self._stores = {}


class MaterializeDataset(Dataset):
    """Base of ``cache`` and ``snapshot``: its input's elements, stored on the first full pass.

    Subclasses say where the store is (``_location``, ``None`` for memory),
    which shard an element goes to (``_shard``), and how a complete file
    store is read (``_reader``).
    """

    _keeps_random_access = False
    _passes_elements = True

    def __init__(self, parent: Dataset, compression: str | None) -> None:
        super().__init__([parent])
        self._compression = compression
        self._memory = MemoryStores()
        self._opened: dict[str, _element_reader.StoredElements] = {}

    def _cardinality(self) -> int:
        return self._parents[0].cardinality()

    def _location(self, fingerprint: str) -> _element_store.Location | None:
        """Where the store of the input with ``fingerprint`` is; ``None`` for memory."""
        raise NotImplementedError

    def _shard(self, element: Element) -> int:
        return 0

    def _reader(self, stored: _element_reader.StoredElements) -> Dataset | None:
        """A dataset to read a complete store through, or ``None`` to read it in order."""
        return None

    def _open_store(
        self, location: _element_store.Location, fingerprint: str
    ) -> _element_reader.StoredElements:
        """The complete store at ``location`` (opened once per dataset).

        Raises:
          NotFoundError: the store is not complete.
          InvalidArgumentError: it holds another pipeline's elements.
        """
        stored = self._opened.get(location.url)
        if stored is None:
            stored = _element_reader.StoredElements.open(location, self._op_name)
            if stored.manifest["fingerprint"] != fingerprint:
                raise InvalidArgumentError(
                    f"{self._op_repr()}: {location.describe(_element_store.MANIFEST)!r} holds the "
                    f"elements of another pipeline (fingerprint "
                    f"{stored.manifest['fingerprint']}, this input's is {fingerprint}); delete "
                    "its files or store elsewhere"
                )
            stored = self._opened.setdefault(location.url, stored)
        return stored


class MaterializeIterator(StreamIterator[MaterializeDataset]):
    """Fills, passes through or reads a store; see the module's docstring."""

    _MODE = "mode"
    _COUNT = "count"
    _FILE = "file"
    _BYTES = "bytes"
    _SOURCE = "source"
    _STATE_KEYS = (_MODE, _COUNT, _FILE, _BYTES, _SOURCE, StreamIterator._PARENT)

    def _start(self) -> None:
        source = self._source
        # The input's definition, seeds left out: what a file store is checked against.
        self._fingerprint = self._dataset._parents[0].fingerprint
        self._location = source._location(self._fingerprint)
        # This iterator's input with its seeds: what it fills a store from.
        self._digest = tree_digest(source._parents[0])
        known = self._dataset.cardinality()
        self._known = known if known >= 0 else None
        self._source_digest: str | None = None  # while reading: the store's
        self._count = 0
        self._writer: _element_writer.ElementWriter | None = None
        self._buffer: list[Element] | None = None
        self._token: str | None = None  # the file being filled, once it has an element
        self._bytes = 0
        self._settle: Callable[[], None] | None = None
        self._stored: tuple[Element, ...] | _element_reader.StoredElements | None = None
        self._block: list[Element] = []
        self._block_start = 0
        self._inputs = []
        complete = self._complete()
        if complete is not None:
            self._enter_read(complete)
        else:
            self._mode = FILL
            self._buffer = [] if self._location is None else None
            self._inputs = [self._open(0, 0)]

    # -------------------------------------------------------------- the store
    def _complete(
        self,
    ) -> tuple[tuple[Element, ...] | _element_reader.StoredElements, str] | None:
        """The complete store and the digest of the input it was filled from, or ``None``."""
        if self._location is None:
            return self._source._memory.get(self._fingerprint)
        try:
            stored = self._source._open_store(self._location, self._fingerprint)
        except NotFoundError:
            return None
        source = stored.manifest.get("source")
        # A store written without one (by Dataset.save) has an unknown input: "".
        return stored, source if isinstance(source, str) else ""

    def _enter_read(
        self,
        complete: tuple[tuple[Element, ...] | _element_reader.StoredElements, str],
    ) -> None:
        stored, self._source_digest = complete
        self._mode = READ
        self._stored = stored
        reader = (
            self._source._reader(stored)
            if isinstance(stored, _element_reader.StoredElements)
            else None
        )
        # A reader with seed=None ops draws its own seed, kept in its state.
        self._inputs = (
            [] if reader is None else [reader._make_iterator(reader._iterator_entropy(), 0)]
        )

    def _stored_length(self) -> int:
        stored = self._stored
        assert stored is not None
        return len(stored) if isinstance(stored, tuple) else stored.count

    def _publish(self) -> None:
        """Makes the store filled by this pass the complete one (unless another was first)."""
        if self._location is None:
            assert self._buffer is not None
            self._source._memory.publish(self._fingerprint, self._buffer, self._digest)
            self._buffer = None
            return
        writer = self._writer
        self._writer = None
        if writer is None:  # an empty input: a store of nothing
            writer = _element_writer.ElementWriter(
                self._location, self._source._compression, self._op
            )
        if self._location.exists(_element_store.MANIFEST):
            writer.abandon()
            return
        writer.finish(self._fingerprint, {"source": self._digest})
        self._location.remove_dead_writers(keep={name for name, _ in writer.parts})

    def _stop_filling(self, why: str, level: int = logging.INFO) -> None:
        """Continues as ``"pass"``: this pass can no longer complete the store."""
        if self._mode == FILL:
            _logger.log(level, "%s: not storing this pass: %s", self._source._op_repr(), why)
        self._mode = PASS
        self._buffer = None
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
        self._token = None
        self._bytes = 0

    # ------------------------------------------------------------------ reading
    def _next(self) -> Element:
        if self._settle is not None:
            settle, self._settle = self._settle, None
            settle()
        if self._mode == READ:
            if self._inputs:
                return self._inputs[0]._next()
            if self._count >= self._stored_length():
                raise StopIteration
            try:
                element = self._read_stored(self._count)
            finally:
                self._count += 1  # a damaged element counts as consumed, as everywhere
            return element
        try:
            element = self._inputs[0]._next()
        except StopIteration:
            if self._mode == FILL:
                self._mode_after_end()
            raise
        except BaseException:
            self._stop_filling("its input raised an error")
            raise
        if self._mode == FILL:
            try:
                self._store(element)
            except BaseException:
                # An element that can't be stored (or a shard_func that raised): the
                # store would miss it, so this pass stops storing; the element counts
                # as consumed, as a failing element does everywhere.
                self._count += 1
                self._stop_filling("an element could not be stored")
                raise
            if self._count + 1 == self._known:
                # Every element is stored: publish now (as tf.data), not at the end.
                self._count += 1
                self._mode_after_end()
                return element
        self._count += 1
        return element

    def _read_stored(self, index: int) -> Element:
        """Stored element ``index``; a file store is read ahead a block at a time (a cache,
        never saved)."""
        stored = self._stored
        if isinstance(stored, tuple):
            return stored[index]
        assert stored is not None
        offset = index - self._block_start
        if 0 <= offset < len(self._block):
            return self._block[offset]
        stop = min(index + _READ_AHEAD, stored.count)
        try:
            block = stored.get_list(np.arange(index, stop, dtype=np.int64))
        except Exception:
            block = [stored.get(index)]  # raises if this element itself is damaged
        self._block, self._block_start = block, index
        return block[0]

    def _mode_after_end(self) -> None:
        try:
            self._publish()
        except OSError as err:
            # The elements were all passed on; only the store is lost: say so, go on.
            location = self._location.url if self._location is not None else "memory"
            _logger.warning(
                "%s: the store at %r could not be published: %s",
                self._source._op_repr(),
                location,
                err,
            )
        self._source_digest = None
        # A state taken now restores an iterator at the end, which passes on nothing more.
        self._mode = PASS
        self._token = None
        self._bytes = 0

    def _store(self, element: Element) -> None:
        if self._buffer is not None:
            # Read-only: an element changed in place after this would change what
            # every later pass reads from the cache.
            for leaf in flatten(element):
                if type(leaf) is np.ndarray:
                    leaf.flags.writeable = False
            self._buffer.append(element)
            return
        location = self._location
        assert location is not None
        try:
            if self._writer is None:
                writer = _element_writer.ElementWriter(
                    location, self._source._compression, self._op
                )
                writer.open_new()
                self._writer = writer
                self._token = writer.token
            self._writer.write(element, self._source._shard(element))
            self._bytes = self._writer.bytes
        except OSError as err:
            self._stop_filling(f"writing {location.url!r} failed: {err}", logging.WARNING)

    # -------------------------------------------------------------------- state
    def _op_state(self) -> State:
        if self._writer is not None:
            self._writer.flush()  # the state's bytes reach the file before it is saved
        parent = self._inputs[0]._get_state() if self._inputs else None
        return {
            self._MODE: self._mode,
            self._COUNT: self._count,
            self._FILE: self._token,
            self._BYTES: self._bytes,
            self._SOURCE: self._source_digest if self._mode == READ else None,
            self._PARENT: parent,
        }

    def _restore(self, state: State) -> None:
        mode = state[self._MODE]
        if mode not in _MODES:
            raise StateMismatchError(
                f"{self._op}: state['mode'] must be one of {list(_MODES)}, got {brief(mode, 40)}"
            )
        count = read_int(state, self._COUNT, self._op)
        token = state[self._FILE]
        if token is not None and (
            not isinstance(token, str) or not _TOKEN.fullmatch(token) or mode != FILL
        ):
            raise StateMismatchError(
                f"{self._op}: state['file'] must be None or, filling a file, its 16-hex-digit "
                f"name, got {brief(token, 40)} in mode {mode!r}"
            )
        size = read_int(state, self._BYTES, self._op)
        if (token is None) != (size == 0) or (token is not None and self._location is None):
            raise StateMismatchError(
                f"{self._op}: state['file']={brief(token, 40)} and state['bytes']={size} do not "
                "fit together (a file being filled has bytes; a memory cache has no file)"
            )
        source = state[self._SOURCE]
        if (source is None) == (mode == READ) or (
            source is not None and (not isinstance(source, str) or len(source) > 64)
        ):
            raise StateMismatchError(
                f"{self._op}: state['source'] must be the digest of the stored input while "
                f"reading and None otherwise, got {brief(source, 80)} in mode {mode!r}"
            )
        parent = state[self._PARENT]
        for child in self._inputs:
            child.close()
        self._inputs = []
        self._count, self._mode, self._token, self._bytes = count, mode, token, size
        self._source_digest = None
        self._buffer = None
        self._stored = None
        self._block, self._block_start = [], 0
        if mode == READ:
            if parent is not None and not isinstance(parent, dict):
                raise StateMismatchError(
                    f"{self._op}: state['parent'] must be None or a dict when reading"
                )
            assert isinstance(source, str)  # checked above: reading has a source
            self._restore_read(count, source, parent)
            return
        if not isinstance(parent, dict):
            raise StateMismatchError(
                f"{self._op}: state['parent'] must be a dict while {mode}ing, got "
                f"{brief(parent, 80)}"
            )
        self._inputs = [self._open(0, 0)]
        self._inputs[0]._set_state(parent)
        if mode == FILL:
            if count == 0:
                self._buffer = [] if self._location is None else None
            else:
                self._settle = self._settle_fill

    def _restore_read(self, count: int, source: str, parent: State | None) -> None:
        complete = self._complete()
        if complete is None or complete[1] != source:
            # The store this position read is not here (a memory cache in a new
            # process): compute it again, if this iterator's input is the one it
            # was filled from (seeds drawn by another iterator are not known).
            if parent is not None:
                raise NotFoundError(
                    f"{self._op}: the saved position reads {self._source._op_repr()}'s store "
                    "through its reader_func, and the store is gone; it can't be recomputed"
                )
            if source != self._digest:
                raise StateMismatchError(
                    f"{self._op}: the saved position reads a store filled by another iterator "
                    "(its seed=None ops drew other seeds), which is not in this process and "
                    "can't be computed again; give the ops below the cache a seed, or cache "
                    "to a file"
                )
            self._mode, self._source_digest = READ, source
            self._settle = self._settle_recompute
            return
        self._enter_read(complete)
        if self._inputs:
            if parent is None:
                raise StateMismatchError(
                    f"{self._op}: the saved position reads the store in order, but this "
                    "pipeline reads it through a reader_func"
                )
            self._inputs[0]._set_state(parent)
            return
        if parent is not None:
            raise StateMismatchError(
                f"{self._op}: the saved position reads the store through a reader_func, but "
                "this pipeline reads it in order"
            )
        length = self._stored_length()
        if count > length:
            raise StateMismatchError(
                f"{self._op}: state['count']={count} is past the end of the stored "
                f"{length} elements"
            )

    def _settle_fill(self) -> None:
        """A restored fill: take over the file it was filling, or pass through."""
        if self._complete() is not None:
            self._stop_filling("a complete store exists")
            return
        if self._location is None or self._token is None:
            self._stop_filling("a memory cache's filled part is not in the state")
            return
        writer = _element_writer.ElementWriter(
            self._location, self._source._compression, self._op, self._token
        )
        if not writer.take_over(self._bytes, self._count):
            self._stop_filling(
                f"the file {writer.name!r} is in use, gone or shorter than the saved position"
            )
            return
        self._writer = writer

    def _settle_recompute(self) -> None:
        """A restored read whose store is gone (a memory cache in a new process): fill it
        again from the input's start, storing the elements before the position unread."""
        count = self._count
        self._mode, self._count, self._token, self._bytes = FILL, 0, None, 0
        self._source_digest = None
        self._buffer = [] if self._location is None else None
        self._inputs = [self._open(0, 0)]
        for _ in range(count):
            try:
                element = self._inputs[0]._next()
            except StopIteration:
                raise StateMismatchError(
                    f"{self._op}: the saved position is element {count} of the store, but "
                    f"recomputing it, the input ended after {self._count} elements"
                ) from None
            if self._mode == FILL:
                self._store(element)
            self._count += 1

    def _children(self) -> list[DatasetIterator]:
        return self._inputs

    def _close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
        super()._close()
