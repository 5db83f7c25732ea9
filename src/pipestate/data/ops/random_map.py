"""``random_map``: a map whose function gets a generator derived from the element's index."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from pipestate._validate import brief, check_function, check_int, check_parallelism
from pipestate.data import _structure
from pipestate.data._calls import stop_error
from pipestate.data._capabilities import Background, Elastic
from pipestate.data._engine import resolve_parallelism
from pipestate.data._fingerprint import describe_callable
from pipestate.data.dataset import Dataset
from pipestate.data.iterator import CountingIterator
from pipestate.data.options import AUTOTUNE

_OP = "random_map"
_TAG = 0x52A9_D0E5  # separates these keys from other users of the same seed


@functools.lru_cache(maxsize=64)
def _key(seed: int) -> np.ndarray:
    """The Philox key of a seed."""
    sequence = np.random.SeedSequence(entropy=seed & ((1 << 64) - 1), spawn_key=(_TAG,))
    return sequence.generate_state(2, np.uint64)


def element_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
    """The generator of element ``position`` of pass ``epoch``: Philox keyed by the seed, its
    counter starting at ``(0, 0, position, epoch)``, so every element has its own stream."""
    counter = np.array([0, 0, position, epoch & ((1 << 64) - 1)], np.uint64)
    return np.random.Generator(np.random.Philox(counter=counter, key=_key(seed)))


class _RandomMapIterator(CountingIterator["RandomMapDataset"]):
    """Applies the function over a streaming input; state: the count of elements and the
    input's state (the count is the element's index, which keys its generator)."""

    def _next(self) -> Any:
        element = self._inputs[0]._next()
        position = self._count
        self._count += 1
        return self._source._apply(self._epoch, position, element)


class RandomMapDataset(Dataset):
    """``map_func(element, rng)`` applied to each element, ``rng`` a NumPy ``Generator``.

    ``rng`` is derived from ``(seed, epoch, index)`` alone (Philox, keyed by the
    seed, at a counter holding the element's index and the pass number of an
    enclosing ``repeat``), so outputs are the same under any number of
    threads or loader workers, and after a restore at any position, and
    nothing about the generator is saved: over a random-access input the
    pipeline stays random access with a one-index state. A tuple element is
    unpacked into the function's first arguments; ``rng`` comes last.

    Args:
      map_func: ``f(*element, rng)``; its randomness must come from ``rng``.
      seed: the generators' seed; ``None`` draws one per iterator, saved in its state.
      num_parallel_calls: threads (``pipestate.data.AUTOTUNE``: up to the cores
        available) over a random-access input; ``None``: the consumer's thread.
      deterministic: ``False`` lets chunks of results arrive out of order, as
        for ``map``.

    Raises:
      TypeError: ``map_func`` is not callable; a non-integer ``seed`` or
        ``num_parallel_calls``; a non-bool ``deterministic``.
      ValueError: ``num_parallel_calls < 1`` (other than ``AUTOTUNE``).
    """

    _op_name = _OP
    _elastic = Elastic.ONE_TO_ONE
    _iterator_class = _RandomMapIterator

    def __init__(
        self,
        parent: Dataset,
        map_func: Callable[..., Any],
        seed: int | None = None,
        num_parallel_calls: int | None = None,
        deterministic: bool | None = None,
    ) -> None:
        super().__init__([parent])
        self._fn = check_function("map_func", map_func, _OP)
        self._seed = None if seed is None else check_int("seed", seed, op=_OP)
        self._threads = (
            None
            if num_parallel_calls is None
            else check_parallelism(num_parallel_calls, "num_parallel_calls", _OP)
        )
        if deterministic is not None and not isinstance(deterministic, (bool, np.bool_)):
            raise TypeError(
                f"{_OP}: deterministic must be a bool or None, got {brief(deterministic, 80)}"
            )
        self._deterministic = True if deterministic is None else bool(deterministic)

    @property
    def _vectorised(self) -> bool:
        return False

    def _cardinality(self) -> int:
        return self._parents[0].cardinality()

    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"map_func": describe_callable(self._fn), "seed": self._seed}
        if not self._deterministic:
            params["deterministic"] = False
        return params

    def _background(self) -> Background | None:
        if self._threads is None:
            return None
        return Background(
            resolve_parallelism(self._threads),
            autotune=self._threads == AUTOTUNE,
            reorder=not self._deterministic,
        )

    def _draws_seed(self) -> bool:
        return self._seed is None

    def _set_drawn_seed(self, seed: int) -> None:
        self._seed = seed

    def _call(self, epoch: int, position: int, element: Any) -> Any:
        if self._seed is None:
            raise RuntimeError(f"{_OP}(seed=None) must be read through an iterator")
        rng = element_rng(self._seed, epoch, position)
        try:
            if type(element) is tuple:
                return self._fn(*element, rng)
            return self._fn(element, rng)
        except StopIteration as err:
            raise stop_error(self._op_repr(), self._fn, err) from err

    def _apply(self, epoch: int, position: int, element: Any) -> Any:
        out = self._call(epoch, position, element)
        return _structure.normalize(out, lists_as_tuples=True, what=self)

    def _get(self, epoch: int, position: int) -> Any:
        return self._apply(epoch, position, self._parents[0]._get(epoch, position))

    def _get_list(self, epoch: int, positions: np.ndarray) -> list[Any]:
        parent = self._parents[0]
        if parent._vectorised:
            epochs = np.full_like(positions, epoch)
            inputs = _structure.unstack(parent._get_batch(epochs, positions), len(positions))
        else:
            inputs = parent._get_list(epoch, positions)
        out: list[Any] = []
        for position, element in zip(positions, inputs):
            try:
                out.append(self._apply(epoch, int(position), element))
            except Exception:
                if not out:
                    raise
                break
        return out

    def _get_batch(self, epochs: np.ndarray, positions: np.ndarray) -> Any:
        parent = self._parents[0]
        if parent._vectorised:
            inputs = _structure.unstack(parent._get_batch(epochs, positions), len(positions))
        else:
            inputs = [parent._get(int(e), int(p)) for e, p in zip(epochs, positions)]
        if not inputs:
            return parent._get_batch(epochs, positions)
        outputs = [self._apply(int(e), int(p), x) for e, p, x in zip(epochs, positions, inputs)]
        return _structure.stack(outputs, self)
