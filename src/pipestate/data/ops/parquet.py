"""``Dataset.from_parquet``: the rows of Parquet files, by global row or as a stream."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import fsspec
import numpy as np

from pipestate._validate import brief, check_bool
from pipestate.data import _fingerprint
from pipestate.data._arrow import (
    Block,
    BlocksDataset,
    check_cache_bytes,
    check_columns,
    import_pyarrow,
    is_vectorisable,
)
from pipestate.data._files import describe_names, to_path
from pipestate.data._remote import ReadOptions, check_read_options, open_file
from pipestate.data.dataset import UNKNOWN_CARDINALITY
from pipestate.data.iterator import State, StreamIterator, read_int
from pipestate.errors import DataLossError, NotFoundError, StateMismatchError, UnavailableError

_OP = "parquet"
_STREAM_CHUNK = 256  # rows converted to elements at once by the streaming iterator


def _filesystem(first: str, filesystem: Any, storage_options: Any, op: str) -> Any:
    if storage_options is not None and not isinstance(storage_options, dict):
        raise TypeError(
            f"{op}: storage_options must be a dict of fsspec options or None, got "
            f"{type(storage_options).__name__} {brief(storage_options, 80)}"
        )
    if filesystem is None:
        fs, _ = fsspec.core.url_to_fs(first, **(storage_options or {}))
        return fs
    if storage_options:
        raise ValueError(
            f"{op}: pass either filesystem or storage_options, not both (storage_options "
            "configure the filesystem made from the URL)"
        )
    if not isinstance(filesystem, fsspec.AbstractFileSystem):
        raise TypeError(
            f"{op}: filesystem must be an fsspec filesystem (fsspec.AbstractFileSystem) or "
            f"None, got {type(filesystem).__name__} {brief(filesystem, 80)}"
        )
    return filesystem


def resolve_files(
    paths_or_glob: Any,
    filesystem: Any,
    storage_options: Any,
    op: str = _OP,
    argument: str = "paths_or_glob",
) -> tuple[Any, list[str], list[str]]:
    """``(filesystem, paths in it, names to show)`` of the files ``paths_or_glob`` names.

    A glob matches once, sorted; a path without wildcards names itself. ``op``
    and ``argument`` name the source and its argument in errors.
    """
    if isinstance(paths_or_glob, (list, tuple)):
        given = [to_path(p, op) for p in paths_or_glob]
        if not given:
            raise ValueError(f"{op}: {argument} is an empty list; name at least one file")
    elif isinstance(paths_or_glob, (str, bytes, os.PathLike)):
        given = [to_path(paths_or_glob, op)]
    else:
        raise TypeError(
            f"{op}: {argument} must be a path or glob (str, bytes, os.PathLike) or a list of "
            f"them, got {type(paths_or_glob).__name__} {brief(paths_or_glob, 80)}"
        )
    fs = _filesystem(given[0], filesystem, storage_options, op)
    paths: list[str] = []
    names: list[str] = []
    for pattern in given:
        protocol, _ = fsspec.core.split_protocol(pattern)
        stripped = fs._strip_protocol(pattern)
        if fsspec.core.has_magic(stripped):
            found = sorted(fs.glob(stripped))
            if not found:
                raise NotFoundError(f"{op}: no files matched pattern {pattern!r}")
        else:
            found = [stripped]
        for path in found:
            if path in paths:
                continue
            paths.append(path)
            names.append(fs.unstrip_protocol(path) if protocol else path)
    return fs, paths, names


def _open(fs: Any, path: str, name: str, options: ReadOptions) -> Any:
    """A ``pyarrow.parquet.ParquetFile`` of ``path``, its errors naming the file.

    A remote file is read through ``_remote``'s block cache: read-ahead, and
    retries of transient errors (an ``UnavailableError`` after the last one).
    Close it with ``close(force=True)``: pyarrow leaves a file object it was
    given open otherwise.
    """
    pa = import_pyarrow(_OP, "parquet")
    import pyarrow.parquet as pq

    try:
        handle = open_file(fs, path, name, options, _OP)
    except FileNotFoundError as err:
        raise NotFoundError(f"{_OP}: file {name!r} does not exist") from err
    except IsADirectoryError as err:
        raise NotFoundError(f"{_OP}: {name!r} is a directory, not a Parquet file") from err
    try:
        return pq.ParquetFile(handle)
    except UnavailableError:
        handle.close()
        raise
    except (pa.ArrowException, OSError) as err:
        handle.close()
        raise DataLossError(f"{_OP}: {name!r} is not a readable Parquet file: {err}") from err


def _read_group(parquet: Any, group: int, names: tuple[str, ...], name: str) -> Any:
    pa = import_pyarrow(_OP, "parquet")
    try:
        return parquet.read_row_group(group, columns=list(names))
    except UnavailableError:
        raise  # transient: the row group is read again when asked again
    except (pa.ArrowException, OSError) as err:
        raise DataLossError(
            f"{_OP}: row group {group} of {name!r} can't be read (damaged data?): {err}"
        ) from err


def _may_have_nulls(group: Any, names: tuple[str, ...]) -> bool:
    """Whether a row group's statistics allow a null in one of the columns ``names``."""
    found = set()
    for j in range(group.num_columns):
        column = group.column(j)
        if column.path_in_schema in names:
            found.add(column.path_in_schema)
            statistics = column.statistics
            if statistics is None or not statistics.has_null_count or statistics.null_count:
                return True
    return len(found) < len(names)


class ParquetDataset(BlocksDataset):
    """The rows of Parquet files, each a dict of column name to NumPy value.

    Random access by global row: the row-group index (rows per row group of
    every file) is built once, from the footers, when the dataset is made.
    Reading row ``i`` decodes its whole row group (only the projected
    columns) and keeps it in a cache bounded by ``cache_bytes``, so
    consecutive rows and batches cost one decode per row group; files are
    opened lazily, once per thread. The iterator state is one index.

    Values: numbers and bools are NumPy scalars, strings and binaries
    ``np.bytes_``, lists of numbers 1-D arrays, structs dicts, nested lists
    arrays; a null raises ``InvalidArgumentError`` naming the column, file,
    row group and row.

    Args:
      paths_or_glob: a path or glob (local or an fsspec URL such as
        ``s3://bucket/train/*.parquet``), or a list of them.
      columns: the columns to read (a list of names); ``None`` for all.
      filesystem: an fsspec filesystem to read the paths with.
      storage_options: options for the filesystem made from the URL.
      cache_bytes: decoded row groups kept per process (default 256 MiB).
      read_options: read-ahead and retries for files not on the local disk
        (a :class:`~pipestate.data.ReadOptions`; ``None`` for the defaults).

    Raises:
      TypeError / ValueError: a bad argument, or columns that are not in the files.
      NotFoundError: a file does not exist, or a glob matches nothing.
      DataLossError: a file is not readable Parquet (also while iterating, for
        a damaged row group, naming the file and row group).
      UnavailableError: a remote file kept failing with transient errors
        through every attempt ``read_options`` allows (when made, or while
        iterating: the row is not skipped, and is read again when asked again).

    Example:
      >>> import pipestate as ps
      >>> ds = ps.Dataset.from_parquet("train/*.parquet", columns=["tokens", "label"])
      >>> batches = ds.global_shuffle(seed=0).batch(64)
    """

    _op_name = _OP
    _indexed: ClassVar[bool] = True
    """Whether the footers are read when the dataset is made (random access)."""

    def __init__(
        self,
        paths_or_glob: Any,
        columns: Any = None,
        filesystem: Any = None,
        storage_options: Any = None,
        cache_bytes: int | None = None,
        read_options: ReadOptions | None = None,
    ) -> None:
        super().__init__(check_cache_bytes(cache_bytes, _OP))
        self._read_options = check_read_options(read_options, _OP)
        import_pyarrow(_OP, "parquet")
        self._fs, self._paths, self._shown = resolve_files(
            paths_or_glob, filesystem, storage_options
        )
        first = self._open(0)
        self._schema = first.schema_arrow
        self._names = check_columns(columns, self._schema.names, _OP, f"{self._shown[0]!r}")
        self._columns_given = columns is not None
        self._vectorised_rows = is_vectorisable(self._pa, self._schema, self._names)
        if self._indexed:
            self._index(first)
        else:
            first.close(force=True)

    def _index(self, first: Any) -> None:
        """Reads every footer: the first global row of each row group."""
        counts: list[int] = []
        self._group_file: list[int] = []
        self._group_number: list[int] = []
        per_file: list[int] = []
        for i, name in enumerate(self._shown):
            parquet = first if i == 0 else self._open(i)
            try:
                if i:
                    self._check_schema(parquet.schema_arrow, name)
                metadata = parquet.metadata
                for group in range(metadata.num_row_groups):
                    counts.append(metadata.row_group(group).num_rows)
                    if self._vectorised_rows and _may_have_nulls(
                        metadata.row_group(group), self._names
                    ):
                        # Row by row, so a null surfaces at its row, after the rows before it.
                        self._vectorised_rows = False
                    self._group_file.append(i)
                    self._group_number.append(group)
                per_file.append(metadata.num_rows)
            finally:
                parquet.close(force=True)
        self._starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)
        self._rows = f"{int(self._starts[-1])} rows, digest {_fingerprint.digest(per_file)}"

    def _check_schema(self, schema: Any, name: str) -> None:
        for column in self._names:
            index = schema.get_field_index(column)
            expected = self._schema.field(column).type
            if index < 0 or schema.field(index).type != expected:
                found = "no such column" if index < 0 else f"type {schema.field(index).type}"
                raise ValueError(
                    f"{_OP}: column {column!r} of {name!r} has {found}, but {self._shown[0]!r} "
                    f"has type {expected}; every file must have the projected columns with the "
                    "same types"
                )

    def _params(self) -> dict[str, Any]:
        # cache_bytes and read_options are left out: they change speed, not elements.
        params: dict[str, Any] = {
            "files": describe_names(self._shown),
            "columns": list(self._names) if self._columns_given else None,
        }
        if self._indexed:
            params["rows"] = self._rows  # a changed file is refused at restore
        else:
            params["random_access"] = False
        return params

    def _open(self, index: int) -> Any:
        """A new ``ParquetFile`` of file ``index``."""
        return _open(self._fs, self._paths[index], self._shown[index], self._read_options)

    def _file(self, index: int) -> Any:
        """File ``index``, opened once per thread."""
        files = self._process.local()
        parquet = files.get(index)
        if parquet is None:
            parquet = files[index] = self._open(index)
        return parquet

    def _load(self, number: int) -> Block:
        file, group = self._group_file[number], self._group_number[number]
        name = self._shown[file]
        table = _read_group(self._file(file), group, self._names, name)
        first = int(self._starts[number])
        if table.num_rows != int(self._starts[number + 1]) - first:
            raise StateMismatchError(
                f"{_OP}: row group {group} of {name!r} has {table.num_rows} rows, but "
                f"{int(self._starts[number + 1]) - first} when the dataset was made; the file "
                "changed"
            )
        return self._make_block(table, file, group)

    def _make_block(self, table: Any, file: int, group: int) -> Block:
        name = self._shown[file]

        def where(row: int) -> str:
            return f"row {row} of row group {group} of {name!r}"

        return Block(self._pa, table, where, self)


class _ParquetStreamIterator(StreamIterator["ParquetDataset"]):
    """Reads the files in order, a row group at a time; state: file, row group and row."""

    _FILE = "file_index"
    _GROUP = "row_group"
    _ROW = "row"
    _STATE_KEYS = (_FILE, _GROUP, _ROW)

    def _start(self) -> None:
        super()._start()
        self._file_index = 0
        self._group = 0
        self._row = 0  # the next row of the row group
        self._parquet: Any = None  # the current file, opened lazily
        self._decoded: Block | None = None
        self._ready: list[Any] = []  # elements of rows [_row, _row + len) converted ahead

    def _next(self) -> Any:
        dataset = self._source
        while True:
            if self._ready:
                self._row += 1
                return self._ready.pop()
            if self._file_index >= len(dataset._paths):
                raise StopIteration
            if self._parquet is None:
                self._parquet = dataset._open(self._file_index)
            groups = self._parquet.metadata.num_row_groups
            if self._group > groups or (self._group == groups and self._row):
                raise StateMismatchError(
                    f"{_OP}: the saved position is row {self._row} of row group {self._group} of "
                    f"{dataset._shown[self._file_index]!r}, which has {groups} row groups; the "
                    "file changed"
                )
            if self._group == groups:
                self._next_file()
                continue
            if self._decoded is None:
                name = dataset._shown[self._file_index]
                if self._file_index:
                    dataset._check_schema(self._parquet.schema_arrow, name)
                table = _read_group(self._parquet, self._group, dataset._names, name)
                if self._row > table.num_rows:
                    raise StateMismatchError(
                        f"{_OP}: the saved position is row {self._row} of row group {self._group} "
                        f"of {name!r}, which has {table.num_rows} rows; the file changed"
                    )
                self._decoded = dataset._make_block(table, self._file_index, self._group)
            block = self._decoded
            if self._row >= block.length:
                self._decoded = None
                self._group += 1
                self._row = 0
                continue
            stop = min(self._row + _STREAM_CHUNK, block.length)
            self._ready = block.rows(np.arange(self._row, stop, dtype=np.int64))[::-1]

    def _next_file(self) -> None:
        self._close_file()
        self._file_index += 1
        self._group = 0
        self._row = 0

    def _close_file(self) -> None:
        self._decoded = None
        self._ready = []
        if self._parquet is not None:
            parquet, self._parquet = self._parquet, None
            parquet.close(force=True)

    def _op_state(self) -> State:
        return {self._FILE: self._file_index, self._GROUP: self._group, self._ROW: self._row}

    def _restore(self, state: State) -> None:
        count = len(self._source._paths)
        file_index = read_int(state, self._FILE, self._op, maximum=count)
        at_end = file_index == count
        group = read_int(state, self._GROUP, self._op, maximum=0 if at_end else None)
        row = read_int(state, self._ROW, self._op, maximum=0 if at_end else None)
        self._file_index, self._group, self._row = file_index, group, row

    def _release(self) -> None:
        self._close_file()

    def _close(self) -> None:
        self._close_file()
        super()._close()


class ParquetStreamDataset(ParquetDataset):
    """The rows of Parquet files read in order, without an index: ``random_access=False``.

    No footer but the first file's is read when the dataset is made, so it
    suits more files than are worth indexing up front. Streaming: no ``len``,
    no ``ds[i]``, no ``global_shuffle``. The iterator state is the file, row
    group and row; a restore opens that file and decodes that row group.
    Arguments and errors as :class:`ParquetDataset`'s.
    """

    _keeps_random_access = False
    _iterator_class = _ParquetStreamIterator
    _indexed = False

    def _cardinality(self) -> int:
        return UNKNOWN_CARDINALITY


def parquet_dataset(
    paths_or_glob: Any,
    columns: Any,
    filesystem: Any,
    storage_options: Any,
    random_access: Any,
    cache_bytes: Any,
    read_options: Any,
) -> ParquetDataset:
    """``Dataset.from_parquet``: the indexed dataset, or the stream for ``random_access=False``."""
    indexed = check_bool("random_access", random_access, op=_OP)
    kind = ParquetDataset if indexed else ParquetStreamDataset
    return kind(paths_or_glob, columns, filesystem, storage_options, cache_bytes, read_options)
