"""``Dataset.from_hf``: the rows of a Hugging Face ``datasets.Dataset``, from its Arrow table."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from pipestate._validate import brief
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
from pipestate.data._files import describe_names, to_path
from pipestate.errors import NotFoundError

_OP = "hf"


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - the tests run with datasets
        raise ImportError(f"from_hf needs datasets: pip install 'pipestate[hf]' ({err})") from err
    return datasets


def _load(dataset_or_path: Any) -> Any:
    """The ``datasets.Dataset`` given, or loaded from a ``save_to_disk`` directory."""
    datasets = _import_datasets()
    if isinstance(dataset_or_path, (str, bytes, os.PathLike)):
        path = to_path(dataset_or_path, _OP)
        try:
            dataset_or_path = datasets.load_from_disk(path)
        except FileNotFoundError as err:
            raise NotFoundError(
                f"{_OP}: {path!r} is not a directory written by datasets' save_to_disk: {err}"
            ) from err
    if isinstance(dataset_or_path, datasets.DatasetDict):
        raise TypeError(
            f"{_OP}: got a DatasetDict with splits {sorted(dataset_or_path)}; pick one, e.g. "
            f"from_hf(dataset_dict[{sorted(dataset_or_path)[0]!r}])"
        )
    if isinstance(dataset_or_path, datasets.IterableDataset):
        raise TypeError(
            f"{_OP}: a datasets.IterableDataset has no random access; use a map-style "
            "datasets.Dataset (load_dataset without streaming=True), or read it with "
            "from_generator"
        )
    if not isinstance(dataset_or_path, datasets.Dataset):
        raise TypeError(
            f"{_OP}: expected a datasets.Dataset or the path of a save_to_disk directory, got "
            f"{type(dataset_or_path).__name__} {brief(dataset_or_path, 80)}"
        )
    return dataset_or_path


class HFDataset(BlocksDataset):
    """The rows of a ``datasets.Dataset``, read from its (memory-mapped) Arrow table.

    The table is not copied or re-encoded: rows are read from its record
    batches as ``from_arrow`` reads them, through the dataset's indices
    mapping when it has one (after ``shuffle``, ``select``, ``train_test_split``).
    Elements are dicts of the raw Arrow columns as NumPy values (HF's format
    and feature decoding, e.g. ``Image`` to PIL, are not applied: an ``Image``
    column is a dict of ``bytes`` and ``path``). The iterator state is one index.

    Args:
      dataset_or_path: a ``datasets.Dataset``, or the directory of one saved
        with ``save_to_disk`` (loaded with ``datasets.load_from_disk``).
      columns: the columns to read; ``None`` for all.

    Raises:
      TypeError: not a ``datasets.Dataset`` (a ``DatasetDict``: pick a split; an
        ``IterableDataset``: no random access), or a bad ``columns``.
      ValueError: columns that the dataset does not have.
      NotFoundError: the path is not a ``save_to_disk`` directory.

    Example:
      >>> import datasets, pipestate as ps
      >>> hf = datasets.load_from_disk("imdb-train")
      >>> ds = ps.Dataset.from_hf(hf, columns=["text", "label"]).global_shuffle(seed=0)
    """

    _op_name = _OP

    def __init__(self, dataset_or_path: Any, columns: Any = None) -> None:
        super().__init__(DEFAULT_CACHE_BYTES)
        import_pyarrow(_OP, "hf")
        self._hf = _load(dataset_or_path)
        table = self._hf.data.table
        self._names = check_columns(columns, table.column_names, _OP, "the dataset")
        self._columns_given = columns is not None
        self._vectorised_rows = is_vectorisable(self._pa, table.schema, self._names) and not any(
            table.column(name).null_count for name in self._names
        )  # with nulls: row by row, so a null surfaces at its row, after the rows before it
        batches = self._batches()
        counts = [batch.num_rows for batch in batches]
        self._ranges = coalesce(counts, [0] * len(counts))
        self._starts = block_starts(counts, self._ranges)
        self._mapping = self._indices()
        files = [os.path.basename(f["filename"]) for f in self._hf.cache_files]
        self._settings = {
            "rows": len(self._hf),
            "features": _fingerprint.digest(str(self._hf.features)),
            "files": describe_names(files) if files else "in memory",
        }

    def _indices(self) -> np.ndarray | None:
        # datasets keeps the row order of shuffle/select as an indices table.
        indices = self._hf._indices
        if indices is None:
            return None
        return np.asarray(indices.column(0).to_numpy(), dtype=np.int64)

    def _batches(self) -> list[Any]:
        """The record batches of the projected table, made once per process."""

        def make() -> list[Any]:
            return list(self._hf.data.table.select(list(self._names)).to_batches())

        batches: list[Any] = self._process.shared("batches", make)
        return batches

    def _batches_schema(self) -> Any:
        return self._hf.data.table.select(list(self._names)).schema

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_mapping", None)  # re-read from the datasets.Dataset in the new process
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._mapping = self._indices()

    def _params(self) -> dict[str, Any]:
        return {
            "columns": list(self._names) if self._columns_given else None,
            **self._settings,
        }

    def _load(self, number: int) -> Block:
        first, stop = self._ranges[number]
        batches = self._batches()[first:stop]
        table = self._pa.Table.from_batches(batches, schema=self._batches_schema())
        first = int(self._starts[number])

        def where(row: int) -> str:
            return f"row {first + row} of the dataset's table"

        return Block(self._pa, table, where, self)
