"""``index_flat_map``: a ``flat_map`` whose output position maps to an input position."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pipestate._validate import brief, check_function, check_int
from pipestate.data import _buffer, _structure
from pipestate.data._calls import call, stop_error
from pipestate.data._fingerprint import describe_callable
from pipestate.data.dataset import INFINITE_CARDINALITY, UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import State, StreamIterator, read_int
from pipestate.errors import InvalidArgumentError, StateMismatchError


class _IndexFlatMapIterator(StreamIterator["IndexFlatMapDataset"]):
    """Output ``i`` is row ``offset`` of ``map_func`` of input element ``index_map_func(i)[0]``.

    Over a streaming input the input is read forward to each element asked
    for (``index_map_func`` must not go back), and the element being flattened
    is kept. State: the outputs so far, the input's state, the number of
    input elements read and, over a streaming input, the element last read
    (re-read by index from a random-access input instead).
    """

    _PRODUCED = "produced"
    _READ = "read"
    _ELEMENT = "element"
    _STATE_KEYS = (_PRODUCED, _READ, _ELEMENT, StreamIterator._PARENT)

    def _start(self) -> None:
        super()._start()
        self._by_index = self._source._parents[0]._random_access
        self._produced = 0
        self._read = 0  # input elements read; the last one is self._element
        self._element: Any = None
        self._mapped: Any = None  # map_func(self._element), computed once

    def _next(self) -> Any:
        dataset = self._source
        produced = self._produced
        if dataset._output_cardinality is not None and produced >= dataset._output_cardinality:
            raise StopIteration
        index, offset = dataset._index_of(produced)
        if self._by_index:
            n = dataset._parents[0].cardinality()
            if n >= 0 and index >= n:
                raise StopIteration
            if index != self._read - 1 or self._mapped is None:
                element = dataset._parents[0]._get(self._epoch, index)
                self._mapped, self._read = dataset._map(element), index + 1
        else:
            if index < self._read - 1:
                raise InvalidArgumentError(
                    f"{dataset._op_repr()}: index_map_func maps output {produced} to input "
                    f"element {index}, before element {self._read - 1} already read; over a "
                    "streaming input the element indices must not decrease"
                )
            while self._read <= index:
                self._element = self._inputs[0]._next()  # StopIteration: the input has ended
                self._mapped = None
                self._read += 1
            if self._mapped is None:
                self._mapped = dataset._map(self._element)
        row = dataset._row(self._mapped, index, offset)
        self._produced = produced + 1
        return row

    def _check_position(self, produced: int, read: int) -> None:
        """Raises unless ``read`` input elements fit ``produced`` outputs over a streaming input.

        The last output's element must be among those read, and the next
        output's must not be before the last one read.
        """
        dataset = self._source
        limit = dataset._output_cardinality
        last = dataset._index_of(produced - 1)[0] if produced else 0
        following = None
        if limit is None or produced < limit:
            following = dataset._index_of(produced)[0]
        if last > read - 1 or (following is not None and following < read - 1):
            raise StateMismatchError(
                f"{self._op}: state['read']={read} input elements do not fit "
                f"state['produced']={produced} outputs of index_map_func"
            )

    def _op_state(self) -> State:
        keep = not self._by_index and self._read > 0
        return {
            self._PRODUCED: self._produced,
            self._READ: self._read,
            self._ELEMENT: _buffer.pack([self._element] if keep else [], self._op),
            self._PARENT: self._inputs[0]._get_state(),
        }

    def _restore(self, state: State) -> None:
        op = self._op
        dataset = self._source
        limit = dataset._output_cardinality
        produced = read_int(state, self._PRODUCED, op, maximum=limit)
        read = read_int(state, self._READ, op)
        elements = _buffer.unpack(state[self._ELEMENT], op)
        if len(elements) != (0 if self._by_index or read == 0 else 1):
            raise StateMismatchError(
                f"{op}: state['element'] must hold the last input element read over a streaming "
                f"input (none over a random-access one), got {len(elements)} elements"
            )
        if not self._by_index and read:
            self._check_position(produced, read)
        super()._restore({self._PARENT: state[self._PARENT]})
        self._produced, self._read = produced, read
        self._element = elements[0] if elements else None
        self._mapped = None


class IndexFlatMapDataset(Dataset):
    """tf.data's ``index_flat_map``: ``flat_map`` with an index mapping, so it keeps random access.

    ``map_func(element)`` returns the element's rows as one array (or a
    structure of arrays sharing their first dimension; a scalar is one row,
    offset 0, as in tf.data); ``index_map_func(i)``
    returns ``(element_index, offset)``: output ``i`` is row ``offset`` of
    ``map_func`` of input element ``element_index``. A plain tuple element
    is unpacked into ``map_func``'s arguments.

    With ``output_cardinality`` over a random-access input the op is random
    access (``global_shuffle``, ``ds[i]``, one-index states), as in tf.data,
    where ``output_cardinality`` is required for global shuffling. Otherwise
    it is streaming: outputs come in order until ``output_cardinality``, or
    until ``index_map_func`` points past the end of the input; its state is
    the input's, the output count and, over a streaming input, the input
    element being flattened. ``map_func`` is called for each output over a
    random-access input (per input element when streaming).

    Args:
      map_func: maps an element to the array (or structure of arrays) of its rows.
      index_map_func: maps an output index (an int64 scalar) to a pair
        ``(element_index, offset)`` of integers.
      output_cardinality: the number of outputs, ``INFINITE_CARDINALITY``,
        or ``None`` (unknown).

    Raises:
      TypeError: a function that is not callable, a non-integer ``output_cardinality``.
      ValueError: an ``output_cardinality`` below -1; while iterating,
        :class:`~pipestate.errors.InvalidArgumentError` for an
        ``index_map_func`` result that is not a pair of integers, an offset
        out of range of the mapped rows, or rows that are scalars.

    Example:
      >>> import numpy as np
      >>> import pipestate as ps
      >>> ds = ps.Dataset.range(3).index_flat_map(
      ...     lambda x: np.full(2, x), lambda i: (i // 2, i % 2), output_cardinality=6)
      >>> [int(x) for x in ds]
      [0, 0, 1, 1, 2, 2]
      >>> int(ds[3])
      1
    """

    _op_name = "index_flat_map"
    _iterator_class = _IndexFlatMapIterator

    def __init__(
        self,
        parent: Dataset,
        map_func: Callable[..., Any],
        index_map_func: Callable[..., Any],
        output_cardinality: int | None = None,
    ) -> None:
        super().__init__([parent])
        op = self._op_name
        self._map_func = check_function("map_func", map_func, op)
        self._index_map_func = check_function("index_map_func", index_map_func, op)
        cardinality = None
        if output_cardinality is not None:
            cardinality = check_int("output_cardinality", output_cardinality, minimum=-2, op=op)
            if cardinality == UNKNOWN_CARDINALITY:
                cardinality = None
        self._output_cardinality: int | None = (
            None if cardinality in (None, INFINITE_CARDINALITY) else cardinality
        )
        self._infinite = cardinality == INFINITE_CARDINALITY

    @property
    def _random_access(self) -> bool:
        known = self._output_cardinality is not None or self._infinite
        return known and self._parents[0]._random_access

    @property
    def _vectorised(self) -> bool:
        return False

    def _cardinality(self) -> int:
        if self._infinite:
            return INFINITE_CARDINALITY
        return UNKNOWN_CARDINALITY if self._output_cardinality is None else self._output_cardinality

    def _params(self) -> dict[str, Any]:
        return {
            "map_func": describe_callable(self._map_func),
            "index_map_func": describe_callable(self._index_map_func),
            "output_cardinality": self._cardinality(),
        }

    def _index_of(self, position: int) -> tuple[int, int]:
        """``index_map_func(position)``, checked to be a pair of non-negative integers."""
        fn = self._index_map_func
        try:
            result = fn(np.int64(position))
        except StopIteration as err:
            raise stop_error(self._op_repr(), fn, err) from err
        if isinstance(result, np.ndarray) and result.shape == (2,):
            result = tuple(result)
        pair = result if isinstance(result, (tuple, list)) and len(result) == 2 else None
        values = [] if pair is None else [v[()] if isinstance(v, np.ndarray) else v for v in pair]
        if pair is None or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v >= 0
            for v in values
        ):
            raise InvalidArgumentError(
                f"{self._op_name}: index_map_func {describe_callable(fn)} must return a pair "
                f"(element_index, offset) of non-negative integers, got {brief(result, 80)} "
                f"for output {position}"
            )
        return int(values[0]), int(values[1])

    def _map(self, element: Any) -> Any:
        """``map_func(element)``: the element's rows."""
        fn = self._map_func
        try:
            result = call(fn, element)
        except StopIteration as err:
            raise stop_error(self._op_repr(), fn, err) from err
        return _structure.normalize(result, lists_as_tuples=False, what=self._op_name)

    def _row(self, mapped: Any, index: int, offset: int) -> Any:
        """Row ``offset`` of the rows ``mapped`` from input element ``index``."""
        rows = _structure.leading_dimension(mapped, 0)
        if (
            rows is None
            and offset == 0
            and all(np.ndim(leaf) == 0 for leaf in _structure.flatten(mapped))
        ):
            return mapped  # a single row given as itself, as tf.data takes it
        if rows is None:
            raise InvalidArgumentError(
                f"{self._op_name}: map_func {describe_callable(self._map_func)} must return "
                f"rows (arrays sharing a first dimension), got {_structure.describe(mapped)}"
            )
        if offset >= rows:
            raise InvalidArgumentError(
                f"{self._op_name}: index_map_func gave offset {offset} into input element "
                f"{index}, whose map_func result has {rows} rows"
            )
        return _structure.index_leaves(mapped, offset)

    def _get(self, epoch: int, position: int) -> Any:
        index, offset = self._index_of(position)
        parent = self._parents[0]
        n = parent.cardinality()
        if n >= 0 and index >= n:
            raise InvalidArgumentError(
                f"{self._op_repr()}: index_map_func maps output {position} to input element "
                f"{index}, but the input has {n} elements"
            )
        return self._row(self._map(parent._get(epoch, index)), index, offset)
