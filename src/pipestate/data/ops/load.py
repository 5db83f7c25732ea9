"""``Dataset.load``: a saved dataset, read at random; and the shards ``reader_func`` reads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pipestate._validate import brief, check_function
from pipestate.data import _element_reader, _element_store
from pipestate.data._element_store import check_compression, directory_root
from pipestate.data._fingerprint import describe_callable
from pipestate.data._spec import TensorSpec, describe_signature, normalize_signature
from pipestate.data._structure import Element
from pipestate.data.dataset import Dataset
from pipestate.errors import InvalidArgumentError, NotFoundError


def open_saved(root: str, op: str) -> _element_reader.StoredElements:
    """The complete store in directory ``root``.

    Raises:
      NotFoundError: the directory holds no complete saved dataset.
      DataLossError: a damaged manifest or index.
    """
    location = _element_store.Location(root)
    try:
        return _element_reader.StoredElements.open(location, op)
    except NotFoundError as err:
        raise NotFoundError(
            f"{op}: no saved dataset at {root.rstrip('/')!r}: it has no manifest.json (nothing "
            "was saved there, or the save did not finish; a save writes the manifest last)"
        ) from err


class LoadDataset(Dataset):
    """The elements of a dataset saved with :meth:`Dataset.save`, in the order they were saved.

    Random access: ``len()`` is the number saved, ``ds[i]`` one ranged read,
    ``global_shuffle`` works, and the iterator's state is one index. Runs of
    consecutive elements are read with one request. Every record's checksums
    are verified; no code from the files is run (no pickle).

    ``shard`` (used by the datasets ``reader_func`` is given) restricts it to
    the elements ``shard_func`` sent to that shard, in order.

    Raises:
      NotFoundError: no complete saved dataset at ``path``.
      DataLossError: a damaged manifest, index or data file (naming the file
        and offset; data files when their elements are read).
    """

    _op_name = "load"

    def __init__(
        self,
        path: Any,
        element_spec: Any = None,
        compression: Any = None,
        *,
        shard: int | None = None,
        stored: _element_reader.StoredElements | None = None,
    ) -> None:
        super().__init__()
        self._root = directory_root(path, "load")
        self._stored = open_saved(self._root, "load") if stored is None else stored
        saved = self._stored.compression
        wanted = check_compression(compression, "load")
        if compression is not None and wanted != saved:
            raise ValueError(
                f"load: compression={compression!r}, but {self._root.rstrip('/')!r} was saved "
                f"with compression={saved!r}; pass that, or None to use what was saved"
            )
        self._spec = self._stored.spec
        if element_spec is not None:
            self._spec = _checked_spec(element_spec, self._spec, self._root)
        self._shard = shard
        self._positions: np.ndarray | None = None
        if shard is not None:
            self._positions = self._stored.positions_of_shard(shard)

    def _cardinality(self) -> int:
        return self._stored.count if self._positions is None else len(self._positions)

    def _element_spec(self) -> Any:
        return self._spec

    def _params(self) -> dict[str, Any]:
        manifest = self._stored.manifest
        return {
            "path": self._root.rstrip("/"),
            "count": manifest["count"],
            "saved": manifest["fingerprint"],
            "shard": self._shard,
        }

    @property
    def _vectorised(self) -> bool:
        return False  # each element is decoded from its record: read as lists

    def _map(self, positions: np.ndarray) -> np.ndarray:
        return positions if self._positions is None else self._positions[positions]

    def _get(self, epoch: int, position: int) -> Element:
        mapped = position if self._positions is None else int(self._positions[position])
        return self._stored.get(mapped)

    def _get_list(self, epoch: int, positions: np.ndarray) -> list[Element]:
        mapped = self._map(np.asarray(positions, np.int64))
        try:
            return self._stored.get_list(mapped)
        except Exception:
            # Deliver the elements before a damaged one; it raises when asked for again.
            out: list[Element] = []
            for position in mapped:
                try:
                    out.append(self._stored.get(int(position)))
                except Exception:
                    if not out:
                        raise
                    break
            return out


def _checked_spec(given: Any, saved: Any, root: str) -> Any:
    """``element_spec`` given to ``load``, checked against the spec of what was saved."""
    try:
        spec = normalize_signature(given, "load")
    except TypeError:
        raise TypeError(
            f"load: element_spec must be a TensorSpec or a nested tuple / dict of them, got "
            f"{type(given).__name__} {brief(given, 80)}"
        ) from None
    if saved is None:
        return spec

    def compatible(a: Any, b: Any) -> bool:
        if isinstance(a, TensorSpec) or isinstance(b, TensorSpec):
            if not (isinstance(a, TensorSpec) and isinstance(b, TensorSpec)):
                return False
            if a.dtype != b.dtype and not (a.dtype.kind == b.dtype.kind == "S"):
                return False
            if a.shape is None or b.shape is None:
                return True
            return len(a.shape) == len(b.shape) and all(
                p is None or q is None or p == q for p, q in zip(a.shape, b.shape)
            )
        if isinstance(a, dict) or isinstance(b, dict):
            return (
                isinstance(a, dict)
                and isinstance(b, dict)
                and set(a) == set(b)
                and all(compatible(a[k], b[k]) for k in a)
            )
        return (
            isinstance(a, tuple)
            and isinstance(b, tuple)
            and len(a) == len(b)
            and all(compatible(x, y) for x, y in zip(a, b))
        )

    if not compatible(spec, saved):
        raise InvalidArgumentError(
            f"load: element_spec {describe_signature(spec)} does not match the elements saved "
            f"at {root.rstrip('/')!r}, {describe_signature(saved)}; pass None to use theirs"
        )
    return spec


class ShardsDataset(Dataset):
    """The datasets of a store's shards, one element each: what ``reader_func`` is given.

    Its elements are :class:`LoadDataset` s (shard ``k`` at position ``k``),
    to be read with ``interleave`` / ``flat_map`` (``lambda shard: shard``).
    """

    def __init__(self, root: str, stored: _element_reader.StoredElements | None) -> None:
        super().__init__()
        self._root = root
        self._stored = stored
        # No store: the placeholder reader_func is checked with before one exists.
        self._count = 0 if stored is None else int(stored.manifest["shards"])

    def _cardinality(self) -> int:
        return self._count

    def _params(self) -> dict[str, Any]:
        return {"path": self._root.rstrip("/"), "shards": self._count}

    def _op_repr(self) -> str:
        return f"load_shards(path={self._root.rstrip('/')!r}, shards={self._count})"

    @property
    def _vectorised(self) -> bool:
        return False

    def _get(self, epoch: int, position: int) -> Element:
        assert self._stored is not None  # a placeholder has no positions
        return LoadDataset(self._root, shard=position, stored=self._stored)


def read_through(
    reader_func: Callable[[Dataset], Any],
    root: str,
    stored: _element_reader.StoredElements | None,
    op: str,
) -> Dataset:
    """``reader_func`` applied to the store's shards, checked to return a Dataset.

    Raises:
      TypeError: ``reader_func`` returned something else, or raised ``TypeError``
        (the message names it).
    """
    try:
        result = reader_func(ShardsDataset(root, stored))
    except TypeError as err:
        raise TypeError(
            f"{op}: reader_func {describe_callable(reader_func)} must take the dataset of "
            f"per-shard datasets and return a Dataset; it raised TypeError: {err}"
        ) from err
    if not isinstance(result, Dataset):
        raise TypeError(
            f"{op}: reader_func {describe_callable(reader_func)} must return a Dataset, got "
            f"{type(result).__name__} {brief(result, 80)}"
        )
    return result


def load(
    path: Any,
    element_spec: Any = None,
    compression: Any = None,
    reader_func: Callable[[Dataset], Any] | None = None,
) -> Dataset:
    """``Dataset.load``: see its docstring."""
    check_function("reader_func", reader_func, "load", allow_none=True)
    dataset = LoadDataset(path, element_spec, compression)
    if reader_func is None:
        return dataset
    return read_through(reader_func, dataset._root, dataset._stored, "load")
