"""``Dataset.from_array_record``: the records of ArrayRecord files, by global index."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from pipestate._validate import brief
from pipestate.data import _fingerprint, _structure
from pipestate.data._arrow import PerProcess, prefix_before_failure
from pipestate.data._files import describe_names, to_path
from pipestate.data._spec import TensorSpec
from pipestate.data.dataset import Dataset
from pipestate.errors import DataLossError, NotFoundError

_OP = "array_record"


def _source_class() -> Any:
    try:
        from array_record.python.array_record_data_source import ArrayRecordDataSource
    except ImportError as err:  # pragma: no cover - the tests run with array-record
        raise ImportError(
            f"from_array_record needs array-record: pip install 'pipestate[arrayrecord]' ({err})"
        ) from err
    return ArrayRecordDataSource


def _paths(paths: Any) -> tuple[str, ...]:
    if isinstance(paths, (list, tuple)):
        names = tuple(to_path(path, _OP) for path in paths)
        if not names:
            raise ValueError(f"{_OP}: paths is an empty list; name at least one file")
        return names
    if isinstance(paths, (str, bytes, os.PathLike)):
        return (to_path(paths, _OP),)
    raise TypeError(
        f"{_OP}: paths must be a file path (str, bytes, os.PathLike) or a list of them, got "
        f"{type(paths).__name__} {brief(paths, 80)}"
    )


def _open(paths: tuple[str, ...]) -> Any:
    """An ``ArrayRecordDataSource`` of ``paths``, its errors naming the file."""
    for path in paths:
        if not os.path.exists(path):
            raise NotFoundError(f"{_OP}: file {path!r} does not exist")
        if os.path.isdir(path):
            raise NotFoundError(f"{_OP}: {path!r} is a directory, not an ArrayRecord file")
    try:
        return _source_class()(list(paths))
    except (RuntimeError, ValueError, OSError) as err:
        raise DataLossError(
            f"{_OP}: can't read the ArrayRecord files {describe_names(paths)}: {err}"
        ) from err


class ArrayRecordDataset(Dataset):
    """The records of ArrayRecord files, as ``np.bytes_``, by global index.

    Reads through ``array_record``'s ``ArrayRecordDataSource``: record ``i``
    of the dataset is record ``i - n`` of the file it falls in (``n`` the
    records of the files before it). A block of records or a batch is one
    ``__getitems__`` call, which reads the files in parallel threads. The
    iterator state is one index; the files' record counts are part of the
    dataset's settings, so a state saved over other files is refused.

    Elements are ``np.bytes_`` scalars with every byte; ``batch`` stacks them
    into an ``S`` array, which drops trailing NUL bytes: parse records with
    ``map`` before batching them.

    Args:
      paths: a local file path, or a list of them.

    Raises:
      TypeError: ``paths`` is not a path or a list of paths.
      ValueError: an empty list.
      NotFoundError: a file does not exist.
      DataLossError: a file is not a readable ArrayRecord file (also while
        reading a damaged record, naming the index).

    Example:
      >>> import pipestate as ps
      >>> ds = ps.Dataset.from_array_record(["train-00000.array_record"])
    """

    _op_name = _OP

    def __init__(self, paths: Any) -> None:
        super().__init__()
        self._paths = _paths(paths)
        source = _open(self._paths)
        self._length = len(source)
        counts = [instruction.num_records for instruction in source._read_instructions]
        self._records = f"{self._length} records, digest {_fingerprint.digest(counts)}"
        self._process = PerProcess()
        self._process.shared("source", lambda: source)

    def _source(self) -> Any:
        return self._process.shared("source", lambda: _open(self._paths))

    @property
    def _vectorised(self) -> bool:
        # Records are read as lists of np.bytes_: an S array would drop trailing NULs.
        return False

    def _cardinality(self) -> int:
        return self._length

    def _element_spec(self) -> Any:
        return TensorSpec((), "string")

    def _params(self) -> dict[str, Any]:
        return {"paths": describe_names(self._paths), "records": self._records}

    def _read(self, positions: list[int]) -> list[Any]:
        try:
            records = self._source().__getitems__(positions)
        except (RuntimeError, ValueError, OSError) as err:
            raise DataLossError(
                f"{_OP}: reading records {brief(positions, 80)} of {describe_names(self._paths)} "
                f"failed: {err}"
            ) from err
        return [np.bytes_(record) for record in records]

    def _get(self, epoch: int, position: int) -> Any:
        return self._read([position])[0]

    def _get_list(self, epoch: int, positions: np.ndarray) -> list[Any]:
        try:
            return self._read(positions.tolist())
        except DataLossError:
            if len(positions) < 2:
                raise
        return prefix_before_failure(lambda one: self._read(one.tolist()), positions)

    def _get_batch(self, epochs: np.ndarray, positions: np.ndarray) -> Any:
        return _structure.stack(self._read(positions.tolist()), self)
