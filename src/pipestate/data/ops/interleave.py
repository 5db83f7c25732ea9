"""``interleave``: maps elements to datasets and cycles through them, a block at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pipestate._validate import (
    brief,
    check_bool,
    check_function,
    check_int,
    check_parallelism,
    check_stateful,
)
from pipestate.data import _buffer
from pipestate.data._calls import call, stop_error
from pipestate.data._engine import resolve_parallelism
from pipestate.data._fingerprint import describe_callable
from pipestate.data.dataset import UNKNOWN_CARDINALITY, Dataset, derived_seed
from pipestate.data.iterator import (
    DatasetIterator,
    State,
    StreamIterator,
    read_bool,
    read_dict,
    read_int,
)
from pipestate.data.ops.prefetch import PrefetchDataset
from pipestate.data.options import AUTOTUNE
from pipestate.errors import StateMismatchError

DEFAULT_CYCLE_LENGTH = 4
"""``cycle_length`` used for ``None`` (and ``AUTOTUNE``).

tf.data uses the machine's core count; pipestate uses this fixed number so a
state saved on one machine continues identically on any other.
"""


class _Slot:
    """An open inner iterator of the cycle, and the input element that made it."""

    __slots__ = ("dataset", "element", "index", "iterator")

    def __init__(
        self, index: int, element: Any, dataset: Dataset, iterator: DatasetIterator
    ) -> None:
        self.index = index
        self.element = element
        self.dataset = dataset
        self.iterator = iterator


class _InterleaveIterator(StreamIterator["_InterleaveBase"]):
    """tf.data's sequential interleave: ``cycle_length`` slots, ``block_length`` at a time.

    A slot is filled lazily from the next input element when the cycle reaches
    it; an exhausted inner iterator frees its slot and the cycle moves on. The
    state is the input's position, the cycle and block positions, and per
    open slot the index of the input element that made it plus the inner
    iterator's state. On restore ``map_func`` is called again on that element:
    re-read by index from a random-access input, otherwise saved in
    ``"elements"`` (``None`` for a random-access input).
    """

    _CONSUMED = "consumed"
    _INPUT_ENDED = "input_ended"
    _CYCLE_INDEX = "cycle_index"
    _BLOCK_INDEX = "block_index"
    _SLOTS = "slots"
    _ELEMENTS = "elements"
    _STATE_KEYS = (
        _CONSUMED,
        _INPUT_ENDED,
        _CYCLE_INDEX,
        _BLOCK_INDEX,
        _SLOTS,
        _ELEMENTS,
        StreamIterator._PARENT,
    )
    _SLOT_INDEX = "index"
    _SLOT_FINGERPRINT = "fingerprint"
    _SLOT_STATE = "state"
    _SLOT_KEYS = (_SLOT_INDEX, _SLOT_FINGERPRINT, _SLOT_STATE)

    def _start(self) -> None:
        super()._start()
        dataset = self._source
        self._cycle_length = dataset._cycle_length
        self._block_length = dataset._block_length
        self._by_index = dataset._parents[0]._random_access
        self._slots: list[_Slot | None] = [None] * self._cycle_length
        self._open_count = 0
        self._consumed = 0
        self._input_ended = False
        self._cycle_index = 0
        self._block_index = 0

    def _children(self) -> list[DatasetIterator]:
        return [*self._inputs, *(slot.iterator for slot in self._slots if slot is not None)]

    def _advance(self) -> None:
        self._block_index = 0
        self._cycle_index = (self._cycle_index + 1) % self._cycle_length

    def _next(self) -> Any:
        slots = self._slots
        while not self._input_ended or self._open_count:
            slot = slots[self._cycle_index]
            if slot is not None:
                try:
                    element = slot.iterator._next()
                except StopIteration:
                    slot.iterator.close()
                    slots[self._cycle_index] = None
                    self._open_count -= 1
                    self._advance()
                    continue
                self._block_index += 1
                if self._block_index == self._block_length:
                    self._advance()
                return element
            if self._input_ended:
                self._advance()
                continue
            try:
                element = self._inputs[0]._next()
            except StopIteration:
                self._input_ended = True
                continue
            slots[self._cycle_index] = self._open_slot(self._cycle_index, self._consumed, element)
            self._consumed += 1
            self._open_count += 1
        raise StopIteration

    def _open_slot(self, k: int, index: int, element: Any) -> _Slot:
        """Calls ``map_func`` on input element ``index`` and opens the dataset it returns in
        slot ``k`` (read ahead on a thread when ``k`` is below the op's thread count)."""
        dataset = self._source
        inner = dataset._inner_dataset(element)
        entropy = dataset._inner_entropy(self._epoch, index) if inner.draws_seed else None
        reading = inner
        if k < dataset._slot_threads:
            # prefetch is left out of fingerprints and states: the slot saves what it would
            # without the thread, and nothing read ahead is saved.
            reading = PrefetchDataset(inner, AUTOTUNE)
        return _Slot(
            index, None if self._by_index else element, inner, reading._make_iterator(entropy)
        )

    def _op_state(self) -> State:
        slots: list[State | None] = []
        elements = []
        for slot in self._slots:
            if slot is None:
                slots.append(None)
                continue
            slots.append(
                {
                    self._SLOT_INDEX: slot.index,
                    self._SLOT_FINGERPRINT: slot.dataset.fingerprint,
                    self._SLOT_STATE: slot.iterator._get_state(),
                }
            )
            elements.append(slot.element)
        return {
            self._CONSUMED: self._consumed,
            self._INPUT_ENDED: self._input_ended,
            self._CYCLE_INDEX: self._cycle_index,
            self._BLOCK_INDEX: self._block_index,
            self._SLOTS: slots,
            self._ELEMENTS: None if self._by_index else _buffer.pack(elements, self._op),
            self._PARENT: self._inputs[0]._get_state(),
        }

    def _restore(self, state: State) -> None:
        op = self._op
        parent = self._source._parents[0]
        length = parent.cardinality() if self._by_index else -1
        consumed = read_int(state, self._CONSUMED, op, maximum=length if length >= 0 else None)
        input_ended = read_bool(state, self._INPUT_ENDED, op)
        cycle_index = read_int(state, self._CYCLE_INDEX, op, maximum=self._cycle_length - 1)
        block_index = read_int(state, self._BLOCK_INDEX, op, maximum=self._block_length - 1)
        saved = state[self._SLOTS]
        if not isinstance(saved, list) or len(saved) != self._cycle_length:
            raise StateMismatchError(
                f"{op}: state['slots'] must be a list of {self._cycle_length} slots "
                f"(cycle_length), got {brief(saved, 120)}"
            )
        open_count = sum(slot is not None for slot in saved)
        if self._by_index:
            if state[self._ELEMENTS] is not None:
                raise StateMismatchError(
                    f"{op}: state['elements'] must be None for a random-access input (its "
                    f"elements are re-read by index), got {brief(state[self._ELEMENTS], 80)}"
                )
            elements: list[Any] = []
        else:
            elements = _buffer.unpack(state[self._ELEMENTS], op)
            if len(elements) != open_count:
                raise StateMismatchError(
                    f"{op}: state['elements'] holds {len(elements)} input elements for "
                    f"{open_count} open slots"
                )
        super()._restore({self._PARENT: state[self._PARENT]})
        self._consumed, self._input_ended = consumed, input_ended
        self._cycle_index, self._block_index = cycle_index, block_index
        pending = iter(elements)
        for k, slot_state in enumerate(saved):
            if slot_state is not None:
                self._slots[k] = self._restore_slot(k, slot_state, pending)
                self._open_count += 1

    def _restore_slot(self, k: int, saved: Any, pending: Iterator[Any]) -> _Slot:
        op = self._op
        where = f"{op}: state['slots'][{k}]"
        if not isinstance(saved, dict) or set(saved) != set(self._SLOT_KEYS):
            raise StateMismatchError(
                f"{where} must be None or a dict with keys {sorted(self._SLOT_KEYS)}, got "
                f"{brief(saved, 120)}"
            )
        index = read_int(saved, self._SLOT_INDEX, where, maximum=self._consumed - 1)
        if self._by_index:
            element = self._source._parents[0]._get(self._epoch, index)
        else:
            element = next(pending)
        slot = self._open_slot(k, index, element)
        if slot.dataset.fingerprint != saved[self._SLOT_FINGERPRINT]:
            slot.iterator.close()
            raise StateMismatchError(
                f"{where}: map_func returned {slot.dataset!r} for input element {index}, "
                "a different pipeline than the one the state was saved from. Restore with "
                "the map_func used when the state was saved."
            )
        inner_state = read_dict(saved, self._SLOT_STATE, where)
        try:
            slot.iterator._set_state(inner_state)
        except (KeyError, TypeError, ValueError, IndexError) as err:
            slot.iterator.close()
            raise StateMismatchError(f"{where}: {type(err).__name__}: {err}") from err
        return slot


class _InterleaveBase(Dataset):
    """What ``interleave`` and ``flat_map`` share: the function, seeds and cardinality."""

    _iterator_class = _InterleaveIterator
    _keeps_random_access = False

    def __init__(
        self,
        parent: Dataset,
        map_func: Callable[..., Dataset],
        cycle_length: int,
        block_length: int,
        stateful: bool,
    ) -> None:
        super().__init__([parent])
        self._map_func = check_function("map_func", map_func, self._op_name)
        self._cycle_length = cycle_length
        self._block_length = block_length
        self._stateful = check_stateful(stateful, self._op_name)
        self._seed: int | None = None  # set per iterator by _resolve_seeds
        self._slot_threads = 0  # slots read ahead on a thread each (num_parallel_calls)

    def _cardinality(self) -> int:
        # As tf.data: the inner datasets' lengths are known only by iterating them.
        return UNKNOWN_CARDINALITY

    def _external_state(self) -> str | None:
        return "stateful function" if self._stateful else None

    def _draws_seed(self) -> bool:
        # Whether map_func's datasets have seed=None ops is known only once they
        # exist: every iterator draws a seed, from which each inner one is derived.
        return True

    def _set_drawn_seed(self, seed: int) -> None:
        self._seed = seed

    def _inner_entropy(self, epoch: int, index: int) -> int:
        """The seed of the ``seed=None`` ops in the dataset made from input element ``index``."""
        return derived_seed(0 if self._seed is None else self._seed, epoch, index)

    def _inner_dataset(self, element: Any) -> Dataset:
        """``map_func(element)`` (a tuple unpacked), which must be a Dataset."""
        try:
            result = call(self._map_func, element)
        except StopIteration as err:
            raise stop_error(self._op_repr(), self._map_func, err) from err
        if not isinstance(result, Dataset):
            raise TypeError(
                f"{self._op_name}: map_func {describe_callable(self._map_func)} must return a "
                f"pipestate Dataset, got {type(result).__name__} {brief(result, 80)}. Wrap values "
                "with Dataset.from_tensors(...) or Dataset.from_tensor_slices(...)."
            )
        return result


class InterleaveDataset(_InterleaveBase):
    """Maps each input element to a dataset and interleaves their elements, as tf.data.

    ``cycle_length`` inner datasets are open at a time; the output takes
    ``block_length`` consecutive elements from each in turn, and an exhausted
    one is replaced by the dataset of the next input element, in exactly
    tf.data's (sequential, deterministic) order. A plain tuple element is
    unpacked into ``map_func``'s arguments.

    The iterator state holds, per open slot, the index of the input element
    that made it and the inner iterator's state; the element itself is re-read
    by index from a random-access input, or saved otherwise. ``seed=None`` ops
    inside the inner datasets get seeds derived from the iterator's seed and
    the input element's index, so a restored iterator continues identically.

    Args:
      map_func: returns a pipestate ``Dataset`` for an element.
      cycle_length: how many inner datasets are open at a time; ``None`` (or
        ``AUTOTUNE``) means :data:`DEFAULT_CYCLE_LENGTH` (4) on every machine.
      block_length: consecutive elements taken from each inner dataset
        (``None``: 1).
      num_parallel_calls: read the open inner datasets ahead on threads, one
        per slot of the cycle for the first ``num_parallel_calls`` slots
        (``AUTOTUNE``: as many as the cores available, at most
        ``cycle_length``); ``None`` reads them in the consumer's thread. The
        elements, their order and the state are the same either way.
      deterministic: accepted for tf.data's signature; the order is always
        the sequential one (``False`` permits, never requires, reordering),
        so it changes neither the elements nor the fingerprint.
      stateful: ``True`` if ``map_func`` depends on state outside the element.

    Raises:
      TypeError: ``map_func`` is not callable, an argument is not an integer,
        or ``map_func`` returns something other than a Dataset (while iterating).
      ValueError: ``cycle_length`` or ``block_length`` is less than 1, or
        ``num_parallel_calls`` exceeds a fixed ``cycle_length`` (as tf.data).

    Example:
      >>> import pipestate as ps
      >>> ds = ps.Dataset.range(1, 4).interleave(
      ...     lambda x: ps.Dataset.from_tensors(x).repeat(2), cycle_length=2)
      >>> [int(x) for x in ds]
      [1, 2, 1, 2, 3, 3]
    """

    _op_name = "interleave"

    def __init__(
        self,
        parent: Dataset,
        map_func: Callable[..., Dataset],
        cycle_length: int | None = None,
        block_length: int | None = 1,
        num_parallel_calls: int | None = None,
        deterministic: bool | None = None,
        *,
        stateful: bool = False,
    ) -> None:
        if cycle_length is None:
            cycle = DEFAULT_CYCLE_LENGTH
        else:
            cycle = check_int("cycle_length", cycle_length, minimum=-1, op="interleave")
            if cycle == -1:  # AUTOTUNE
                cycle = DEFAULT_CYCLE_LENGTH
            elif cycle == 0:
                raise ValueError(
                    "interleave: cycle_length must be >= 1 (or None / AUTOTUNE for "
                    f"{DEFAULT_CYCLE_LENGTH}), got cycle_length=0"
                )
        block = 1 if block_length is None else block_length
        block = check_int("block_length", block, minimum=1, op="interleave")
        super().__init__(parent, map_func, cycle, block, stateful)
        self._num_parallel_calls = (
            None
            if num_parallel_calls is None
            else check_parallelism(num_parallel_calls, "num_parallel_calls", "interleave")
        )
        self._deterministic = check_bool(
            "deterministic", deterministic, op="interleave", allow_none=True
        )
        if self._num_parallel_calls is not None:
            fixed_cycle = cycle_length is not None and cycle_length != AUTOTUNE
            if (
                fixed_cycle
                and self._num_parallel_calls not in (AUTOTUNE,)
                and (self._num_parallel_calls > cycle)
            ):
                raise ValueError(
                    "interleave: If `cycle_length` is set to a fixed value, `num_parallel_calls` "
                    "must be either `tf.data.AUTOTUNE` or a value less than or equal to "
                    f"`cycle_length`. However, `num_parallel_calls` is {self._num_parallel_calls} "
                    f"and `cycle_length` is {cycle}. Each thread reads one open inner dataset."
                )
            self._slot_threads = min(cycle, resolve_parallelism(self._num_parallel_calls))

    def _params(self) -> dict[str, Any]:
        return {
            "map_func": describe_callable(self._map_func),
            "cycle_length": self._cycle_length,
            "block_length": self._block_length,
        }

    def _op_repr(self) -> str:
        items = [f"{key}={value!r}" for key, value in self._params().items()]
        if self._num_parallel_calls is not None:
            items.append(f"num_parallel_calls={self._num_parallel_calls}")
        if self._deterministic is not None:
            items.append(f"deterministic={self._deterministic}")
        if self._name is not None:
            items.append(f"name={self._name!r}")
        return f"interleave({', '.join(items)})"
