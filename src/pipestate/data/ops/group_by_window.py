"""``group_by_window``: groups elements by key into windows and reduces each window to a dataset."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pipestate._validate import brief, check_function, check_int
from pipestate.data import _groups
from pipestate.data._calls import stop_error
from pipestate.data._elements import ElementsDataset
from pipestate.data._fingerprint import describe_callable
from pipestate.data.dataset import (
    INFINITE_CARDINALITY,
    UNKNOWN_CARDINALITY,
    Dataset,
    derived_seed,
)
from pipestate.data.iterator import (
    DatasetIterator,
    State,
    StreamIterator,
    read_bool,
    read_dict,
    read_int,
)
from pipestate.errors import InvalidArgumentError, StateMismatchError


class _Flushing:
    """The window being output: its key, its number, and the reduced dataset's iterator."""

    __slots__ = ("dataset", "iterator", "key", "number")

    def __init__(self, key: int, number: int, dataset: Dataset, iterator: DatasetIterator) -> None:
        self.key = key
        self.number = number
        self.dataset = dataset
        self.iterator = iterator


class _GroupByWindowIterator(StreamIterator["GroupByWindowDataset"]):
    """Reads elements into groups by key; a full group becomes a window that is reduced.

    State: the input's; whether it has ended; the waiting elements and their
    keys (``_groups``); the number of windows reduced so far; and the window
    being output (its key and number, the reduced dataset's fingerprint and
    its iterator's state), rebuilt on restore from the waiting elements of
    its key, which stay buffered until the reduced dataset ends.
    """

    _INPUT_ENDED = "input_ended"
    _WINDOWS = "windows"
    _CURRENT = "current"
    _STATE_KEYS = (
        _INPUT_ENDED,
        _groups.KEYS,
        _groups.BUFFER,
        _WINDOWS,
        _CURRENT,
        StreamIterator._PARENT,
    )
    _KEY, _NUMBER, _FINGERPRINT, _STATE = "key", "number", "fingerprint", "state"

    def _start(self) -> None:
        super()._start()
        self._groups = _groups.Groups()
        self._sizes: dict[int, int] = {}
        self._input_ended = False
        self._windows = 0
        self._current: _Flushing | None = None

    def _children(self) -> list[DatasetIterator]:
        current = [] if self._current is None else [self._current.iterator]
        return [*self._inputs, *current]

    def _next(self) -> Any:
        dataset = self._source
        while True:
            current = self._current
            if current is not None:
                try:
                    return current.iterator._next()
                except StopIteration:
                    current.iterator.close()
                    del self._groups.groups[current.key]
                    self._current = None
            if not self._input_ended:
                parent = self._inputs[0]
                while True:
                    try:
                        element = parent._next()
                    except StopIteration:
                        self._input_ended = True
                        break
                    key = _groups.call_key_func(dataset._key_func, element, self._op)
                    group = self._groups.add(key, element)
                    if len(group) >= self._window_size(key):
                        self._flush(key, self._windows)
                        break
            if self._current is None:
                first = self._groups.first_key()
                if first is None:
                    raise StopIteration
                self._flush(first, self._windows)

    def _window_size(self, key: int) -> int:
        size = self._sizes.get(key)
        if size is None:
            size = self._sizes[key] = self._source._window_size_of(key)
        return size

    def _flush(self, key: int, number: int) -> None:
        """Starts outputting the window of ``key``: ``reduce_func(key, window)``'s elements."""
        dataset = self._source
        reduced = dataset._reduce(key, self._groups.groups[key])
        entropy = dataset._inner_entropy(self._epoch, number) if reduced.draws_seed else None
        self._current = _Flushing(key, number, reduced, reduced._make_iterator(entropy))
        self._windows = number + 1

    def _op_state(self) -> State:
        state = self._groups.save(self._op)
        current = self._current
        state[self._INPUT_ENDED] = self._input_ended
        state[self._WINDOWS] = self._windows
        state[self._CURRENT] = (
            None
            if current is None
            else {
                self._KEY: current.key,
                self._NUMBER: current.number,
                self._FINGERPRINT: current.dataset.fingerprint,
                self._STATE: current.iterator._get_state(),
            }
        )
        state[self._PARENT] = self._inputs[0]._get_state()
        return state

    def _restore(self, state: State) -> None:
        op = self._op
        input_ended = read_bool(state, self._INPUT_ENDED, op)
        windows = read_int(state, self._WINDOWS, op)
        saved = state[self._CURRENT]
        if saved is not None and (
            not isinstance(saved, dict)
            or set(saved) != {self._KEY, self._NUMBER, self._FINGERPRINT, self._STATE}
        ):
            raise StateMismatchError(
                f"{op}: state['current'] must be None or a dict with keys fingerprint, key, "
                f"number, state, got {brief(saved, 120)}"
            )
        current_key = None if saved is None else saved[self._KEY]

        def check(key: int, size: int) -> None:
            window = self._window_size(key)
            if size > window or (size == window and key != current_key):
                raise StateMismatchError(
                    f"{op}: state['buffer'] holds {size} elements of key {key}, whose window "
                    f"size is {window}"
                )

        self._groups.restore(state, op, check)
        super()._restore({self._PARENT: state[self._PARENT]})
        self._input_ended = input_ended
        self._windows = windows
        if saved is None:
            return
        key = read_int(saved, self._KEY, f"{op}: state['current']", minimum=-(2**63))
        if key not in self._groups.groups:
            raise StateMismatchError(f"{op}: state['current'] is key {key}, which has no elements")
        number = read_int(saved, self._NUMBER, f"{op}: state['current']", maximum=windows - 1)
        self._flush(key, number)
        self._windows = windows
        current = self._current
        assert current is not None
        if current.dataset.fingerprint != saved[self._FINGERPRINT]:
            raise StateMismatchError(
                f"{op}: reduce_func returned {current.dataset!r} for key {key}, a different "
                "pipeline than the one the state was saved from. Restore with the reduce_func "
                "used when the state was saved."
            )
        current.iterator._set_state(read_dict(saved, self._STATE, f"{op}: state['current']"))


class GroupByWindowDataset(Dataset):
    """tf.data's ``group_by_window``: windows of elements sharing a key, each reduced to a dataset.

    Each element's key is ``key_func(element)`` (an int64 scalar). Elements
    wait in their key's group; when a group holds ``window_size`` elements
    (``window_size_func(key)`` for a per-key size) it becomes a window, a
    dataset of those elements, and the output continues with the elements of
    ``reduce_func(key, window)``. At the end of the input the groups still
    waiting are reduced as shorter windows, smallest key first, as tf.data.

    The iterator state holds every element waiting in a group (bounded by the
    sum of the window sizes of the keys seen, minus one each) and the state of
    the reduced dataset being read. ``seed=None`` ops inside the reduced
    datasets get seeds derived from the iterator's seed and the window's
    number, so a restore continues identically.

    Args:
      key_func: maps an element (a tuple unpacked) to an int64 scalar key.
      reduce_func: maps ``(key, window_dataset)`` to a ``Dataset``.
      window_size: elements per window (>= 1), or ``None`` with ``window_size_func``.
      window_size_func: maps a key (an int64 scalar) to its window size (>= 1).

    Raises:
      TypeError: a function that is not callable, a non-integer
        ``window_size``; while iterating, a key or window size that is not an
        int64 scalar, or a ``reduce_func`` that does not return a Dataset.
      ValueError: neither or both of ``window_size`` and ``window_size_func``,
        :class:`~pipestate.errors.InvalidArgumentError` for a window size below 1
        (``window_size`` at once, ``window_size_func``'s while iterating).

    Example:
      >>> import pipestate as ps
      >>> ds = ps.Dataset.range(10).group_by_window(
      ...     lambda x: x % 2, lambda key, window: window.batch(5), window_size=5)
      >>> [x.tolist() for x in ds]
      [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]
    """

    _op_name = "group_by_window"
    _keeps_random_access = False
    _iterator_class = _GroupByWindowIterator

    def __init__(
        self,
        parent: Dataset,
        key_func: Callable[..., Any],
        reduce_func: Callable[..., Dataset],
        window_size: int | None = None,
        window_size_func: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__([parent])
        op = self._op_name
        self._key_func = check_function("key_func", key_func, op)
        self._reduce_func = check_function("reduce_func", reduce_func, op)
        self._window_size_func = check_function(
            "window_size_func", window_size_func, op, allow_none=True
        )
        if (window_size is None) == (window_size_func is None):
            raise ValueError(
                f"{op}: either the window_size argument or the window_size_func argument must "
                f"be specified, not both, got window_size={window_size!r} and "
                f"window_size_func={brief(window_size_func, 60)}"
            )
        self._window_size = (
            None if window_size is None else check_int("window_size", window_size, op=op)
        )
        if self._window_size is not None and self._window_size < 1:
            raise InvalidArgumentError(
                f"{op}: window size must be greater than zero, but got {self._window_size}"
            )
        self._seed: int | None = None  # set per iterator by _resolve_seeds

    def _cardinality(self) -> int:
        n = self._parents[0].cardinality()
        return INFINITE_CARDINALITY if n == INFINITE_CARDINALITY else UNKNOWN_CARDINALITY

    def _params(self) -> dict[str, Any]:
        return {
            "key_func": describe_callable(self._key_func),
            "reduce_func": describe_callable(self._reduce_func),
            "window_size": self._window_size,
            "window_size_func": (
                None
                if self._window_size_func is None
                else describe_callable(self._window_size_func)
            ),
        }

    def _draws_seed(self) -> bool:
        # Whether reduce_func's datasets have seed=None ops is known only once
        # they exist: every iterator draws a seed, from which each window's is derived.
        return True

    def _set_drawn_seed(self, seed: int) -> None:
        self._seed = seed

    def _inner_entropy(self, epoch: int, number: int) -> int:
        """The seed of the ``seed=None`` ops in the dataset reduced from window ``number``."""
        return derived_seed(0 if self._seed is None else self._seed, epoch, number)

    def _window_size_of(self, key: int) -> int:
        fn = self._window_size_func
        if fn is None:
            assert self._window_size is not None
            return self._window_size
        try:
            result = fn(np.int64(key))
        except StopIteration as err:
            raise stop_error(self._op_repr(), fn, err) from err
        size = _groups.int64_scalar(result, self._op_name, fn, "window_size_func")
        if size < 1:
            raise _groups.window_size_error(self._op_name, key, size)
        return size

    def _reduce(self, key: int, elements: list[Any]) -> Dataset:
        """``reduce_func(key, window)``, which must be a Dataset."""
        fn = self._reduce_func
        try:
            result = fn(np.int64(key), ElementsDataset(elements))
        except StopIteration as err:
            raise stop_error(self._op_repr(), fn, err) from err
        if not isinstance(result, Dataset):
            raise TypeError(
                f"{self._op_name}: reduce_func {describe_callable(fn)} must return a pipestate "
                f"Dataset, got {type(result).__name__} {brief(result, 80)}"
            )
        return result
