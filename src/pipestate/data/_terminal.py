"""The methods of ``Dataset`` that read it and return values: ``reduce``,
``get_single_element`` and the first-element fallback of ``element_spec``."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pipestate._validate import brief, check_function
from pipestate.data import _structure
from pipestate.data._calls import stop_error
from pipestate.data._spec import spec_of
from pipestate.errors import InvalidArgumentError

if TYPE_CHECKING:
    from pipestate.data.dataset import Dataset

_FIRST_ELEMENT_SPECS: weakref.WeakKeyDictionary[Dataset, Any] = weakref.WeakKeyDictionary()
"""``element_spec`` of datasets whose spec was read from their first element."""
_EMPTY = object()


def _check_name(name: Any, op: str) -> str:
    """``name=`` of a terminal method, as the label it adds to the op's name in messages."""
    if name is None:
        return op
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise TypeError(
            f"{op}: name must be a non-empty string of at most 200 characters, "
            f"got {type(name).__name__} {brief(name, 80)}"
        )
    return f"{op} (name: {name})"


def reduce_dataset(
    dataset: Dataset, initial_state: Any, reduce_func: Callable[..., Any], name: str | None
) -> Any:
    """``Dataset.reduce``: folds the elements of a fresh iterator into one value."""
    from pipestate.data.dataset import INFINITE_CARDINALITY

    op = _check_name(name, "reduce")
    check_function("reduce_func", reduce_func, op)
    if dataset.cardinality() == INFINITE_CARDINALITY:
        raise ValueError(
            f"{op}: the dataset is infinite, so the reduction would never end: {dataset!r}. "
            "Apply take(n) first."
        )
    try:
        # A list is data, as in tf.data: an initial state [0, 0] is one array.
        state = _structure.normalize(initial_state, lists_as_tuples=False, what=op)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{op}: invalid initial_state: {err}") from err
    initial = state = _structure.map_structure(_structure.scalar_leaf, state)
    with iter(dataset) as iterator:
        for element in iterator:
            try:
                new_state = reduce_func(state, element)
            except StopIteration as err:
                raise stop_error(op, reduce_func, err) from err
            try:
                state = _structure.conform_to(new_state, initial)
            except _structure.StructureMismatchError:
                raise _mismatch(new_state, initial, op) from None
    return state


def _mismatch(new_state: Any, initial: Any, op: str) -> TypeError:
    """The error for a new state whose structure or dtypes are not ``initial``'s."""
    try:
        normalized = _structure.normalize(new_state, lists_as_tuples=False, what="reduce")
        _structure.assert_same_structure(normalized, initial, "reduce")
    except (TypeError, ValueError):
        return TypeError(
            f"{op}: The structure of the new state must match the initial state. Expected "
            f"{_structure.describe(initial)} but got {brief(new_state, 120)}. reduce_func must "
            "return a state of initial_state's structure."
        )
    return TypeError(
        f"{op}: The element types for the new state must match the initial state. Expected "
        f"{_structure.describe(initial)} but got {_structure.describe(normalized)}. Give "
        "initial_state the dtypes reduce_func returns (e.g. np.float64(0) instead of 0)."
    )


def single_element(dataset: Dataset, name: str | None) -> Any:
    """``Dataset.get_single_element``: the element of a one-element dataset."""
    _check_name(name, "get_single_element")
    where = f" (name: {name})" if name else ""
    with iter(dataset) as iterator:
        element = next(iterator, _EMPTY)
        if element is _EMPTY:
            raise InvalidArgumentError(
                f"Dataset was empty.{where} get_single_element needs a dataset of exactly one "
                f"element: {dataset!r}"
            )
        if next(iterator, _EMPTY) is not _EMPTY:
            raise InvalidArgumentError(
                f"Dataset had more than one element.{where} get_single_element needs a dataset "
                f"of exactly one element (take(1) keeps the first): {dataset!r}"
            )
    return element


_READING = threading.local()


def reading_specs() -> bool:
    """Whether ``element_spec`` is being computed in this thread (ops may read first elements)."""
    return bool(getattr(_READING, "active", False))


def element_spec(dataset: Dataset) -> Any:
    """``Dataset.element_spec``: the ops' static specs, with first elements' specs for ops
    (user functions) whose spec is not known statically."""
    outer = reading_specs()
    _READING.active = True
    try:
        static = dataset._element_spec()
    finally:
        _READING.active = outer
    return static if static is not None else first_element_spec(dataset)


def first_element_spec(dataset: Dataset) -> Any:
    """The spec of ``dataset``'s first element (``None`` when it has none), read once."""
    if dataset in _FIRST_ELEMENT_SPECS:
        return _FIRST_ELEMENT_SPECS[dataset]
    outer = reading_specs()
    _READING.active = False  # reading the element must not read other first elements
    try:
        with iter(dataset) as iterator:
            element = next(iterator, _EMPTY)
    finally:
        _READING.active = outer
    spec = None if element is _EMPTY else spec_of(element)
    _FIRST_ELEMENT_SPECS[dataset] = spec
    return spec
