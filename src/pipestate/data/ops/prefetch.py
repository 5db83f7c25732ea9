"""``prefetch``: prepares elements ahead on a background thread."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from pipestate._validate import check_parallelism
from pipestate.data._capabilities import Background, Elastic
from pipestate.data._feed import FeedReader, next_element
from pipestate.data.dataset import Dataset
from pipestate.data.iterator import DatasetIterator, State
from pipestate.data.options import AUTOTUNE


class _PrefetchIterator(DatasetIterator):
    """Reads a streaming input on a background thread; its state is the input's, verbatim.

    Each element travels with the input's state just after it, so the state
    describes what the consumer received; prefetched elements are dropped on
    ``set_state`` and never saved. The thread, and whether it runs at all
    (an idle consumer reads faster inline), belong to a :class:`FeedReader`.
    """

    def __init__(self, dataset: PrefetchDataset, entropy: int | None, epoch: int = 0) -> None:
        super().__init__(dataset)
        # The input's iterator draws nothing itself: the seed is passed down, so
        # the input's state (which the outermost iterator saves the seed in) is ours.
        self._open = functools.partial(dataset._parents[0]._make_iterator, entropy, epoch)
        self._reader = FeedReader(
            "prefetch",
            buffer=dataset._buffer_wanted,
            track=dataset._track,
            external=bool(dataset._external_ops()),
        )
        self._reader.attach(self._open(), self._open)

    _next = next_element

    def _get_state(self) -> State:
        return self._reader.token()  # type: ignore[no-any-return]

    def _set_state(self, state: State) -> None:
        reader = self._reader
        reader.stop()
        parent = self._open()
        reader.attach(parent, self._open)
        parent._set_state(state)

    def _close(self) -> None:
        self._reader.stop()


class PrefetchDataset(Dataset):
    """The input's elements, prepared ahead of the consumer by a background thread.

    Prefetching changes speed, not elements or positions: the op is left out
    of the state's fingerprint, and the state is the input's, so a position
    saved with or without ``prefetch`` (or with another ``buffer_size``)
    restores into either. On a random-access input the pipeline stays random
    access, and its iterator computes chunks of output indices on background
    threads (one, or as many as a parallel ``map`` in it asks for); on a
    streaming input one thread reads the input. Work is handed over in chunks
    of a few milliseconds each, so at least ``buffer_size`` elements are
    prepared ahead, more when they are cheap.

    Args:
      buffer_size: elements to prepare ahead; ``pipestate.data.AUTOTUNE``
        lets the chunking decide; ``0`` prefetches nothing.

    Raises:
      TypeError: ``buffer_size`` is not an integer.
      ValueError: ``buffer_size`` is negative (other than ``AUTOTUNE``).
    """

    _op_name = "prefetch"
    _passes_elements = True
    _passthrough = True
    _elastic = Elastic.ONE_TO_ONE
    _track = True  # whether elements carry the input's state (off only to measure its cost)

    def __init__(self, parent: Dataset, buffer_size: int | None) -> None:
        super().__init__([parent])
        if buffer_size is None:  # as tf.data: the size is tuned
            buffer_size = AUTOTUNE
        self._buffer_size = check_parallelism(buffer_size, "buffer_size", "prefetch", minimum=0)
        self._buffer_wanted = 0 if self._buffer_size == AUTOTUNE else self._buffer_size

    def _background(self) -> Background | None:
        return None if self._buffer_size == 0 else Background(1, self._buffer_wanted)

    def _cardinality(self) -> int:
        return self._parents[0]._cardinality()

    def _params(self) -> dict[str, Any]:
        return {"buffer_size": self._buffer_size}

    def _op_chain(self) -> list[tuple[str, str, str]]:
        return self._parents[0]._op_chain()

    def _get(self, epoch: int, position: int) -> Any:
        return self._parents[0]._get(epoch, position)

    def _get_batch(self, epochs: np.ndarray, positions: np.ndarray) -> Any:
        return self._parents[0]._get_batch(epochs, positions)

    def _get_list(self, epoch: int, positions: np.ndarray) -> list[Any]:
        return self._parents[0]._get_list(epoch, positions)

    def _make_iterator(self, entropy: int | None, epoch: int = 0) -> DatasetIterator:
        if self._buffer_size == 0:
            return self._parents[0]._make_iterator(entropy, epoch)
        if self._random_access:
            return super()._make_iterator(entropy, epoch)
        return _PrefetchIterator(self, entropy, epoch)
