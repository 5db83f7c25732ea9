"""``map``: applies a pure function to every element."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pipestate._validate import check_function, check_stateful
from pipestate.data import _structure
from pipestate.data._calls import stop_error
from pipestate.data._capabilities import Elastic
from pipestate.data._fingerprint import describe_callable
from pipestate.data.dataset import Dataset
from pipestate.data.iterator import StreamIterator

_STRUCTURES = (tuple, list, dict)


class _MapIterator(StreamIterator["MapDataset"]):
    """Applies the function to each element of a streaming input; state: the input's."""

    def _next(self) -> Any:
        return self._source._apply(self._inputs[0]._next())


class MapDataset(Dataset):
    """``map_func`` applied to each element; a plain tuple is unpacked into its arguments.

    The function must be pure (its output depends only on its input) for a
    restored iterator to continue exactly; a function marked ``stateful`` makes
    the pipeline one with external state. Its result is converted to NumPy
    values, and a returned list becomes a tuple, as in tf.data.
    """

    _op_name = "map"
    _elastic = Elastic.ONE_TO_ONE
    _iterator_class = _MapIterator

    def __init__(
        self, parent: Dataset, map_func: Callable[..., Any], *, stateful: bool = False
    ) -> None:
        super().__init__([parent])
        self._fn = check_function("map_func", map_func, "map")
        self._stateful = check_stateful(stateful, "map")
        self._parent_vectorised = parent._vectorised

    @property
    def _vectorised(self) -> bool:
        return False

    def _cardinality(self) -> int:
        return self._parents[0].cardinality()

    def _params(self) -> dict[str, Any]:
        return {"map_func": describe_callable(self._fn)}

    def _external_state(self) -> str | None:
        return "stateful function" if self._stateful else None

    def _call(self, element: Any) -> Any:
        """The function's output for ``element``, before it is converted to an element."""
        try:
            return self._fn(*element) if type(element) is tuple else self._fn(element)
        except StopIteration as err:
            raise stop_error(self._op_repr(), self._fn, err) from err

    def _apply(self, element: Any) -> Any:
        return _structure.normalize(self._call(element), lists_as_tuples=True, what=self)

    def _get(self, epoch: int, position: int) -> Any:
        return self._apply(self._parents[0]._get(epoch, position))

    def _get_list(self, epoch: int, positions: np.ndarray) -> list[Any]:
        parent = self._parents[0]
        if self._parent_vectorised:
            epochs = np.full_like(positions, epoch)
            inputs = _structure.unstack(parent._get_batch(epochs, positions), len(positions))
        else:
            inputs = parent._get_list(epoch, positions)
        if not inputs:
            return []
        fn = self._fn
        # Elements of one input share a structure: decide unpacking once per block.
        try:
            if type(inputs[0]) is tuple:
                out = [fn(*element) for element in inputs]
            else:
                out = [fn(element) for element in inputs]
        except Exception:
            # Found again one by one (a pure function: calling it again changes
            # nothing): the outputs before the failing element are kept, and
            # asked for it again, it raises.
            out = []
            for element in inputs:
                try:
                    out.append(self._call(element))
                except Exception:
                    if not out:
                        raise
                    break
        if _structure.ready_scalars(out):
            return out
        normalize = _structure.normalize
        for i, value in enumerate(out):
            try:
                out[i] = normalize(value, lists_as_tuples=True, what=self)
            except Exception:
                if not i:
                    raise
                del out[i:]
                break
        return out

    def _get_batch(self, epochs: np.ndarray, positions: np.ndarray) -> Any:
        parent = self._parents[0]
        if self._parent_vectorised:
            inputs = _structure.unstack(parent._get_batch(epochs, positions), len(positions))
        else:
            inputs = [parent._get(int(e), int(p)) for e, p in zip(epochs, positions)]
        if not inputs:
            return parent._get_batch(epochs, positions)
        fn = self._fn
        # Elements of one input share a structure: decide unpacking once per batch.
        try:
            if type(inputs[0]) is tuple:
                outputs = [fn(*x) for x in inputs]
            else:
                outputs = [fn(x) for x in inputs]
        except StopIteration as err:
            raise stop_error(self._op_repr(), fn, err) from err
        if isinstance(outputs[0], _STRUCTURES):
            outputs = [
                _structure.normalize(out, lists_as_tuples=True, what=self) for out in outputs
            ]
            return _structure.stack(outputs, self)
        return _structure.stack_leaves(outputs, self)
