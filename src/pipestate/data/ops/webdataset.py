"""``Dataset.from_webdataset``: the samples of WebDataset tar shards, resumable mid-shard,
or by sample number through shard indexes."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipestate._validate import check_bool, check_int
from pipestate.data import _tar
from pipestate.data._files import describe_names, open_file
from pipestate.data._permutation import Permutation, evict_oldest
from pipestate.data._record_index import check_use_index, have_indexes
from pipestate.data._remote import RangeReader, check_read_options, check_storage_options
from pipestate.data._shards import shard_urls
from pipestate.data._webdataset import ShardReader, load_shard_index, sample_at
from pipestate.data.dataset import UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import State, StreamIterator, read_int
from pipestate.errors import NotFoundError, StateMismatchError


class _WebDatasetIterator(StreamIterator["WebDatasetDataset"]):
    """Reads samples member by member; state: shard position, member offset, samples so far."""

    _SHARD = "shard"
    _OFFSET = "offset"
    _SAMPLES = "samples"
    _STATE_KEYS = (_SHARD, _OFFSET, _SAMPLES)

    def _start(self) -> None:
        self._inputs = []
        self._position = 0  # the shard's position in this pass's order
        self._offset = 0  # where the next sample starts in that shard
        self._samples = 0
        self._reader: ShardReader | None = None

    def _next(self) -> Any:
        dataset = self._source
        while self._position < len(dataset._urls):
            reader = self._reader
            if reader is None:
                url = dataset._shard(self._epoch, self._position)
                stream = open_file(
                    url,
                    None,
                    None,
                    self._offset,
                    self._op,
                    dataset._read_options,
                    dataset._storage_options,
                )
                reader = self._reader = ShardReader(stream, url, self._op, self._offset)
            try:
                sample = reader.next_sample()
            except BaseException:
                # The position stays at the sample being read: a next call
                # (or a restore) reopens the shard there and reads it whole.
                self._offset = reader.offset
                self._close()
                raise
            self._offset = reader.offset
            if reader.ended:
                self._close()
                self._position += 1
                self._offset = 0
            if sample is not None:
                self._samples += 1
                return sample
        raise StopIteration

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
        if self._reader is not None:
            reader, self._reader = self._reader, None
            reader.close()

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

    With a shard index beside every shard (``<shard>.index``, written by
    :func:`pipestate.data.write_webdataset_index`), the dataset is random
    access instead: ``len()``, ``ds[i]``, ``global_shuffle``, and a state of
    one index. Sample ``i`` is read with one ranged read of its bytes.

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
      use_index: ``"auto"`` (default): random access when every shard has an
        index, else streaming; ``True``: require the indexes; ``False``:
        always stream (the reading that states saved before the shards had
        indexes restore into).

    Raises:
      TypeError: an argument of the wrong type.
      ValueError: an empty list of URLs, unbalanced braces, or a
        ``use_index`` other than ``True``, ``False`` or ``"auto"``.
      NotFoundError: a glob matches nothing, ``use_index=True`` and a shard
        has no index, or (while iterating) a shard does not exist.
      DataLossError: (when made) a damaged or stale shard index; (while
        iterating) a truncated or damaged shard, a member that belongs to no
        sample (a name without an extension) or two members of one sample
        with the same field; the message names the shard and the byte offset.
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
        use_index: bool | str = "auto",
    ) -> None:
        super().__init__()
        op = self._op_name
        self._storage_options = check_storage_options(storage_options, op)
        self._read_options = check_read_options(read_options, op)
        self._shuffle = bool(check_bool("shuffle_shards", shuffle_shards, op=op))
        self._seed = None if seed is None else check_int("seed", seed, op=op)
        use = check_use_index(use_index, op)
        self._urls = shard_urls(urls, op, self._storage_options)
        # With an index per shard: each sample's byte range, per shard.
        self._offsets: list[np.ndarray] | None = None
        if use is True or (
            use == "auto"
            and have_indexes(self._urls, self._read_options, op, self._storage_options)
        ):
            self._offsets = [
                load_shard_index(url, self._read_options, op, self._storage_options)
                for url in self._urls
            ]
            self._counts = np.array([len(o) - 1 for o in self._offsets], dtype=np.int64)
            self._ranges = RangeReader(self._urls, self._read_options, op, self._storage_options)
        self._orders: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def _random_access(self) -> bool:
        return self._offsets is not None

    @property
    def _vectorised(self) -> bool:
        return False  # dicts of bytes: stacking them as blocks would drop trailing NUL bytes

    def _cardinality(self) -> int:
        if self._offsets is None:
            return UNKNOWN_CARDINALITY
        return int(self._counts.sum())

    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "urls": describe_names(self._urls),
            "shuffle_shards": self._shuffle,
            "seed": self._seed,
        }
        if self._offsets is not None:
            # A streaming state (shard + offset) can't be read as an index.
            params["indexed"] = f"{self._cardinality()} samples"
        return params

    def _draws_seed(self) -> bool:
        return self._shuffle and self._seed is None

    def _set_drawn_seed(self, seed: int) -> None:
        self._seed = seed
        self._orders = {}

    def _get(self, epoch: int, position: int) -> Any:
        assert self._offsets is not None  # the random-access path
        shard, number = self._locate(epoch, position)
        url, offsets = self._urls[shard], self._offsets[shard]
        start, end = int(offsets[number]), int(offsets[number + 1])
        # The last sample is read with the block after it, which must end the archive.
        last = number == len(offsets) - 2
        try:
            data = self._ranges.read(shard, start, end + _tar.BLOCK if last else end)
        except FileNotFoundError as err:
            raise NotFoundError(f"{self._op_name}: file {url!r} does not exist") from err
        sample = sample_at(data, url, self._op_name, start, end, last=last)
        assert sample is not None  # sample_at raises for a sample the index lists but isn't
        return sample

    def _locate(self, epoch: int, position: int) -> tuple[int, int]:
        """The shard and the sample number in it of ``position`` in pass ``epoch``."""
        key = epoch if self._shuffle else 0
        entry = self._orders.get(key)
        if entry is None:
            order = np.arange(len(self._urls), dtype=np.int64)
            if self._shuffle:
                assert self._seed is not None  # resolved by the iterator
                order = Permutation(len(order), self._seed, epoch).apply(order)
            starts = np.concatenate([[0], np.cumsum(self._counts[order])]).astype(np.int64)
            if len(self._orders) >= 8:
                evict_oldest(self._orders)
            entry = self._orders[key] = (order, starts)
        order, starts = entry
        k = int(np.searchsorted(starts, position, side="right")) - 1
        return int(order[k]), position - int(starts[k])

    def _shard(self, epoch: int, position: int) -> str:
        """The URL of the shard read at ``position`` of pass ``epoch``."""
        if self._shuffle:
            assert self._seed is not None  # resolved by the iterator
            position = Permutation(len(self._urls), self._seed, epoch)(position)
        return self._urls[position]
