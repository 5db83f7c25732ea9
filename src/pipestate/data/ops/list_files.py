"""``Dataset.list_files``: the file names matching glob patterns, shuffled per epoch."""

from __future__ import annotations

import os
from typing import Any

import fsspec
import numpy as np

from pipestate._validate import brief, check_bool, check_int
from pipestate.data import _fingerprint
from pipestate.data._files import to_path
from pipestate.data._permutation import Permutation, evict_oldest
from pipestate.data._spec import TensorSpec
from pipestate.data.dataset import Dataset
from pipestate.errors import NotFoundError


def _patterns(file_pattern: Any) -> tuple[str, ...]:
    if isinstance(file_pattern, np.ndarray) and file_pattern.ndim == 1:
        file_pattern = list(file_pattern)
    if isinstance(file_pattern, (list, tuple)):
        if not file_pattern:
            raise ValueError("list_files: file_pattern is an empty list; pass at least one glob")
        return tuple(to_path(pattern, "list_files") for pattern in file_pattern)
    if isinstance(file_pattern, (str, bytes, os.PathLike, np.generic, np.ndarray)):
        return (to_path(file_pattern, "list_files"),)
    raise TypeError(
        "list_files: file_pattern must be a glob (str, bytes or os.PathLike) or a list or tuple "
        f"of them, got {type(file_pattern).__name__} {brief(file_pattern, 80)}"
    )


def match(pattern: str) -> list[str]:
    """The paths matching one glob; URLs keep their protocol (``memory://...``)."""
    fs, path = fsspec.core.url_to_fs(pattern)
    if fsspec.core.has_magic(path):
        infos = fs.glob(path, detail=True)
    else:
        try:
            infos = {path: fs.info(path)}
        except FileNotFoundError:
            infos = {}
    found = [name for name, info in infos.items() if info.get("type") != "directory"]
    protocol, _ = fsspec.core.split_protocol(pattern)
    return [fs.unstrip_protocol(p) for p in found] if protocol else found


class ListFilesDataset(Dataset):
    """The names of the files matching ``file_pattern``, as ``tf.data.Dataset.list_files``.

    The patterns are matched once, when the dataset is created (as tf.data
    does): a later change to the directory changes nothing, and an iterator
    state saved with another set of matches is refused on restore. Elements
    are ``np.bytes_`` scalars, the sorted matches without duplicates, in a
    pseudo-random order unless ``shuffle=False``. The order is a keyed
    permutation (``global_shuffle``'s), so the dataset keeps random access and
    its iterator state is one index; each pass of an enclosing ``repeat``
    gets a new order (tf's ``reshuffle_each_iteration=True``). ``seed=None``
    draws a seed per iterator and saves it in the iterator's state.

    Args:
      file_pattern: a glob (``*``, ``?``, ``[...]``; a local path or an fsspec
        URL such as ``memory://data/*.txt``), or a list or tuple of them.
      shuffle: ``None`` or ``True`` to shuffle, ``False`` for sorted order.
      seed: the shuffle's seed; ``None`` draws one per iterator.

    Raises:
      TypeError: a ``file_pattern`` of another type, a non-bool ``shuffle``
        or a non-integer ``seed``.
      ValueError: an empty list of patterns.
      NotFoundError: nothing matches (a ``FileNotFoundError``).

    Example:
      >>> import pipestate as ps
      >>> files = ps.Dataset.list_files("data/*.txt", shuffle=False)
    """

    _op_name = "list_files"

    def __init__(self, file_pattern: Any, shuffle: bool | None = None, seed: int | None = None):
        super().__init__()
        self._patterns = _patterns(file_pattern)
        check_bool("shuffle", shuffle, op="list_files", allow_none=True)
        if seed is not None:
            seed = check_int("seed", seed, op="list_files")
        self._shuffle = shuffle is None or bool(shuffle)
        self._seed = seed
        matches = sorted({path for pattern in self._patterns for path in match(pattern)})
        if not matches:
            shown = self._patterns[0] if len(self._patterns) == 1 else list(self._patterns)
            raise NotFoundError(f"list_files: no files matched pattern {shown!r}")
        self._files = np.array([os.fsencode(path) for path in matches], dtype=np.bytes_)
        self._matches = f"{len(matches)} files, digest {_fingerprint.digest(matches)}"
        self._permutations: dict[int, Permutation] = {}

    def _cardinality(self) -> int:
        return len(self._files)

    def _element_spec(self) -> Any:
        return TensorSpec((), "string")

    def _params(self) -> dict[str, Any]:
        patterns = self._patterns[0] if len(self._patterns) == 1 else list(self._patterns)
        return {
            "file_pattern": patterns,
            "shuffle": self._shuffle,
            "seed": self._seed,
            "matched": self._matches,
        }

    def _draws_seed(self) -> bool:
        return self._shuffle and self._seed is None

    def _set_drawn_seed(self, seed: int) -> None:
        self._seed = seed
        self._permutations = {}

    def _permutation(self, epoch: int) -> Permutation:
        permutation = self._permutations.get(epoch)
        if permutation is None:
            if self._seed is None:
                raise RuntimeError("list_files(seed=None) must be read through an iterator")
            permutation = Permutation(len(self._files), self._seed, epoch)
            if len(self._permutations) >= 8:
                evict_oldest(self._permutations)
            self._permutations[epoch] = permutation
        return permutation

    def _get(self, epoch: int, position: int) -> Any:
        if self._shuffle:
            position = self._permutation(epoch)(position)
        return self._files[position]

    def _get_batch(self, epochs: np.ndarray, positions: np.ndarray) -> Any:
        if self._shuffle and len(positions):
            shuffled = np.empty_like(positions)
            for epoch in np.unique(epochs):
                mask = epochs == epoch
                shuffled[mask] = self._permutation(int(epoch)).apply(positions[mask])
            positions = shuffled
        return self._files[positions]
