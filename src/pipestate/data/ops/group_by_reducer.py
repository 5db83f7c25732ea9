"""``group_by_reducer``: reduces the elements of each key with a :class:`Reducer`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pipestate._validate import brief, check_function
from pipestate.data import _groups, _structure
from pipestate.data._calls import call, stop_error
from pipestate.data._fingerprint import describe_callable
from pipestate.data.dataset import INFINITE_CARDINALITY, UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import State, StreamIterator, read_bool, read_int
from pipestate.data.ops.scan import _decode, _encode, _fill
from pipestate.errors import StateMismatchError


class Reducer:
    """How ``group_by_reducer`` reduces the elements of one key (tf.data's ``Reducer``).

    Args:
      init_func: maps a key (an int64 scalar) to the initial reduction state
        (a NumPy value or nested tuple / dict of them).
      reduce_func: maps ``(state, element)`` to the new state, which keeps the
        initial state's structure and leaf dtypes (shapes may change).
      finalize_func: maps the final state (a tuple unpacked) to the output element.

    Raises:
      TypeError: a function that is not callable.

    Example:
      >>> import numpy as np
      >>> import pipestate as ps
      >>> count = ps.data.Reducer(lambda key: np.int64(0), lambda n, x: n + 1, lambda n: n)
      >>> [int(n) for n in ps.Dataset.range(7).group_by_reducer(lambda x: x % 3, count)]
      [3, 2, 2]
    """

    def __init__(
        self,
        init_func: Callable[..., Any],
        reduce_func: Callable[..., Any],
        finalize_func: Callable[..., Any],
    ) -> None:
        self._init_func: Callable[..., Any] = check_function("init_func", init_func, "Reducer")
        self._reduce_func: Callable[..., Any] = check_function(
            "reduce_func", reduce_func, "Reducer"
        )
        self._finalize_func: Callable[..., Any] = check_function(
            "finalize_func", finalize_func, "Reducer"
        )

    @property
    def init_func(self) -> Callable[..., Any]:
        """Maps a key to its initial state."""
        return self._init_func

    @property
    def reduce_func(self) -> Callable[..., Any]:
        """Maps ``(state, element)`` to the new state."""
        return self._reduce_func

    @property
    def finalize_func(self) -> Callable[..., Any]:
        """Maps the final state to the output element."""
        return self._finalize_func

    def __repr__(self) -> str:
        names = (
            describe_callable(f) for f in (self._init_func, self._reduce_func, self._finalize_func)
        )
        return "Reducer({})".format(", ".join(names))


class _GroupByReducerIterator(StreamIterator["GroupByReducerDataset"]):
    """Reads the whole input, reducing per key, then outputs one finalized state per key.

    State: the input's, whether it has been read to its end, the keys seen
    (ascending) with each key's reduction state (its leaves, encoded as
    ``scan`` saves its state), and how many keys have been output.
    """

    _INPUT_ENDED = "input_ended"
    _KEYS = "keys"
    _STATES = "states"
    _PRODUCED = "produced"
    _STATE_KEYS = (_INPUT_ENDED, _KEYS, _STATES, _PRODUCED, StreamIterator._PARENT)

    def _start(self) -> None:
        super()._start()
        self._states: dict[int, Any] = {}
        self._input_ended = False
        self._order: list[int] = []
        self._produced = 0

    def _next(self) -> Any:
        dataset = self._source
        if not self._input_ended:
            parent = self._inputs[0]
            states = self._states
            while True:
                try:
                    element = parent._next()
                except StopIteration:
                    break
                key = _groups.call_key_func(dataset._key_func, element, self._op)
                state = states.get(key)
                if state is None:
                    state = dataset._init(key)
                states[key] = dataset._reduce(key, state, element)
            self._input_ended = True
            self._order = sorted(states)
        if self._produced == len(self._order):
            raise StopIteration
        key = self._order[self._produced]
        self._produced += 1
        return dataset._finalize(self._states[key])

    def _op_state(self) -> State:
        keys = sorted(self._states)
        return {
            self._INPUT_ENDED: self._input_ended,
            self._KEYS: keys,
            self._STATES: [
                [_encode(leaf) for leaf in _structure.flatten(self._states[key])] for key in keys
            ],
            self._PRODUCED: self._produced,
            self._PARENT: self._inputs[0]._get_state(),
        }

    def _restore(self, state: State) -> None:
        op = self._op
        dataset = self._source
        input_ended = read_bool(state, self._INPUT_ENDED, op)
        keys, saved = state[self._KEYS], state[self._STATES]
        if (
            not isinstance(keys, list)
            or not all(type(k) is int for k in keys)
            or keys != sorted(set(keys))
            or not isinstance(saved, list)
            or len(saved) != len(keys)
        ):
            raise StateMismatchError(
                f"{op}: state['keys'] must be increasing int keys and state['states'] one list "
                f"of leaves per key, got keys {brief(keys, 80)} and states {brief(saved, 80)}"
            )
        produced = read_int(state, self._PRODUCED, op, maximum=len(keys) if input_ended else 0)
        states: dict[int, Any] = {}
        for key, leaves in zip(keys, saved):
            where = f"state['states'] of key {key}"
            template = dataset._init(key)
            expected = _structure.flatten(template)
            if not isinstance(leaves, list) or len(leaves) != len(expected):
                raise StateMismatchError(
                    f"{op}: {where} must be a list of {len(expected)} leaves, got "
                    f"{brief(leaves, 80)}"
                )
            decoded = [_decode(record, f"{where}[{i}]") for i, record in enumerate(leaves)]
            value = _fill(template, iter(decoded))
            try:
                dataset._check(key, value, template, where)
            except TypeError as err:
                raise StateMismatchError(str(err)) from err
            states[key] = value
        super()._restore({self._PARENT: state[self._PARENT]})
        self._input_ended = input_ended
        self._states = states
        self._order = keys if input_ended else []
        self._produced = produced


class GroupByReducerDataset(Dataset):
    """tf.data's ``group_by_reducer``: one output per key, its elements reduced by ``reducer``.

    ``key_func(element)`` (a tuple unpacked) gives each element's int64 key.
    The first element of a key starts its state with ``reducer.init_func(key)``;
    each element then updates it, ``state = reducer.reduce_func(state, element)``.
    At the end of the input each key's state is finalized with
    ``reducer.finalize_func(state)``, keys in ascending order (as tf.data).
    The whole input is read before the first output: the input must be finite.

    The iterator state holds the reduction state of every key seen (growing
    with the number of distinct keys) in the leaf encoding ``scan`` uses: JSON
    lists for small leaves, arrays for large ones.

    Args:
      key_func: maps an element to an int64 scalar key.
      reducer: a :class:`Reducer`.

    Raises:
      ValueError: the input is infinite.
      TypeError: ``key_func`` is not callable, ``reducer`` is not a Reducer;
        while iterating, a key that is not an int64 scalar or a new state that
        changes the initial state's structure or dtypes.

    Example:
      >>> import numpy as np
      >>> import pipestate as ps
      >>> total = ps.data.Reducer(lambda key: np.int64(0), lambda s, x: s + x, lambda s: s)
      >>> [int(s) for s in ps.Dataset.range(6).group_by_reducer(lambda x: x % 2, total)]
      [6, 9]
    """

    _op_name = "group_by_reducer"
    _keeps_random_access = False
    _iterator_class = _GroupByReducerIterator

    def __init__(self, parent: Dataset, key_func: Callable[..., Any], reducer: Reducer) -> None:
        super().__init__([parent])
        self._key_func = check_function("key_func", key_func, self._op_name)
        if not isinstance(reducer, Reducer):
            raise TypeError(
                f"{self._op_name}: reducer must be a pipestate.data.Reducer, got "
                f"{type(reducer).__name__} {brief(reducer, 80)}"
            )
        self._reducer = reducer
        if parent.cardinality() == INFINITE_CARDINALITY:
            raise ValueError(
                f"{self._op_name}: the input is infinite, but group_by_reducer reads its whole "
                f"input before its first output; take() a finite part first: {parent!r}"
            )

    def _cardinality(self) -> int:
        return UNKNOWN_CARDINALITY

    def _params(self) -> dict[str, Any]:
        r = self._reducer
        return {
            "key_func": describe_callable(self._key_func),
            "init_func": describe_callable(r.init_func),
            "reduce_func": describe_callable(r.reduce_func),
            "finalize_func": describe_callable(r.finalize_func),
        }

    def _state_value(self, value: Any, fn: Callable[..., Any]) -> Any:
        try:
            state = _structure.normalize(value, lists_as_tuples=False, what=self._op_name)
        except TypeError as err:
            raise TypeError(
                f"{self._op_name}: {describe_callable(fn)} returned an invalid state: {err}"
            ) from err
        return _structure.map_structure(_structure.scalar_leaf, state)

    def _init(self, key: int) -> Any:
        """``init_func(key)``: a new key's initial state (NumPy values)."""
        fn = self._reducer.init_func
        try:
            value = fn(np.int64(key))
        except StopIteration as err:
            raise stop_error(self._op_repr(), fn, err) from err
        return self._state_value(value, fn)

    def _check(self, key: int, state: Any, template: Any, what: str) -> None:
        """Raises TypeError unless ``state`` has ``template``'s structure and leaf dtypes."""
        leaves = _structure.flatten(template)
        try:
            _structure.assert_same_structure(state, template, self._op_name)
            same = all(
                _structure.dtype_matches(a, np.asarray(b).dtype)
                for a, b in zip(_structure.flatten(state), leaves)
            )
        except TypeError:
            same = False
        if not same:
            raise TypeError(
                f"{self._op_name}: {what} is {_structure.describe(state)}, but init_func gave "
                f"{_structure.describe(template)} for key {key}; the state must keep the initial "
                "state's structure and dtypes"
            )

    def _reduce(self, key: int, state: Any, element: Any) -> Any:
        """``reduce_func(state, element)``, checked against the key's initial state."""
        fn = self._reducer.reduce_func
        try:
            value = fn(state, element)
        except StopIteration as err:
            raise stop_error(self._op_repr(), fn, err) from err
        new = self._state_value(value, fn)
        self._check(key, new, state, f"the state returned by {describe_callable(fn)}")
        return new

    def _finalize(self, state: Any) -> Any:
        fn = self._reducer.finalize_func
        try:
            value = call(fn, state)
        except StopIteration as err:
            raise stop_error(self._op_repr(), fn, err) from err
        return _structure.normalize(value, lists_as_tuples=True, what=self._op_name)
