"""``Dataset.from_webdataset``: the samples of WebDataset tar shards, resumable mid-shard."""

from __future__ import annotations

import re
from typing import Any, BinaryIO

import numpy as np

from pipestate._validate import check_bool, check_int
from pipestate.data import _tar
from pipestate.data._files import describe_names, open_file
from pipestate.data._permutation import Permutation
from pipestate.data._remote import check_read_options, check_storage_options
from pipestate.data._shards import shard_urls
from pipestate.data.dataset import UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import State, StreamIterator, read_int
from pipestate.errors import DataLossError, StateMismatchError

# WebDataset's rules (webdataset.tariterators): a member's key is its name up
# to the first dot of its base name, the rest (lower-cased) its field; names
# of the form __x__ are metadata, not sample data.
_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
_META = re.compile(r"__[^/]*__($|/)")


class _WebDatasetIterator(StreamIterator["WebDatasetDataset"]):
    """Reads samples member by member; state: shard position, member offset, samples so far."""

    _SHARD = "shard"
    _OFFSET = "offset"
    _SAMPLES = "samples"
    _STATE_KEYS = (_SHARD, _OFFSET, _SAMPLES)

    def _start(self) -> None:
        self._inputs = []
        self._position = 0  # the shard's position in this pass's order
        self._offset = 0  # the next member's first header block in that shard
        self._samples = 0
        self._url: str | None = None
        self._stream: BinaryIO | None = None
        self._cursor: _tar.TarCursor | None = None
        self._pending: _tar.Member | None = None  # a header read, its member not yet used

    def _next(self) -> Any:
        dataset = self._source
        while self._position < len(dataset._urls):
            if self._stream is None:
                self._url = dataset._shard(self._epoch, self._position)
                self._stream = open_file(
                    self._url,
                    None,
                    None,
                    self._offset,
                    self._op,
                    dataset._read_options,
                    dataset._storage_options,
                )
                self._cursor = _tar.TarCursor(self._stream)
            try:
                sample = self._read_sample()
            except BaseException:
                # The position stays at the sample being read: a next call
                # (or a restore) reopens the shard there and reads it whole.
                self._close()
                raise
            if sample is not None:
                self._samples += 1
                return sample
        raise StopIteration

    def _read_sample(self) -> dict[str, Any] | None:
        """The next sample of the open shard; moves to the next shard after its last."""
        stream, cursor, url = self._stream, self._cursor, self._url
        assert stream is not None
        assert cursor is not None
        assert url is not None
        sample: dict[str, Any] | None = None
        current = ""  # the sample's key
        offset = self._offset  # the next member's; self._offset moves once a sample is whole
        while True:
            member = self._pending or _tar.read_member(cursor, url, offset, self._op)
            self._pending = None
            if member is None:  # the end-of-archive block
                self._next_shard()
                return sample
            name = member.name
            if not member.regular or _META.match(name) is not None:
                _tar.skip(stream, member)
                offset = member.end
                if sample is None:
                    self._offset = offset
                continue
            match = _KEY.match(name)
            if match is None:
                raise DataLossError(
                    f"{self._op}: tar member {name!r} at byte offset {member.offset} of {url!r} "
                    "has no extension, so it belongs to no sample (webdataset skips such "
                    "members); rename it to <key>.<field> or remove it from the shard"
                )
            key, field = match.group(1), match.group(2).lower()
            if sample is not None and key != current:
                self._pending = member  # the next sample's first member: read it next time
                self._offset = member.offset
                return sample
            if sample is None:
                current = key
                sample = {
                    "__key__": np.bytes_(key.encode("utf-8", "surrogateescape")),
                    "__url__": np.bytes_(url.encode("utf-8", "surrogateescape")),
                }
            elif field in sample:
                raise DataLossError(
                    f"{self._op}: tar member {name!r} at byte offset {member.offset} of {url!r} "
                    f"repeats field {field!r} of sample {key!r}; each sample's fields must differ"
                )
            sample[field] = np.bytes_(_tar.read_data(stream, member, url, self._op))
            offset = member.end

    def _next_shard(self) -> None:
        self._close()
        self._position += 1
        self._offset = 0

    def _op_state(self) -> State:
        return {
            self._SHARD: self._position,
            self._OFFSET: self._offset,
            self._SAMPLES: self._samples,
        }

    def _restore(self, state: State) -> None:
        shards = len(self._source._urls)
        position = read_int(state, self._SHARD, self._op, maximum=shards)
        offset = read_int(state, self._OFFSET, self._op, maximum=0 if position == shards else None)
        if offset % _tar.BLOCK:
            raise StateMismatchError(
                f"{self._op}: state['offset']={offset} is not a tar member's offset (a multiple "
                f"of {_tar.BLOCK})"
            )
        self._position, self._offset = position, offset
        self._samples = read_int(state, self._SAMPLES, self._op)

    def _children(self) -> list[Any]:
        return []

    def _close(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            self._cursor = self._pending = None
            stream.close()

    def _release(self) -> None:
        self._close()


class WebDatasetDataset(Dataset):
    """The samples of WebDataset tar shards, read in order and resumable at any sample.

    A sample is a run of consecutive tar members sharing a key, grouped as the
    ``webdataset`` package groups them: the key is a member's name up to the
    first dot of its base name (``train/0001.seg.png`` → key ``train/0001``,
    field ``seg.png``), the field is the rest, lower-cased. Each element is a
    dict ``{"__key__": key, "__url__": shard, field: data, ...}`` of
    ``np.bytes_`` scalars, fields in member order. Members that are not
    regular files (directories, links) and metadata members (``__x__``) are
    skipped, as in ``webdataset``.

    The iterator state is the shard's position in this pass's order, the byte
    offset of the next tar member in it and the number of samples delivered
    this pass. A restore opens that shard and seeks to the offset: it never
    reads earlier shards or earlier members.

    Args:
      urls: a list or tuple of shard URLs / paths (taken as they are), or one
        str in brace notation (``"shard-{000..099}.tar"``) or a glob, matched
        once, now (sorted).
      shuffle_shards: read the shards in a new pseudo-random order each pass
        (each epoch of an enclosing ``repeat``).
      seed: the shard order's seed; ``None`` draws one per iterator (saved in
        its state).
      storage_options: fsspec filesystem arguments (credentials, endpoint);
        never part of the fingerprint or the repr.
      read_options: read-ahead and retries for remote filesystems.

    Raises:
      TypeError: an argument of the wrong type.
      ValueError: an empty list of URLs, or unbalanced braces.
      NotFoundError: a glob matches nothing, or (while iterating) a shard does
        not exist.
      DataLossError: (while iterating) a truncated or damaged shard, a member
        that belongs to no sample (a name without an extension) or two members
        of one sample with the same field; the message names the shard and
        the byte offset.
      UnavailableError: (while iterating) a remote read kept failing.

    Example:
      >>> import pipestate as ps
      >>> ds = ps.Dataset.from_webdataset("data/shard-{000..009}.tar", shuffle_shards=True,
      ...                                 seed=0)  # doctest: +SKIP
    """

    _op_name = "webdataset"
    _keeps_random_access = False
    _iterator_class = _WebDatasetIterator

    def __init__(
        self,
        urls: Any,
        shuffle_shards: bool = False,
        seed: int | None = None,
        storage_options: dict[str, Any] | None = None,
        read_options: Any = None,
    ) -> None:
        super().__init__()
        op = self._op_name
        self._storage_options = check_storage_options(storage_options, op)
        self._read_options = check_read_options(read_options, op)
        self._shuffle = bool(check_bool("shuffle_shards", shuffle_shards, op=op))
        self._seed = None if seed is None else check_int("seed", seed, op=op)
        self._urls = shard_urls(urls, op, self._storage_options)

    def _cardinality(self) -> int:
        return UNKNOWN_CARDINALITY

    def _params(self) -> dict[str, Any]:
        return {
            "urls": describe_names(self._urls),
            "shuffle_shards": self._shuffle,
            "seed": self._seed,
        }

    def _draws_seed(self) -> bool:
        return self._shuffle and self._seed is None

    def _set_drawn_seed(self, seed: int) -> None:
        self._seed = seed

    def _shard(self, epoch: int, position: int) -> str:
        """The URL of the shard read at ``position`` of pass ``epoch``."""
        if self._shuffle:
            assert self._seed is not None  # resolved by the iterator
            position = Permutation(len(self._urls), self._seed, epoch)(position)
        return self._urls[position]
