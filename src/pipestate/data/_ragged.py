"""``RaggedBatch``: a batch of rows of different lengths, in NumPy (``ragged_batch``'s elements)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from pipestate._validate import brief
from pipestate.errors import InvalidArgumentError


class RaggedBatch(NamedTuple):
    """A batch of rows of different lengths: ``values`` concatenated, cut at ``row_splits``.

    NumPy has no ragged array; this is tf.RaggedTensor's row-splits form with
    one ragged dimension. Row ``i`` is ``values[row_splits[i]:row_splits[i + 1]]``;
    ``row_splits`` starts at 0 and ends at ``len(values)``. Being a named
    tuple of two arrays, it is an element structure like any other: it is
    saved in states and checkpoints, compared, and mapped over as a pair.

    Example:
      >>> import numpy as np
      >>> import pipestate as ps
      >>> batch = ps.data.RaggedBatch.from_rows([np.array([1, 2]), np.array([3])])
      >>> batch.row_splits
      array([0, 2, 3])
      >>> batch.to_padded(-1)
      array([[ 1,  2],
             [ 3, -1]])
    """

    values: np.ndarray
    """The rows' values, concatenated along the first axis."""
    row_splits: np.ndarray
    """Where each row starts in ``values``, then ``len(values)`` (int64 or int32)."""

    @classmethod
    def from_rows(cls, rows: Sequence[Any], row_splits_dtype: Any = np.int64) -> RaggedBatch:
        """The ragged batch of ``rows`` (arrays of one dtype, equal beyond their first axis).

        Raises:
          ValueError: no rows, rows that are scalars, or rows whose dtypes or
            trailing dimensions differ.
        """
        arrays = [np.asarray(row) for row in rows]
        if not arrays or any(a.ndim == 0 for a in arrays):
            raise ValueError(
                f"RaggedBatch.from_rows needs at least one row, each of rank >= 1, got "
                f"{brief(rows, 80)}"
            )
        return ragged(arrays, np.dtype(row_splits_dtype), "RaggedBatch.from_rows", "rows")

    def row_lengths(self) -> np.ndarray:
        """The length of each row."""
        return np.diff(self.row_splits)

    def to_list(self) -> list[np.ndarray]:
        """The rows, as a list of arrays (views of ``values``)."""
        splits = self.row_splits.tolist()
        return [self.values[start:stop] for start, stop in itertools.pairwise(splits)]

    def to_padded(self, padding_value: Any = 0) -> np.ndarray:
        """The rows padded with ``padding_value`` to the longest: shape ``(rows, longest, ...)``."""
        lengths = self.row_lengths()
        longest = int(lengths.max()) if len(lengths) else 0
        out = np.full(
            (len(lengths), longest, *self.values.shape[1:]), padding_value, self.values.dtype
        )
        for row, values in enumerate(self.to_list()):
            out[row, : len(values)] = values
        return out


def ragged(arrays: list[np.ndarray], splits: np.dtype[Any], op: str, path: str) -> RaggedBatch:
    """The ragged batch of arrays of rank >= 1."""
    first = arrays[0]
    for i, array in enumerate(arrays):
        if array.dtype != first.dtype and not (array.dtype.kind == first.dtype.kind == "S"):
            raise InvalidArgumentError(
                f"{op}: cannot batch tensors of different dtypes in component {path}: the first "
                f"element has {first.dtype} and element {i} has {array.dtype}"
            )
        if array.ndim != first.ndim or array.shape[1:] != first.shape[1:]:
            raise InvalidArgumentError(
                f"{op}: ragged_batch makes the first axis ragged only; component {path} has "
                f"shape {list(first.shape)} in the first element and {list(array.shape)} in "
                f"element {i}, which differ in rank or beyond the first axis"
            )
    lengths = [len(a) for a in arrays]
    row_splits = np.zeros(len(arrays) + 1, splits)
    np.cumsum(lengths, out=row_splits[1:])
    return RaggedBatch(np.concatenate(arrays), row_splits)
