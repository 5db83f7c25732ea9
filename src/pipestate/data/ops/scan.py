"""``scan``: threads a state through the elements."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from pipestate._validate import brief, check_function, check_stateful
from pipestate.data import _structure
from pipestate.data._calls import stop_error
from pipestate.data._fingerprint import describe_callable
from pipestate.data._structure import StructureMismatchError as _MismatchError
from pipestate.data._structure import conform_to as _conform
from pipestate.data._structure import dtype_matches as _dtype_matches
from pipestate.data._structure import scalar_leaf as _scalar_leaf
from pipestate.data.dataset import Dataset
from pipestate.data.iterator import State, StreamIterator, state_array
from pipestate.errors import StateMismatchError


def _fill(template: Any, leaves: Iterator[Any]) -> Any:
    """``template``'s structure (named tuples and key order included) with ``leaves``."""
    if isinstance(template, dict):
        values = {key: _fill(template[key], leaves) for key in sorted(template)}
        return {key: values[key] for key in template}
    if isinstance(template, tuple):
        items = [_fill(item, leaves) for item in template]
        return type(template)(*items) if _structure.is_namedtuple(template) else tuple(items)
    return next(leaves)


_INLINE = 256  # leaves of at most this many values are saved as JSON lists
# The kinds of saved values a leaf of each dtype kind may be read from.
_SAFE_KINDS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf", "c": "iufc", "S": "S", "U": "U"}
_DTYPE, _SHAPE, _DATA = "dtype", "shape", "data"


def _encode(leaf: Any) -> State:
    """A leaf as ``{"dtype", "shape", "data"}``: a JSON list when small, else the array."""
    array = np.asarray(leaf)
    data: Any = array
    if array.dtype.kind == "S":
        data = [b.decode("latin-1") for b in array.reshape(-1).tolist()]
    elif array.dtype.kind == "U" or (array.size <= _INLINE and array.dtype.kind != "c"):
        data = array.reshape(-1).tolist()
    return {_DTYPE: array.dtype.str, _SHAPE: list(array.shape), _DATA: data}


def _decode(record: Any, where: str) -> Any:
    """The leaf saved by :func:`_encode` (read strictly)."""
    if not isinstance(record, dict) or set(record) != {_DTYPE, _SHAPE, _DATA}:
        raise StateMismatchError(f"scan: {where} must be a dict with keys dtype, shape, data")
    shape, data = record[_SHAPE], record[_DATA]
    code = record[_DTYPE]
    # Only a dtype string as _encode writes it: NumPy reads lists as structured
    # dtypes, and a hostile one can take forever.
    if not isinstance(code, str) or len(code) > 16:
        raise StateMismatchError(f"scan: {where} has an invalid dtype {brief(code, 80)}")
    try:
        dtype = np.dtype(code)
    except (TypeError, ValueError) as err:
        raise StateMismatchError(
            f"scan: {where} has an invalid dtype {brief(record[_DTYPE], 80)}"
        ) from err
    if dtype.kind not in "biufcSU" or not isinstance(shape, list) or len(shape) > 32:
        raise StateMismatchError(
            f"scan: {where} has an invalid dtype or shape: {brief(record, 120)}"
        )
    if dtype.kind == "S" and isinstance(data, list):
        if not all(isinstance(item, str) for item in data):
            raise StateMismatchError(f"scan: {where} must hold text as a list of str")
        data = [item.encode("latin-1") for item in data]
    if not all(isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in shape):
        raise StateMismatchError(f"scan: {where} has an invalid shape {brief(shape, 80)}")
    # Values must be of the saved dtype's kind: 1.5 never becomes an int64 1.
    values = state_array(data, f"scan: {where}['data']")
    if values.size and values.dtype.kind not in _SAFE_KINDS[dtype.kind]:
        raise StateMismatchError(
            f"scan: {where} holds {values.dtype} values {brief(data, 80)} for dtype {dtype}"
        )
    with np.errstate(all="ignore"):
        array = values.astype(dtype)
    if dtype.kind in "iub" and not np.array_equal(array, values):
        raise StateMismatchError(f"scan: {where} holds values {brief(data, 80)} that {dtype} can't")
    if array.size != int(np.prod(shape)):
        raise StateMismatchError(f"scan: {where} holds {array.size} values for shape {shape}")
    array = array.reshape(shape)
    return array[()] if array.ndim == 0 else array


class _ScanIterator(StreamIterator["ScanDataset"]):
    """Applies ``scan_func`` to each element; state: the input's position and the scan state.

    The scan state's structure is ``initial_state``'s, so only its leaves
    are saved, in ``flatten`` order, each with its dtype and shape: as JSON
    lists when small (the state stays JSON), as arrays when large.
    """

    _SCAN_STATE = "scan_state"
    _STATE_KEYS = (_SCAN_STATE, StreamIterator._PARENT)

    def _start(self) -> None:
        super()._start()
        self._state = self._source._initial_state

    def _next(self) -> Any:
        element = self._inputs[0]._next()
        self._state, output = self._source._step(self._state, element)
        return output

    def _op_state(self) -> State:
        return {
            self._SCAN_STATE: [_encode(leaf) for leaf in _structure.flatten(self._state)],
            self._PARENT: self._inputs[0]._get_state(),
        }

    def _restore(self, state: State) -> None:
        dataset = self._source
        saved = state[self._SCAN_STATE]
        if not isinstance(saved, list) or len(saved) != len(dataset._dtypes):
            raise StateMismatchError(
                f"scan: state['scan_state'] must be a list of {len(dataset._dtypes)} leaves, "
                f"got {brief(saved, 120)}"
            )
        leaves = [_decode(record, f"state['scan_state'][{i}]") for i, record in enumerate(saved)]
        scan_state = _fill(dataset._initial_state, iter(leaves))
        try:
            dataset._check_state(scan_state, "state['scan_state']")
        except TypeError as err:
            raise StateMismatchError(str(err)) from err
        super()._restore({self._PARENT: state[self._PARENT]})
        self._state = scan_state


class ScanDataset(Dataset):
    """Threads a state through the input: ``scan_func(state, element) -> (new_state, output)``.

    As in tf.data, ``scan_func`` gets exactly two arguments, the state and the
    element (a tuple element is not unpacked), and the new state must keep the
    structure and leaf dtypes of ``initial_state`` (shapes may change). The
    scan state (a NumPy value or nested tuple / dict of them; Python values
    become NumPy values, 0-d arrays NumPy scalars) is saved in the iterator
    state, leaf by leaf with its dtype and shape (JSON lists for small leaves,
    arrays for large ones), so a restored iterator continues with it.

    Args:
      initial_state: the state before the first element.
      scan_func: a function ``(state, element) -> (new_state, output)``, pure
        unless ``stateful``.
      stateful: ``True`` if ``scan_func`` depends on state outside its
        arguments; the pipeline then has external state.

    Raises:
      TypeError: ``scan_func`` is not callable, ``initial_state`` is not a
        NumPy-convertible structure, or (while iterating) ``scan_func`` does
        not return a pair or changes the state's structure or dtypes.

    Example:
      >>> import numpy as np
      >>> import pipestate as ps
      >>> ds = ps.Dataset.range(5).scan(np.int64(0), lambda total, x: (total + x, total + x))
      >>> [int(x) for x in ds]
      [0, 1, 3, 6, 10]
    """

    _op_name = "scan"
    _keeps_random_access = False
    _iterator_class = _ScanIterator

    def __init__(
        self,
        parent: Dataset,
        initial_state: Any,
        scan_func: Callable[..., Any],
        *,
        stateful: bool = False,
    ) -> None:
        super().__init__([parent])
        self._scan_func = check_function("scan_func", scan_func, "scan")
        self._stateful = check_stateful(stateful, "scan")
        try:
            # A list is data, as in tf.data: an initial state [0] is an array.
            state = _structure.normalize(initial_state, lists_as_tuples=False)
        except TypeError as err:
            raise TypeError(f"scan: invalid initial_state: {err}") from err
        self._initial_state = _structure.map_structure(_scalar_leaf, state)
        self._dtypes = [np.asarray(leaf).dtype for leaf in _structure.flatten(state)]
        # A NumPy scalar state (a counter, a running sum) is checked by its type alone.
        initial = self._initial_state
        self._scalar_type = type(initial) if isinstance(initial, np.generic) else None

    def _cardinality(self) -> int:
        return self._parents[0].cardinality()

    def _params(self) -> dict[str, Any]:
        return {
            "initial_state": _structure.describe(self._initial_state),
            "scan_func": describe_callable(self._scan_func),
        }

    def _external_state(self) -> str | None:
        return "stateful function" if self._stateful else None

    def _check_state(self, state: Any, what: str) -> None:
        """Raises TypeError unless ``state`` has the initial state's structure and dtypes."""
        initial = self._initial_state
        try:
            _structure.assert_same_structure(state, initial, "scan")
        except TypeError:
            raise TypeError(
                f"scan: {what} is {_structure.describe(state)}, but initial_state is "
                f"{_structure.describe(initial)}; the state must keep its structure"
            ) from None
        leaves = _structure.flatten(state)
        if not all(_dtype_matches(leaf, dtype) for leaf, dtype in zip(leaves, self._dtypes)):
            raise TypeError(
                f"scan: {what} is {_structure.describe(state)}, but initial_state is "
                f"{_structure.describe(initial)}; the state must keep its dtypes (give "
                "initial_state the dtypes scan_func returns, e.g. np.float64(0) instead of 0)"
            )

    def _step(self, state: Any, element: Any) -> tuple[Any, Any]:
        """One application of ``scan_func``: the checked new state and the output."""
        fn = self._scan_func
        try:
            result = fn(state, element)
        except StopIteration as err:
            raise stop_error(self._op_repr(), fn, err) from err
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise TypeError(
                f"scan: scan_func {describe_callable(fn)} must return a pair "
                f"(new_state, output), got {type(result).__name__} {brief(result, 80)}"
            )
        new_state = result[0]
        if type(new_state) is not self._scalar_type:
            try:
                new_state = _conform(new_state, self._initial_state)
            except _MismatchError:
                normalized = _structure.normalize(new_state, lists_as_tuples=False)
                normalized = _structure.map_structure(_scalar_leaf, normalized)
                self._check_state(normalized, f"the new state returned by {describe_callable(fn)}")
                raise  # unreachable: _check_state raises for what _conform refuses
        return new_state, _structure.normalize(result[1], lists_as_tuples=False, what=self)
