"""``unique``: each distinct element once, in order of first appearance."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipestate._validate import brief
from pipestate.data import _buffer, _structure
from pipestate.data._spec import TensorSpec
from pipestate.data.dataset import UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import State, StreamIterator
from pipestate.errors import StateMismatchError

_KINDS = "iuS"  # tf.data's unique takes int32, int64 and string elements


def _key(element: Any, op: str) -> Any:
    """A hashable identity of an element: equal for equal elements (same dtype and shape)."""
    if isinstance(element, np.generic) and type(element) is not np.object_:
        kind = element.dtype.kind
        if kind == "S":
            return (kind, element.tobytes())  # .item() would drop trailing NUL bytes
        if kind in _KINDS:
            return (kind, element.item())
    elif isinstance(element, np.ndarray) and element.dtype.kind in _KINDS:
        return (element.dtype.kind, element.shape, element.tobytes())
    raise TypeError(
        f"{op}: unique supports elements that are one integer or string tensor (as tf.data), "
        f"got {_structure.describe(element)} {brief(element, 60)}"
    )


class _UniqueIterator(StreamIterator["UniqueDataset"]):
    """Skips elements seen before; state: the input's and the distinct elements seen so far.

    The seen elements are saved as a buffer (``_buffer.pack``), in order of
    first appearance: the state grows with the number of distinct elements.
    """

    _SEEN = "seen"
    _STATE_KEYS = (_SEEN, StreamIterator._PARENT)

    def _start(self) -> None:
        super()._start()
        self._seen: set[Any] = set()
        self._order: list[Any] = []

    def _next(self) -> Any:
        parent = self._inputs[0]
        seen = self._seen
        op = self._op
        while True:
            element = parent._next()
            key = _key(element, op)
            if key not in seen:
                seen.add(key)
                self._order.append(element)
                return element

    def _op_state(self) -> State:
        return {
            self._SEEN: _buffer.pack(self._order, self._op),
            self._PARENT: self._inputs[0]._get_state(),
        }

    def _restore(self, state: State) -> None:
        op = self._op
        order = _buffer.unpack(state[self._SEEN], op)
        try:
            keys = [_key(element, op) for element in order]
        except TypeError as err:
            raise StateMismatchError(
                f"{op}: state['seen'] holds an invalid element: {err}"
            ) from err
        if len(set(keys)) != len(keys):
            raise StateMismatchError(f"{op}: state['seen'] holds an element twice")
        super()._restore({self._PARENT: state[self._PARENT]})
        self._order = order
        self._seen = set(keys)


class UniqueDataset(Dataset):
    """tf.data's ``unique``: each distinct element once, in the order it first appears.

    Elements must be single integer or string tensors (scalars or arrays),
    as in tf.data; equal means the same dtype, shape and values. The
    cardinality is unknown, as tf.data's (even over an infinite input).

    The iterator state holds every distinct element seen so far, so it grows
    with the number of distinct elements (tf.data's state holds the same set).

    Raises:
      TypeError: a known element type that is not one integer or string
        tensor (at once), or such an element while iterating.

    Example:
      >>> import numpy as np
      >>> import pipestate as ps
      >>> ds = ps.Dataset.from_tensor_slices(np.array([1, 37, 2, 37, 2, 1])).unique()
      >>> [int(x) for x in ds]
      [1, 37, 2]
    """

    _op_name = "unique"
    _keeps_random_access = False
    _passes_elements = True
    _iterator_class = _UniqueIterator

    def __init__(self, parent: Dataset) -> None:
        super().__init__([parent])
        spec = parent._element_spec()
        if spec is not None and (
            not isinstance(spec, TensorSpec) or np.dtype(spec.dtype).kind not in _KINDS
        ):
            raise TypeError(
                f"unique supports elements that are one integer or string tensor (as tf.data), "
                f"but the elements of {parent!r} are {spec!r}"
            )

    def _cardinality(self) -> int:
        return UNKNOWN_CARDINALITY  # as tf.data, even for an infinite input
