"""``map(num_parallel_calls=...)``: applies a pure function on several threads."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from pipestate._validate import brief, check_parallelism
from pipestate.data._capabilities import Background
from pipestate.data._engine import resolve_parallelism
from pipestate.data._feed import FeedReader, next_element
from pipestate.data._fingerprint import describe_callable
from pipestate.data.dataset import Dataset
from pipestate.data.iterator import State, StreamIterator
from pipestate.data.ops.map import MapDataset
from pipestate.data.options import AUTOTUNE


class _ParallelMapIterator(StreamIterator["ParallelMapDataset"]):
    """Maps a streaming input on worker threads, in the input's order; state: the input's.

    Workers read chunks of the input in turn (with the input's state after
    each element) and apply the function outside the reading lock; a
    :class:`FeedReader` hands their chunks over. The state is the sequential
    ``map``'s, so either restores the other.
    """

    def __init__(self, dataset: ParallelMapDataset, entropy: int | None, epoch: int = 0) -> None:
        background = dataset._background()
        self._reader = FeedReader(
            "map",
            workers=background.threads,
            fn=dataset._apply,
            autotune=background.autotune,
            external=bool(dataset._external_ops()),
        )
        super().__init__(dataset, entropy, epoch)

    def _start(self) -> None:
        super()._start()
        # Opens the input as ``_open(0)`` does, holding no reference to this
        # iterator: dropping it must stop the threads.
        source = self._source._parents[0]
        self._reader.attach(
            self._inputs[0], functools.partial(source._make_iterator, None, self._epoch)
        )

    _next = next_element

    def _op_state(self) -> State:
        return {self._PARENT: self._reader.token()}

    def _close(self) -> None:
        self._reader.stop()


class ParallelMapDataset(MapDataset):
    """``map`` run on ``num_parallel_calls`` threads: the same elements, the same state.

    On a random-access input the pipeline stays random access and its
    iterator computes chunks of output indices on the threads; its state is
    still one index. On a streaming input the threads map chunks of input
    elements, in order. The op's name and fingerprint are ``map``'s (with
    ``deterministic=False`` added when given), so a position saved with one
    number of threads restores with any other, or with none.

    Args:
      map_func: a pure function of the element (a tuple is unpacked).
      num_parallel_calls: threads to use; ``pipestate.data.AUTOTUNE``: up
        to as many as the cores this process may run on, kept only if they
        compute faster than one (they don't when the function holds the GIL).
      deterministic: ``False`` lets chunks of results be delivered as they
        complete when this map's elements are the iterator's (it is the last
        op, prefetch aside) and its input is random access; elsewhere the order
        is kept. ``None`` follows the pipeline's ``Options.deterministic``
        (in order unless that is ``False``).
      stateful: as for ``map``.

    Raises:
      TypeError: ``map_func`` is not callable; a non-integer
        ``num_parallel_calls``; a non-bool ``deterministic``.
      ValueError: ``num_parallel_calls < 1`` (other than ``AUTOTUNE``).
    """

    _iterator_class = _ParallelMapIterator  # type: ignore[assignment]

    def __init__(
        self,
        parent: Dataset,
        map_func: Callable[..., Any],
        num_parallel_calls: int,
        deterministic: bool | None = None,
        *,
        stateful: bool = False,
    ) -> None:
        super().__init__(parent, map_func, stateful=stateful)
        self._num_parallel_calls = check_parallelism(
            num_parallel_calls, "num_parallel_calls", "map"
        )
        if deterministic is not None and not isinstance(deterministic, (bool, np.bool_)):
            raise TypeError(
                f"map: deterministic must be a bool or None, got {brief(deterministic, 80)}"
            )
        self._deterministic = None if deterministic is None else bool(deterministic)

    def _background(self) -> Background:
        return Background(
            resolve_parallelism(self._num_parallel_calls),
            autotune=self._num_parallel_calls == AUTOTUNE,
            reorder=self._out_of_order(self._deterministic),
        )

    def _params(self) -> dict[str, Any]:
        params = super()._params()
        if self._deterministic is False:
            params["deterministic"] = False
        return params

    def _op_repr(self) -> str:
        settings = f"map_func={describe_callable(self._fn)!r}"
        settings += f", num_parallel_calls={self._num_parallel_calls}"
        if self._deterministic is False:
            settings += ", deterministic=False"
        if self._name is not None:
            settings += f", name={self._name!r}"
        return f"map({settings})"
