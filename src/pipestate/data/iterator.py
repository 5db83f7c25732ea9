"""Iterators: the base class owning the public protocol, and the index iterator."""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

import numpy as np

from pipestate.data import _structure
from pipestate.data._structure import Element
from pipestate.errors import StateMismatchError

if TYPE_CHECKING:
    from pipestate.data.dataset import Dataset

State: TypeAlias = dict[str, Any]
"""An iterator state: a dict of JSON-able values."""

STATE_VERSION = 1
"""Version of the iterator-state envelope written by ``get_state()``."""

_VERSION = "version"
_FINGERPRINT = "fingerprint"
_OPS = "ops"
_ITERATOR = "iterator"
_ENVELOPE_KEYS = (_VERSION, _FINGERPRINT, _OPS, _ITERATOR)


def draw_entropy() -> int:
    """A fresh 63-bit seed for ops created with ``seed=None``."""
    return secrets.randbits(63)


class DatasetIterator(Iterator[Element]):
    """Iterator over a :class:`Dataset` that can save and restore its position.

    ``get_state()`` returns a JSON-serialisable dict: a format version, a
    fingerprint of the dataset definition, and the position. ``set_state()``
    accepts such a dict from any iterator of an equal dataset definition, in
    this or another process, and discards the current position entirely.
    ``state_dict()`` / ``load_state_dict()`` are aliases, so an iterator
    follows PyTorch's Stateful protocol.

    Subclasses implement ``_next``, ``_get_state`` and ``_set_state``; this
    class owns the public methods and their checks.
    """

    _STATE_KEYS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, dataset: Dataset) -> None:
        self._dataset = dataset
        self._closed = False

    # -------------------------------------------------------- subclass hooks
    def _next(self) -> Element:
        raise NotImplementedError

    def _get_state(self) -> State:
        raise NotImplementedError

    def _set_state(self, state: State) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        """Releases resources (threads, files); the default holds none."""

    # ---------------------------------------------------------------- public
    def __iter__(self) -> DatasetIterator:
        return self

    def __next__(self) -> Element:
        return self._next()

    @property
    def dataset(self) -> Dataset:
        """The dataset this iterator walks."""
        return self._dataset

    def get_state(self) -> State:
        """The position, as a JSON-serialisable dict; O(1) for random-access pipelines.

        Returns:
          ``{"version": 1, "fingerprint": ..., "ops": [...], "iterator": {...}}``.
        """
        self._check_open()
        return {
            _VERSION: STATE_VERSION,
            _FINGERPRINT: self._dataset.fingerprint,
            _OPS: self._dataset._op_list(),
            _ITERATOR: self._get_state(),
        }

    def set_state(self, state: State) -> None:
        """Restores a position saved by ``get_state()``, discarding the current one.

        Raises:
          StateMismatchError: the state is malformed, of an unknown version, or
            was saved from a different dataset definition (the message names
            the op that differs).
        """
        self._check_open()
        if not isinstance(state, dict):
            raise StateMismatchError(
                f"set_state expects the dict returned by get_state(), got {type(state).__name__} "
                f"{state!r:.80}"
            )
        missing = [key for key in _ENVELOPE_KEYS if key not in state]
        if missing:
            raise StateMismatchError(
                f"Iterator state is missing {missing}; expected the dict returned by "
                f"get_state() with keys {list(_ENVELOPE_KEYS)}, got keys {sorted(state)}"
            )
        if state[_VERSION] != STATE_VERSION:
            raise StateMismatchError(
                f"Unsupported iterator state version {state[_VERSION]!r}; this pipestate reads "
                f"version {STATE_VERSION}. Save the state with this pipestate version."
            )
        if state[_FINGERPRINT] != self._dataset.fingerprint:
            raise StateMismatchError(_describe_mismatch(self._dataset, state[_OPS]))
        inner = state[_ITERATOR]
        if not isinstance(inner, dict):
            raise StateMismatchError(
                f"{self._dataset._op_name}: state['iterator'] must be a dict, got {inner!r:.80}"
            )
        try:
            self._set_state(inner)
        except StateMismatchError:
            raise
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise StateMismatchError(
                f"{self._dataset._op_name}: malformed iterator state {inner!r:.200}: "
                f"{type(err).__name__}: {err}"
            ) from err

    def state_dict(self) -> State:
        """Alias of :meth:`get_state` (PyTorch's Stateful protocol)."""
        return self.get_state()

    def load_state_dict(self, state_dict: State) -> None:
        """Alias of :meth:`set_state` (PyTorch's Stateful protocol)."""
        self.set_state(state_dict)

    def close(self) -> None:
        """Stops background work and releases resources; further use raises ``RuntimeError``."""
        if not self._closed:
            self._closed = True
            self._close()
            self._next = self._raise_closed  # type: ignore[method-assign]

    def _raise_closed(self) -> Element:
        raise RuntimeError(f"{self!r} is closed; create a new iterator with iter(dataset)")

    def _check_open(self) -> None:
        if self._closed:
            self._raise_closed()

    def __enter__(self) -> DatasetIterator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._dataset!r})"


def _describe_mismatch(dataset: Dataset, saved_ops: Any) -> str:
    chain = dataset._op_chain()
    current = dataset._op_list()
    if not isinstance(saved_ops, list) or not all(isinstance(op, str) for op in saved_ops):
        return f"Iterator state has a malformed 'ops' list {saved_ops!r:.200}"
    for i, (saved, now) in enumerate(zip(saved_ops, current)):
        if saved != now:
            saved_name, now_repr = saved.split(":")[0], chain[i][2]
            if saved_name != chain[i][0]:
                return (
                    f"Iterator state was saved from a different pipeline: op #{i} (counting "
                    f"from the sources) was '{saved_name}' but this dataset has {now_repr}. "
                    f"Restore into the same pipeline definition: {dataset!r}"
                )
            return (
                f"Iterator state was saved from a different pipeline: op #{i} '{saved_name}' "
                f"had different settings than this dataset's {now_repr}. Restore with the "
                "settings used when the state was saved."
            )
    return (
        f"Iterator state was saved from a different pipeline: it has {len(saved_ops)} ops "
        f"({', '.join(op.split(':')[0] for op in saved_ops)}) but this dataset has "
        f"{len(current)} ({', '.join(c[0] for c in chain)}): {dataset!r}"
    )


def read_int(
    state: State, key: str, op: str, *, minimum: int = 0, maximum: int | None = None
) -> int:
    """Reads an integer from a state strictly, naming the op and key on error."""
    if key not in state:
        raise StateMismatchError(f"{op}: iterator state has no key {key!r}: {state!r:.200}")
    value = state[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise StateMismatchError(f"{op}: state[{key!r}] must be an int, got {value!r:.80}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"[{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise StateMismatchError(f"{op}: state[{key!r}]={value} is out of range {bound}")
    return value


class IndexIterator(DatasetIterator):
    """Iterator over a random-access pipeline; its whole state is one global index.

    Restore is O(1) whatever the position. Pipelines with no per-element Python
    function are read in vectorised blocks; the block is a cache, never saved.
    """

    _INDEX = "index"
    _SEED = "seed"
    _STATE_KEYS = (_INDEX, _SEED)
    _BLOCK = 128

    def __init__(self, dataset: Dataset, entropy: int | None) -> None:
        super().__init__(dataset)
        self._length = dataset._cardinality()  # >= 0 or INFINITE (-1)
        self._entropy = entropy
        self._source = (
            dataset if entropy is None else dataset._resolve_seeds(entropy, itertools.count())
        )
        self._index = 0
        self._block: list[Element] = []
        self._block_start = 0
        if not self._source._vectorised:
            self._next = self._next_unblocked  # type: ignore[method-assign]

    def _next(self) -> Element:
        index = self._index
        if index == self._length:
            raise StopIteration
        offset = index - self._block_start
        if not 0 <= offset < len(self._block):
            self._fill(index)
            offset = 0
        self._index = index + 1
        return self._block[offset]

    def _next_unblocked(self) -> Element:
        """``_next`` for pipelines with a per-element function: one ``_get`` each."""
        index = self._index
        if index == self._length:
            raise StopIteration
        self._index = index + 1
        return self._source._get(0, index)

    def _fill(self, index: int) -> None:
        stop = index + self._BLOCK
        if self._length >= 0:
            stop = min(stop, self._length)
        positions = np.arange(index, stop, dtype=np.int64)
        batch = self._source._get_batch(np.zeros_like(positions), positions)
        self._block = _structure.unstack(batch, len(positions))
        self._block_start = index

    def _get_state(self) -> State:
        return {self._INDEX: self._index, self._SEED: self._entropy}

    def _set_state(self, state: State) -> None:
        op = self._dataset._op_name
        if set(state) != set(self._STATE_KEYS):
            raise StateMismatchError(
                f"{op}: iterator state keys {sorted(state)} != expected {sorted(self._STATE_KEYS)}"
            )
        maximum = None if self._length < 0 else self._length
        index = read_int(state, self._INDEX, op, maximum=maximum)
        seed = state[self._SEED]
        if (seed is None) != (self._entropy is None) or (
            seed is not None and (isinstance(seed, bool) or not isinstance(seed, int))
        ):
            raise StateMismatchError(
                f"{op}: state['seed'] must be an int or None here, got {seed!r}"
            )
        if seed is not None and seed != self._entropy:
            self._source = self._dataset._resolve_seeds(seed, itertools.count())
        self._entropy = seed
        self._index = index
        self._block = []
        self._block_start = 0

    def _close(self) -> None:
        self._block = []


def state_to_json(state: State) -> str:
    """Serialises a state to JSON text (for files, logs or ``Checkpoint``)."""
    return json.dumps(state, sort_keys=True)


def state_from_json(text: str | bytes) -> State:
    """Parses a state from JSON text written by :func:`state_to_json`."""
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError) as err:
        raise StateMismatchError(f"Iterator state is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise StateMismatchError(f"Iterator state JSON must be an object, got {value!r:.80}")
    return value
