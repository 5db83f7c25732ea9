"""``Dataset.from_arrow``: the rows of Arrow IPC files, memory-mapped, by global row."""

from __future__ import annotations

from typing import Any

from pipestate.data import _fingerprint
from pipestate.data._arrow import (
    DEFAULT_CACHE_BYTES,
    Block,
    BlocksDataset,
    block_starts,
    check_columns,
    coalesce,
    import_pyarrow,
    is_vectorisable,
)
from pipestate.data._files import describe_names
from pipestate.data._remote import ReadOptions, check_read_options, is_local, open_file
from pipestate.data.ops.parquet import resolve_files
from pipestate.errors import DataLossError, NotFoundError, StateMismatchError

_OP = "arrow"


def _read_batches(fs: Any, path: str, name: str, options: ReadOptions) -> tuple[Any, list[Any]]:
    """The schema and record batches of one IPC file (file or stream format), zero copy
    where local; a remote file is read whole through ``_remote`` (read-ahead, retries)."""
    pa = import_pyarrow(_OP, "parquet")
    try:
        if is_local(fs):
            source: Any = pa.memory_map(path, "r")
        else:
            with open_file(fs, path, name, options, _OP) as remote:
                source = pa.BufferReader(remote.read())
    except FileNotFoundError as err:
        raise NotFoundError(f"{_OP}: file {name!r} does not exist") from err
    except IsADirectoryError as err:
        raise NotFoundError(f"{_OP}: {name!r} is a directory, not an Arrow file") from err
    try:
        try:
            reader = pa.ipc.open_file(source)
            return reader.schema, [reader.get_batch(i) for i in range(reader.num_record_batches)]
        except pa.ArrowInvalid:
            source.seek(0)
            stream = pa.ipc.open_stream(source)
            return stream.schema, list(stream)
    except (pa.ArrowException, OSError) as err:
        raise DataLossError(
            f"{_OP}: {name!r} is not a readable Arrow IPC file (file or stream format): {err}"
        ) from err


class ArrowDataset(BlocksDataset):
    """The rows of Arrow IPC files (``.arrow`` / ``.feather`` v2, file or stream format).

    Local files are memory-mapped: record batches are read in place, numeric
    columns of a batch of at least 65 536 rows are NumPy views of the mapping
    (zero copy; smaller consecutive batches are read as one block, copied
    once into the block cache), and a row costs only its conversion to an
    element. Files on other filesystems are read whole into memory once per
    process, through read-ahead blocks with retries of transient errors
    (``read_options``). Elements are dicts of column values,
    converted as ``from_parquet``'s are; the iterator state is one index.

    Args:
      paths: a path or glob (local or fsspec URL), or a list of them.
      columns: the columns to read; ``None`` for all.
      storage_options: options for the filesystem made from the URL.
      read_options: read-ahead and retries for files not on the local disk
        (a :class:`~pipestate.data.ReadOptions`; ``None`` for the defaults).

    Raises:
      TypeError / ValueError: a bad argument, or columns not in the files.
      NotFoundError: a file does not exist, or a glob matches nothing.
      DataLossError: a file is not a readable Arrow IPC file.
      UnavailableError: a remote file kept failing with transient errors
        through every attempt ``read_options`` allows (when made, or at the
        first read of a worker process: the row is not skipped, and is read
        again when asked again).

    Example:
      >>> import pipestate as ps
      >>> ds = ps.Dataset.from_arrow("cache/train-*.arrow", columns=["input_ids"])
    """

    _op_name = _OP

    def __init__(
        self,
        paths: Any,
        columns: Any = None,
        storage_options: Any = None,
        read_options: ReadOptions | None = None,
    ) -> None:
        super().__init__(DEFAULT_CACHE_BYTES)
        self._read_options = check_read_options(read_options, _OP)
        import_pyarrow(_OP, "parquet")
        self._fs, self._paths, self._shown = resolve_files(
            paths, None, storage_options, _OP, "paths"
        )
        schema, batches = self._open_all()
        self._schema = schema
        self._names = check_columns(columns, schema.names, _OP, repr(self._shown[0]))
        self._columns_given = columns is not None
        self._vectorised_rows = is_vectorisable(self._pa, schema, self._names) and not any(
            batch.column(name).null_count for _, batch in batches for name in self._names
        )  # with nulls: row by row, so a null surfaces at its row, after the rows before it
        per_file = [0] * len(self._paths)
        for file, batch in batches:
            per_file[file] += batch.num_rows
        counts = [batch.num_rows for _, batch in batches]
        self._ranges = coalesce(counts, [file for file, _ in batches])
        self._starts = block_starts(counts, self._ranges)
        self._rows = f"{int(self._starts[-1])} rows, digest {_fingerprint.digest(per_file)}"
        self._process.shared("batches", lambda: batches)  # this process's mapping

    def _open_all(self) -> tuple[Any, list[tuple[int, Any]]]:
        """The first file's schema and ``(file number, record batch)`` of every file."""
        schemas: list[Any] = []
        batches: list[tuple[int, Any]] = []
        for file, (path, name) in enumerate(zip(self._paths, self._shown)):
            schema, found = _read_batches(self._fs, path, name, self._read_options)
            schemas.append(schema)
            batches.extend((file, batch) for batch in found)
        for file, schema in enumerate(schemas):
            if not schema.equals(schemas[0]):
                raise ValueError(
                    f"{_OP}: {self._shown[file]!r} has schema {schema}, but {self._shown[0]!r} "
                    f"has {schemas[0]}; every file must have the same schema"
                )
        return schemas[0], batches

    def _params(self) -> dict[str, Any]:
        # read_options are left out: they change speed, not elements.
        return {
            "files": describe_names(self._shown),
            "columns": list(self._names) if self._columns_given else None,
            "rows": self._rows,
        }

    def _load(self, number: int) -> Block:
        batches = self._process.shared("batches", lambda: self._open_all()[1])
        if len(batches) != self._ranges[-1][1]:
            raise StateMismatchError(
                f"{_OP}: the files have {len(batches)} record batches now, but "
                f"{self._ranges[-1][1]} when the dataset was made; they changed"
            )
        first, stop = self._ranges[number]
        file = batches[first][0]
        parts = [batch for _, batch in batches[first:stop]]
        table = self._pa.Table.from_batches(parts, schema=self._schema).select(list(self._names))
        first = int(self._starts[number])
        name = self._shown[file]

        def where(row: int) -> str:
            return f"row {first + row} of the dataset (in {name!r})"

        return Block(self._pa, table, where, self)
