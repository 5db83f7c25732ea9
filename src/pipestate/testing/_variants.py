"""The other paths the kit runs a pipeline through: its ops' streaming iterators, and prefetch.

A random-access stretch of a pipeline runs as one index iterator; the same ops
over a streaming input run their streaming iterators instead, which read their
inputs' iterators and save nested states. The streaming variant of a pipeline
is the same op chain with a private passthrough op, ``_StreamedDataset``,
inserted where the random access must stop, so every op above it runs its
streaming path over exactly the same elements. The prefetch variant puts the
pipeline behind a background thread, and the parallel-map variant (asked for
by name only) behind an identity ``map`` on two threads.
"""

from __future__ import annotations

from typing import Any

from pipestate.data.dataset import Dataset
from pipestate.data.iterator import StreamIterator

STREAMING = "streaming"
"""Variant: the op chain over inputs forced to stream (its ops' streaming iterators)."""
PREFETCH = "prefetch"
"""Variant: the dataset under ``prefetch(2)`` (a background thread)."""
PARALLEL_MAP = "parallel_map"
"""Variant (not run by default): an identity ``map(..., num_parallel_calls=2)`` on top."""
VARIANTS = (STREAMING, PREFETCH)
"""The variants every check runs besides the dataset itself, by default."""
KNOWN_VARIANTS = (*VARIANTS, PARALLEL_MAP)
"""Every variant a check can be asked for."""


class _StreamedIterator(StreamIterator["_StreamedDataset"]):
    """Passes its input's elements on; state: the input's, under ``"parent"``."""

    def _next(self) -> Any:
        return self._inputs[0]._next()


class _StreamedDataset(Dataset):
    """Its input's elements, unchanged, through a streaming iterator.

    Not random access whatever its input, so the ops above it take their
    streaming paths; the input below it still runs as one index iterator.
    """

    _op_name = "kit_streamed"
    _keeps_random_access = False
    _passes_elements = True
    _iterator_class = _StreamedIterator

    def __init__(self, parent: Dataset) -> None:
        super().__init__([parent])

    def _cardinality(self) -> int:
        return self._parents[0]._cardinality()


def _identity(*args: Any) -> Any:
    """The element a ``map`` was given (a plain tuple is unpacked into ``args``)."""
    return args[0] if len(args) == 1 else args


def _has_streaming_path(op: Dataset) -> bool:
    """Whether ``op`` can run over a streaming input (global_shuffle can't)."""
    return bool(op._parents) and (op._iterator_class is not None or op._passthrough)


def _streamed(dataset: Dataset, memo: dict[int, Dataset]) -> Dataset:
    """``dataset`` with each random-access stretch streamed from as low as its ops allow."""
    done = memo.get(id(dataset))
    if done is not None:
        return done
    if dataset._random_access and not _has_streaming_path(dataset):
        # A source, or an op that needs random access below it: it stays one
        # index iterator, and whatever reads it reads it as a stream.
        out: Dataset = _StreamedDataset(dataset)
    elif dataset._parents:
        parents = tuple(_streamed(parent, memo) for parent in dataset._parents)
        out = dataset._with_parents(parents)
    else:
        out = dataset  # a streaming source (a generator, a file reader)
    memo[id(dataset)] = out
    return out


def streaming_variant(dataset: Dataset) -> Dataset | None:
    """The same op chain run by its ops' streaming iterators, or ``None`` where there is none.

    ``None`` when no op of ``dataset`` that has a streaming path reads a
    random-access input (a bare source, ``global_shuffle`` at the top, a
    pipeline that is streaming from its sources up), so that streaming the
    input would exercise nothing new.
    """
    streamed = _streamed(dataset, {})
    if isinstance(streamed, _StreamedDataset) or not _any_streamed(streamed):
        return None
    return streamed


def _any_streamed(dataset: Dataset) -> bool:
    return isinstance(dataset, _StreamedDataset) or any(
        _any_streamed(parent) for parent in dataset._parents
    )


def variants(dataset: Dataset, names: tuple[str, ...] | list[str]) -> list[tuple[str, Dataset]]:
    """``(name, dataset)`` for each variant in ``names`` that applies to ``dataset``.

    Raises:
      ValueError: an unknown variant name.
    """
    unknown = [name for name in names if name not in KNOWN_VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {list(KNOWN_VARIANTS)}")
    out: list[tuple[str, Dataset]] = []
    if STREAMING in names:
        streamed = streaming_variant(dataset)
        if streamed is not None:
            out.append((STREAMING, streamed))
    if PREFETCH in names:
        out.append((PREFETCH, dataset.prefetch(2)))
    if PARALLEL_MAP in names:
        out.append((PARALLEL_MAP, dataset.map(_identity, num_parallel_calls=2)))
    return out
