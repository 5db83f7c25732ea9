"""The Arrow-backed sources' shared parts: columns as elements, and reading by global row.

``parquet``, ``arrow`` and ``hf`` are tables cut into blocks of consecutive
rows (Parquet row groups, Arrow record batches). A block is decoded once into
columns ready to index (``Block``), cached (bounded by bytes), and element
``i`` is row ``i - start`` of the block that holds it. Their iterator state is
the pipeline's one index: a restore reads one block, whatever the position.

pyarrow is imported only when such a source is made, so ``pipestate.data``
works without it.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pipestate._validate import brief, check_int
from pipestate.data import _structure
from pipestate.data.dataset import Dataset
from pipestate.errors import InvalidArgumentError

DEFAULT_CACHE_BYTES = 256 << 20
"""Decoded blocks a source keeps per process by default (bytes)."""
BLOCK_ROWS = 1 << 16
"""Consecutive small record batches are read as one block of about this many rows."""


def import_pyarrow(op: str, extra: str) -> Any:
    """``pyarrow``, or an ImportError that says which extra installs it."""
    try:
        import pyarrow
    except ImportError as err:  # pragma: no cover - the tests run with pyarrow
        raise ImportError(f"{op} needs pyarrow: pip install 'pipestate[{extra}]' ({err})") from err
    return pyarrow


def coalesce(counts: Sequence[int], files: Sequence[int]) -> list[tuple[int, int]]:
    """Record batches grouped into blocks: ``(first, stop)`` ranges of consecutive batches of
    one file, of about ``BLOCK_ROWS`` rows (a larger batch is a block of its own)."""
    blocks: list[tuple[int, int]] = []
    first, rows = 0, 0
    for i, count in enumerate(counts):
        if i > first and (rows + count > BLOCK_ROWS or files[i] != files[first]):
            blocks.append((first, i))
            first, rows = i, 0
        rows += count
    if first < len(counts):
        blocks.append((first, len(counts)))
    return blocks


def block_starts(counts: Sequence[int], blocks: Sequence[tuple[int, int]]) -> np.ndarray:
    """The first row of each block, then the total, as int64."""
    rows = [sum(counts[first:stop]) for first, stop in blocks]
    return np.concatenate([[0], np.cumsum(rows, dtype=np.int64)]).astype(np.int64)


def check_columns(columns: Any, available: Sequence[str], op: str, where: str) -> tuple[str, ...]:
    """The projected column names: ``None`` for all of ``available``, else a list of them."""
    if columns is None:
        return tuple(available)
    if isinstance(columns, str) or not isinstance(columns, (list, tuple)):
        raise TypeError(
            f"{op}: columns must be a list of column names or None, got "
            f"{type(columns).__name__} {brief(columns, 80)}"
            + (f"; write columns=[{columns!r}]" if isinstance(columns, str) else "")
        )
    names = []
    for name in columns:
        if not isinstance(name, str):
            raise TypeError(f"{op}: column names must be str, got {brief(name, 80)} in {columns!r}")
        if name in names:
            raise ValueError(f"{op}: column {name!r} is listed twice in columns={list(columns)}")
        names.append(name)
    if not names:
        raise ValueError(f"{op}: columns is empty; pass None for every column, or name some")
    missing = [name for name in names if name not in available]
    if missing:
        raise ValueError(
            f"{op}: no column {', '.join(map(repr, missing))} in {where}; its columns are "
            f"{list(available)}"
        )
    return tuple(names)


def check_cache_bytes(value: Any, op: str) -> int:
    """``cache_bytes``: decoded bytes to keep per process (``None``: the default)."""
    if value is None:
        return DEFAULT_CACHE_BYTES
    return check_int("cache_bytes", value, minimum=0, op=op)


def is_vectorisable(pa: Any, schema: Any, names: Sequence[str]) -> bool:
    """Whether every column is a fixed-width number or bool: blocks then stack exactly."""
    for name in names:
        kind = schema.field(name).type
        if not (
            pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
        ):
            return False
    return True


# How a column of a block is read, by Arrow type.
_NUMPY = 0  # fixed-width numbers and bools: one NumPy array
_BYTES = 1  # strings and binaries: np.bytes_ per row
_LIST = 2  # lists of numbers: a NumPy array per row, cut from the flattened values
_OTHER = 3  # structs, nested lists, temporal types, ...: converted row by row


class Block:
    """Decoded columns of consecutive rows, ready to index; immutable, shared by threads.

    Args:
      pa: the pyarrow module.
      table: the rows, with exactly the projected columns.
      where: describes the block's row ``i`` for errors (file, row group, row).
      op: the op named in errors.
    """

    def __init__(self, pa: Any, table: Any, where: Callable[[int], str], op: Any) -> None:
        self.names: tuple[str, ...] = tuple(table.column_names)
        self.table = table
        self.where = where
        self.op = op
        self.length = table.num_rows
        self.kinds: list[int] = []
        self.data: list[Any] = []
        self.nulls: list[np.ndarray | None] = []
        self.nbytes = 0
        for name in self.names:
            column = table.column(name)
            if pa.types.is_dictionary(column.type):  # chunks may have different dictionaries
                column = column.cast(column.type.value_type)
            array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
            kind = array.type
            nulls = None
            if array.null_count:
                nulls = array.is_null().to_numpy(zero_copy_only=False)
            if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
                filled = (
                    array.fill_null(False if pa.types.is_boolean(kind) else 0)
                    if nulls is not None
                    else array
                )
                values: Any = filled.to_numpy(zero_copy_only=False)
                values.flags.writeable = False
                self._add(_NUMPY, values, nulls, values.nbytes)
            elif (
                pa.types.is_timestamp(kind) or pa.types.is_date(kind) or pa.types.is_duration(kind)
            ):
                values = array.to_numpy(zero_copy_only=False)  # datetime64 / timedelta64
                values.flags.writeable = False
                self._add(_NUMPY, values, nulls, values.nbytes)
            elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
                binary = pa.large_binary() if pa.types.is_large_string(kind) else pa.binary()
                self._add(_BYTES, array.cast(binary), nulls, array.nbytes)
            elif (
                pa.types.is_binary(kind)
                or pa.types.is_large_binary(kind)
                or pa.types.is_fixed_size_binary(kind)
            ):
                self._add(_BYTES, array, nulls, array.nbytes)
            elif _is_numeric_list(pa, kind) and not array.values.null_count:
                flat = array.values.to_numpy(zero_copy_only=False)
                flat.flags.writeable = False
                if pa.types.is_fixed_size_list(kind):
                    size = kind.list_size
                    offsets = np.arange(array.offset, array.offset + len(array) + 1) * size
                else:
                    offsets = array.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
                self._add(_LIST, (flat, offsets), nulls, flat.nbytes + offsets.nbytes)
            else:
                self._add(_OTHER, array, nulls, array.nbytes)

    def _add(self, kind: int, data: Any, nulls: np.ndarray | None, nbytes: int) -> None:
        self.kinds.append(kind)
        self.data.append(data)
        self.nulls.append(nulls)
        self.nbytes += int(nbytes)

    def _check_nulls(self, column: int, rows: np.ndarray) -> None:
        nulls = self.nulls[column]
        if nulls is None:
            return
        hit = nulls[rows]
        if hit.any():
            row = int(rows[int(np.argmax(hit))])
            raise InvalidArgumentError(
                f"{self.op}: column {self.names[column]!r} is null at {self.where(row)}; an "
                "element can't hold a null. Read other columns (columns=[...]) or fill the "
                "nulls in the data."
            )

    def values(self, column: int, rows: np.ndarray) -> list[Any]:
        """Column ``column`` at block rows ``rows`` (an int64 array), one element leaf per row."""
        self._check_nulls(column, rows)
        kind, data = self.kinds[column], self.data[column]
        if kind == _NUMPY:
            return list(data[rows])
        if kind == _BYTES:
            return [np.bytes_(value) for value in data.take(rows).to_pylist()]
        if kind == _LIST:
            flat, offsets = data
            return [flat[offsets[row] : offsets[row + 1]] for row in rows.tolist()]
        out = []
        name = self.names[column]
        for row, value in zip(rows.tolist(), data.take(rows).to_pylist()):
            try:
                out.append(_structure.normalize(value, lists_as_tuples=False, what=self.op))
            except TypeError as err:
                raise TypeError(f"column {name!r} at {self.where(row)}: {err}") from err
        return out

    def rows(self, rows: np.ndarray) -> list[dict[str, Any]]:
        """The elements (dicts of column values) at block rows ``rows``."""
        columns = [self.values(i, rows) for i in range(len(self.names))]
        names = self.names
        return [dict(zip(names, row)) for row in zip(*columns)]

    def column_batch(self, column: int, rows: np.ndarray) -> Any:
        """Column ``column`` at ``rows`` stacked on a new first axis, as ``batch`` stacks it."""
        if self.kinds[column] == _NUMPY:
            self._check_nulls(column, rows)
            data = self.data[column]
            n = len(rows)
            first = int(rows[0]) if n else 0
            if n > 1 and int(rows[-1]) - first == n - 1 and (np.diff(rows) == 1).all():
                return data[first : first + n].copy()  # consecutive rows: a slice, copied
            return np.asarray(data[rows])
        return _structure.stack(self.values(column, rows), self.op, f"[{self.names[column]!r}]")


def _is_numeric_list(pa: Any, kind: Any) -> bool:
    if not (
        pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
    ):
        return False
    inner = kind.value_type
    return bool(
        pa.types.is_integer(inner) or pa.types.is_floating(inner) or pa.types.is_boolean(inner)
    )


class BlockCache:
    """Decoded blocks by number, least recently used first out, bounded by their bytes.

    One per dataset per process, shared by its threads (blocks are immutable);
    the block just read is always kept, whatever its size. Not pickled: a
    worker process starts empty.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._blocks: collections.OrderedDict[int, Block] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, number: int, load: Callable[[int], Block]) -> Block:
        """Block ``number``, loaded with ``load(number)`` when it is not cached."""
        with self._lock:
            block = self._blocks.get(number)
            if block is not None:
                self._blocks.move_to_end(number)
                return block
        block = load(number)  # outside the lock: threads decode different blocks at once
        with self._lock:
            if number not in self._blocks:
                self._blocks[number] = block
                self._bytes += block.nbytes
            while self._bytes > self._limit and len(self._blocks) > 1:
                _, old = self._blocks.popitem(last=False)
                self._bytes -= old.nbytes
        return block


class DenseColumns:
    """Every block's numeric columns copied into one array per column, as blocks are read.

    For numeric sources whose projected columns fit ``limit`` bytes: then any
    rows, from any blocks, are one fancy-index gather per column (a globally
    shuffled batch touches many blocks), and each block is decoded once per
    process. One per dataset per process, shared by its threads.
    """

    def __init__(self, starts: np.ndarray, limit: int, load: Callable[[int], Block]) -> None:
        self._starts = starts
        self._limit = limit
        self._load = load
        self._loaded = np.diff(starts) == 0  # empty blocks have nothing to copy
        self.complete = bool(self._loaded.all())
        self._columns: list[np.ndarray] | None = None
        self._names: tuple[str, ...] = ()
        self.usable = True  # False once it does not fit, or a block has nulls
        self._lock = threading.Lock()

    def _add(self, number: int) -> None:
        block = self._load(number)
        if any(nulls is not None for nulls in block.nulls):
            self.usable = False  # the block path raises the null's error, naming its row
            return
        total = int(self._starts[-1])
        with self._lock:
            if self._columns is None:
                if total * sum(data.dtype.itemsize for data in block.data) > self._limit:
                    self.usable = False
                    return
                self._names = block.names
                self._columns = [np.empty(total, data.dtype) for data in block.data]
            start = int(self._starts[number])
            for column, data in zip(self._columns, block.data):
                column[start : start + block.length] = data
            self._loaded[number] = True
            self.complete = bool(self._loaded.all())

    def gather(self, rows: np.ndarray) -> dict[str, np.ndarray] | None:
        """The columns at ``rows``, or ``None`` where the dense copy can't serve them."""
        if not self.complete:
            blocks = np.searchsorted(self._starts, rows, side="right") - 1
            missing = blocks[~self._loaded[blocks]]
            for number in np.unique(missing).tolist() if len(missing) else ():
                self._add(number)
                if not self.usable:
                    return None
        columns = self._columns
        if columns is None:  # no rows asked for yet
            return None
        n = len(rows)
        first = int(rows[0]) if n else 0
        if n > 1 and int(rows[-1]) - first == n - 1 and (np.diff(rows) == 1).all():
            return {name: c[first : first + n].copy() for name, c in zip(self._names, columns)}
        return {name: c[rows] for name, c in zip(self._names, columns)}


class PerProcess:
    """Values made lazily once per process (and per thread for ``local``), never pickled."""

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._shared: dict[str, Any] = {}
        self._local = threading.local()
        self._lock = threading.Lock()

    def _check_pid(self) -> None:
        if self._pid != os.getpid():  # a forked child: the parent's handles are not its own
            self._pid = os.getpid()
            self._shared = {}
            self._local = threading.local()

    def shared(self, key: str, make: Callable[[], Any]) -> Any:
        """The process's value for ``key``, made with ``make()`` on first use."""
        self._check_pid()
        value = self._shared.get(key)
        if value is None:
            with self._lock:
                value = self._shared.get(key)
                if value is None:
                    value = self._shared[key] = make()
        return value

    def local(self) -> dict[Any, Any]:
        """This thread's dict of values (open files)."""
        self._check_pid()
        values: dict[Any, Any] | None = getattr(self._local, "values", None)
        if values is None:
            values = self._local.values = {}
        return values

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]


def prefix_before_failure(
    read: Callable[[np.ndarray], list[Any]], positions: np.ndarray
) -> list[Any]:
    """The elements at ``positions`` read one by one up to the first that fails.

    Raises that element's error when it is the first; ``_get_list``'s contract.
    """
    out: list[Any] = []
    for k in range(len(positions)):
        try:
            out.extend(read(positions[k : k + 1]))
        except Exception:
            if not out:
                raise
            break
    return out


class BlocksDataset(Dataset):
    """Base of the Arrow-backed random-access sources: rows in blocks, read by global row.

    A subclass sets ``_starts`` (int64: the first global row of each block,
    then the total), ``_names`` (the projected columns), ``_vectorised_rows``
    and implements ``_load(number) -> Block``; ``_mapping`` (an int64 array
    or ``None``) maps positions to rows first (a ``datasets.Dataset`` after
    ``shuffle`` / ``select``).
    """

    _starts: np.ndarray
    _names: tuple[str, ...]
    _vectorised_rows = False
    _mapping: np.ndarray | None = None

    def __init__(self, cache_bytes: int) -> None:
        super().__init__()
        self._cache_bytes = cache_bytes
        self._process = PerProcess()

    @property
    def _pa(self) -> Any:
        """The pyarrow module (not kept on the dataset, which is pickled to workers)."""
        return import_pyarrow(self._op_name, "parquet")

    def _load(self, number: int) -> Block:
        """Decodes block ``number``."""
        raise NotImplementedError

    def _cache(self) -> BlockCache:
        cache: BlockCache = self._process.shared("cache", lambda: BlockCache(self._cache_bytes))
        return cache

    def _block(self, number: int) -> Block:
        return self._cache().get(number, self._load)

    def _dense(self) -> DenseColumns:
        dense: DenseColumns = self._process.shared(
            "dense", lambda: DenseColumns(self._starts, self._cache_bytes, self._block)
        )
        return dense

    @property
    def _vectorised(self) -> bool:
        return self._vectorised_rows

    def _cardinality(self) -> int:
        return int(self._starts[-1]) if self._mapping is None else len(self._mapping)

    def _rows_of(self, positions: np.ndarray) -> np.ndarray:
        rows = np.asarray(positions, dtype=np.int64)
        return rows if self._mapping is None else self._mapping[rows]

    def _one_block(self, rows: np.ndarray) -> int | None:
        """The block holding all of ``rows`` (not empty), or ``None`` when they span several."""
        low, high = int(rows.min()), int(rows.max())
        number = int(np.searchsorted(self._starts, low, side="right")) - 1
        return number if high < self._starts[number + 1] else None

    def _groups(self, rows: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """``(block, output indices, block rows)`` for each block ``rows`` touch, in order."""
        if not len(rows):
            return []
        starts = self._starts
        number = self._one_block(rows)
        if number is not None:  # a batch, a read-ahead block: no search per row
            return [(number, np.arange(len(rows)), rows - starts[number])]
        blocks = np.searchsorted(starts, rows, side="right") - 1
        out = []
        for number in np.unique(blocks).tolist():
            where = np.flatnonzero(blocks == number)
            out.append((number, where, rows[where] - starts[number]))
        return out

    def _get(self, epoch: int, position: int) -> Any:
        return self._get_list(epoch, np.array([position], np.int64))[0]

    def _get_list(self, epoch: int, positions: np.ndarray) -> list[Any]:
        try:
            return self._read_rows(positions)
        except Exception:
            if len(positions) < 2:
                raise
        # Find the failing row (a null, a damaged row group): the rows before it
        # are delivered, and it raises when asked for again, as row by row.
        return prefix_before_failure(self._read_rows, positions)

    def _read_rows(self, positions: np.ndarray) -> list[Any]:
        rows = self._rows_of(positions)
        groups = self._groups(rows)
        if len(groups) == 1:
            number, _, local = groups[0]
            return self._block(number).rows(local)
        # Rows from many blocks (a shuffled read): one Arrow take per block, then
        # every row converted at once, which costs far less than converting per block.
        blocks = [self._block(number) for number, _, _ in groups]
        parts = [block.table.take(local) for block, (_, _, local) in zip(blocks, groups)]
        bounds = np.cumsum([len(local) for _, _, local in groups])

        def where(row: int) -> str:
            k = int(np.searchsorted(bounds, row, side="right"))
            first = int(bounds[k - 1]) if k else 0
            return blocks[k].where(int(groups[k][2][row - first]))

        combined = Block(self._pa, self._pa.concat_tables(parts), where, self)
        out: list[Any] = [None] * len(rows)
        order = np.concatenate([output for _, output, _ in groups]).tolist()
        for i, element in zip(order, combined.rows(np.arange(len(rows), dtype=np.int64))):
            out[i] = element
        return out

    def _get_batch(self, epochs: np.ndarray, positions: np.ndarray) -> Any:
        rows = self._rows_of(positions)
        if self._vectorised_rows and len(rows):
            # Rows of many blocks (a shuffled batch): one gather per column from the
            # dense copy. Rows of one block (sequential reads) are cut from the block,
            # until the dense copy holds every block.
            dense = self._dense()
            if dense.usable and (dense.complete or self._one_block(rows) is None):
                gathered = dense.gather(rows)
                if gathered is not None:
                    return gathered
        groups = self._groups(rows)
        if len(groups) == 1:
            number, _, local = groups[0]
            block = self._block(number)
            return {name: block.column_batch(i, local) for i, name in enumerate(block.names)}
        if not self._vectorised_rows:
            elements = self._get_list(0, positions)
            if len(elements) < len(positions):
                # The row after these fails: read it alone, so that it raises its error
                # (a batch is never shortened).
                self._get(0, int(positions[len(elements)]))
            return _structure.stack(elements, self)
        out: dict[str, Any] = {}
        for number, where, local in groups:
            block = self._block(number)
            for i, name in enumerate(block.names):
                values = block.column_batch(i, local)
                if name not in out:
                    out[name] = np.empty((len(rows), *values.shape[1:]), values.dtype)
                out[name][where] = values
        return out

    def _element_spec(self) -> Any:
        return None
