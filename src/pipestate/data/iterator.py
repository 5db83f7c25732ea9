"""Iterators: the base class owning the public protocol, and the index iterator."""

from __future__ import annotations

import itertools
import json
import secrets
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Generic, NoReturn, TypeAlias, TypeVar, cast

import numpy as np

from pipestate._validate import brief
from pipestate.data import _structure
from pipestate.data._elastic import elastic_blocker, elastic_shard, reshard_state
from pipestate.data._structure import Element
from pipestate.data.options import ExternalStatePolicy, apply_external_state_policy
from pipestate.errors import StateMismatchError

if TYPE_CHECKING:
    from pipestate.data.dataset import Dataset

D = TypeVar("D", bound="Dataset")
"""The dataset class of a streaming op's iterator (``StreamIterator[MapDataset]``)."""

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

    # A distributed checkpoint keeps each rank's state; on another world size, rank 0's
    # state restores every rank through the elastic rule (or set_state refuses it).
    _pipestate_per_rank = True
    _pipestate_reshards = True

    _STATE_KEYS: ClassVar[tuple[str, ...]] = ()
    # Checkpoints restore the state as NumPy values without asking for the current one.
    _state_dict_is_numpy: ClassVar[bool] = True

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

    def _release(self) -> None:
        """Frees what reading holds (a generator, an open file) while keeping the position.

        Called by an op that will read no more from this input (``take`` at its
        end); a later read would reopen what it needs.
        """

    # ---------------------------------------------------------------- public
    def __iter__(self) -> DatasetIterator:
        return self

    def __next__(self) -> Element:
        if self._closed:
            self._raise_closed()
        return self._next()

    @property
    def dataset(self) -> Dataset:
        """The dataset this iterator walks."""
        return self._dataset

    def get_state(self, *, external_state_policy: ExternalStatePolicy | str | None = None) -> State:
        """The position, as a dict of plain values; O(1) for random-access pipelines.

        Args:
          external_state_policy: what to do if an op of the pipeline has
            external state (``'fail'``, ``'warn'``, ``'ignore'`` or an
            :class:`ExternalStatePolicy`); ``None`` uses the pipeline's
            ``Options``, whose default is ``'fail'``.

        Returns:
          ``{"version": 1, "fingerprint": ..., "ops": [...], "iterator": {...}}``;
          JSON-serialisable unless a buffer of elements had to be saved (then it
          holds NumPy arrays; save it with ``pipestate.Checkpoint``).

        Raises:
          ExternalStateError: the policy is ``'fail'`` and an op has external state.
          ValueError: an invalid ``external_state_policy``.
        """
        self._check_open()
        self._check_external(external_state_policy)
        return self._wrap_state(self._get_state())

    def _check_external(self, external_state_policy: ExternalStatePolicy | str | None) -> None:
        """Applies the external state policy of ``get_state()`` (may raise or warn)."""
        external = self._dataset._external_ops()
        if external or external_state_policy is not None:
            policy = self._policy(external_state_policy)
            apply_external_state_policy(policy, external, repr(self))

    def _wrap_state(self, inner: State) -> State:
        """``get_state()``'s dict around ``inner``, a ``_get_state()`` taken now or earlier.

        A consumer ahead of its caller (``pipestate.jax.device_prefetch``) keeps
        the inner state after each element it hands over and wraps it when asked.
        """
        return {
            _VERSION: STATE_VERSION,
            _FINGERPRINT: self._dataset.fingerprint,
            _OPS: self._dataset._op_list(),
            _ITERATOR: inner,
        }

    def _policy(self, explicit: ExternalStatePolicy | str | None) -> ExternalStatePolicy:
        if explicit is not None:
            return ExternalStatePolicy.coerce(explicit)
        configured = self._dataset.options().external_state_policy
        return (
            ExternalStatePolicy.FAIL
            if configured is None
            else ExternalStatePolicy.coerce(configured)
        )

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
                f"{brief(state, 80)}"
            )
        missing = [key for key in _ENVELOPE_KEYS if key not in state]
        if missing:
            raise StateMismatchError(
                f"Iterator state is missing {missing}; expected the dict returned by "
                f"get_state() with keys {list(_ENVELOPE_KEYS)}, got keys {brief(list(state))}"
            )
        version = state[_VERSION]
        if isinstance(version, bool) or not isinstance(version, int) or version != STATE_VERSION:
            raise StateMismatchError(
                f"Unsupported iterator state version {brief(version, 80)}; this pipestate reads "
                f"version {STATE_VERSION}. Save the state with this pipestate version."
            )
        fingerprint = state[_FINGERPRINT]
        if not isinstance(fingerprint, str):
            raise StateMismatchError(
                f"Iterator state fingerprint must be a str, got {brief(fingerprint, 80)}"
            )
        try:
            self._restore_checked(state)
        except RecursionError as err:
            raise StateMismatchError(
                f"{self._dataset._op_name}: iterator state is nested too deeply to be one "
                f"this pipeline saved ({type(err).__name__})"
            ) from None

    def _restore_checked(self, state: State) -> None:
        """``set_state`` past the envelope checks: resharding, then the ops' own reads."""
        inner = state[_ITERATOR]
        if state[_FINGERPRINT] != self._dataset.fingerprint:
            # A random-access pipeline sharded under another world size re-partitions.
            inner = reshard_state(self._dataset, state[_OPS], inner)
            if inner is None:
                raise StateMismatchError(_describe_mismatch(self._dataset, state[_OPS]))
        if not isinstance(inner, dict):
            raise StateMismatchError(
                f"{self._dataset._op_name}: state['iterator'] must be a dict,"
                f" got {brief(inner, 80)}"
            )
        # A state that fails half-way through a nested restore must not leave
        # the iterator half-restored: put the previous position back.
        backup = self._get_state()
        try:
            self._set_state(inner)
        except BaseException as err:
            self._set_state(backup)
            if isinstance(err, StateMismatchError) or not isinstance(err, _MALFORMED):
                raise
            detail = str(err)
            if len(detail) > 300:
                detail = detail[:297] + "..."
            raise StateMismatchError(
                f"{self._dataset._op_name}: malformed iterator state {brief(inner, 200)}: "
                f"{type(err).__name__}: {detail}"
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

    def _raise_closed(self) -> NoReturn:
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


# What reading a malformed state can raise; each becomes a StateMismatchError.
_MALFORMED = (
    KeyError,
    TypeError,
    ValueError,
    IndexError,
    AttributeError,
    ArithmeticError,
    RecursionError,
)

_INT64_MAX = 2**63 - 1
"""The largest position or count a state may hold: every index is an int64."""

# How an IndexIterator reads its blocks (see IndexIterator.__init__).
_VECTORISED = "vectorised"
_LISTED = "listed"
_SINGLE = "single"


def _describe_mismatch(dataset: Dataset, saved_ops: Any) -> str:
    chain = dataset._op_chain()
    current = dataset._op_list()
    if not isinstance(saved_ops, list) or not all(isinstance(op, str) for op in saved_ops):
        return f"Iterator state has a malformed 'ops' list {brief(saved_ops, 200)}"
    for i, (saved, now) in enumerate(zip(saved_ops, current)):
        if saved != now:
            saved_name, now_repr = saved.split(":")[0], chain[i][2]
            if saved_name != chain[i][0]:
                return (
                    f"Iterator state was saved from a different pipeline: op #{i} (counting "
                    f"from the sources) was '{saved_name}' but this dataset has {now_repr}. "
                    f"Restore into the same pipeline definition: {dataset!r}"
                )
            message = (
                f"Iterator state was saved from a different pipeline: op #{i} '{saved_name}' "
                f"had different settings than this dataset's {now_repr}. Restore with the "
                "settings used when the state was saved."
            )
            if dataset._op_chain()[i][0] == "shard" and saved_name == "shard":
                message += (
                    " A state saved under another number of shards (world size) re-partitions "
                    f"only by the elastic rule, and here it can't: {elastic_blocker(dataset)}. "
                    "See docs/parallel.md#elastic-data-parallelism-re-sharding-on-restore."
                )
            return message
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
        raise StateMismatchError(f"{op}: iterator state has no key {key!r}: {brief(state, 200)}")
    value = state[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise StateMismatchError(f"{op}: state[{key!r}] must be an int, got {brief(value, 80)}")
    if maximum is None or maximum > _INT64_MAX:
        maximum = _INT64_MAX
    if value < minimum or value > maximum:
        raise StateMismatchError(
            f"{op}: state[{key!r}]={brief(value, 40)} is out of range [{minimum}, {maximum}]"
        )
    return value


def read_seed(state: State, op: str, current: int | None) -> int | None:
    """Reads the seed drawn for ``seed=None`` ops: an int where ``current`` is one, else None."""
    seed = state["seed"]
    if (seed is None) != (current is None) or (
        seed is not None
        and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _INT64_MAX)
    ):
        expected = "None" if current is None else "an int in [0, 2**63)"
        raise StateMismatchError(
            f"{op}: state['seed'] must be {expected} here, got {brief(seed, 80)}"
        )
    return seed


def check_keys(state: State, expected: tuple[str, ...], op: str) -> None:
    """Raises StateMismatchError unless ``state`` has exactly the keys ``expected``."""
    if not isinstance(state, dict) or state.keys() != set(expected):
        keys = list(state) if isinstance(state, dict) else state
        raise StateMismatchError(
            f"{op}: iterator state keys {brief(keys, 200)} != expected {sorted(expected)}"
        )


class IndexIterator(DatasetIterator):
    """Iterator over a random-access pipeline; its whole state is one global index.

    Restore is O(1) whatever the position. Pipelines with no per-element Python
    function are read in vectorised blocks; the block is a cache, never saved.
    A pipeline topped by ``shard`` also saves ``"global"``, the number of
    elements before the shard consumed by all shards together, so the state
    restores under another number of shards (see ``docs/parallel.md``).
    """

    _INDEX = "index"
    _SEED = "seed"
    _GLOBAL = "global"
    _STATE_KEYS = (_INDEX, _SEED)
    _BLOCK = 128
    _MAX_LIST_BLOCK = 2048  # elements of a cheap per-element function read in one block

    def __init__(self, dataset: Dataset, entropy: int | None, epoch: int = 0) -> None:
        super().__init__(dataset)
        self._elastic = elastic_shard(dataset)
        self._origin = (0, 0)  # (global count, shard position) at the last restore
        self._keys: tuple[str, ...] = self._STATE_KEYS
        if self._elastic is not None:
            self._keys = (*self._STATE_KEYS, self._GLOBAL)
        self._length = dataset.cardinality()  # >= 0 or INFINITE (-1)
        self._epoch = epoch
        self._entropy = entropy
        self._source = (
            dataset if entropy is None else dataset._resolve_seeds(entropy, itertools.count())
        )
        self._index = 0
        self._block: list[Element] = []
        self._block_start = 0
        self._list_block = 8
        # How blocks are read: one vectorised gather (no per-element Python
        # function), adaptive lists of elements (pure per-element functions,
        # read ahead about a millisecond at a time), or one element at a time
        # (functions with external state are called exactly when their element
        # is consumed).
        if self._source._vectorised:
            self._reading = _VECTORISED
        else:
            self._reading = _SINGLE if self._source._external_ops() else _LISTED

    def _next(self) -> Element:
        index = self._index
        offset = index - self._block_start
        block = self._block
        if not 0 <= offset < len(block):
            block, offset = self._read_ahead()
        self._index = index + 1
        return block[offset]

    def _read_ahead(self) -> tuple[list[Element], int]:
        """The elements read ahead, from the next one on: ``block[offset:]`` of the result.

        Reads a block first when none is left, raising as ``_next`` would
        (``StopIteration`` at the end; a failing element's error, with that
        element consumed). A reader that uses ``k`` of the elements consumes
        them with ``_index += k``; the position stays this iterator's own.
        """
        index = self._index
        offset = index - self._block_start
        if not 0 <= offset < len(self._block):
            if index == self._length:
                raise StopIteration
            self._fill(index)
            offset = 0
        return self._block, offset

    def _fill(self, index: int) -> None:
        """Reads the block of elements that starts at ``index`` (< the length)."""
        reading = self._reading
        if reading is _SINGLE:
            try:
                self._block = [self._source._get(self._epoch, index)]
            except BaseException:
                self._index = index + 1  # a failing element counts as consumed
                self._block = []
                raise
            self._block_start = index
            return
        size = self._BLOCK if reading is _VECTORISED else self._list_block
        stop = index + size
        if self._length >= 0:
            stop = min(stop, self._length)
        positions = np.arange(index, stop, dtype=np.int64)
        if reading is _VECTORISED:
            try:
                batch = self._source._get_batch(np.full_like(positions, self._epoch), positions)
            except Exception:
                pass  # an element fails: read as a list below, which stops before it
            else:
                self._block = _structure.unstack(batch, len(positions))
                self._block_start = index
                return
        started = time.perf_counter()
        try:
            block = self._source._get_list(self._epoch, positions)
        except BaseException:
            # The element at ``index`` failed: it counts as consumed, as in the
            # element-by-element path, and a resumed run fails at it too.
            self._index = index + 1
            self._block = []
            raise
        elapsed = time.perf_counter() - started
        if elapsed < 0.0005 and len(block) == len(positions):
            self._list_block = min(self._list_block * 2, self._MAX_LIST_BLOCK)
        elif elapsed > 0.002:
            self._list_block = max(self._list_block // 2, 1)
        self._block = block
        self._block_start = index

    def _get_state(self) -> State:
        state = {self._INDEX: self._index, self._SEED: self._entropy}
        if self._elastic is not None:
            state[self._GLOBAL] = self._elastic.global_count(self._index, self._origin)
        return state

    def _set_state(self, state: State) -> None:
        op = self._dataset._op_name
        check_keys(state, self._keys, op)
        maximum = None if self._length < 0 else self._length
        index = read_int(state, self._INDEX, op, maximum=maximum)
        seed = read_seed(state, op, self._entropy)
        if self._elastic is not None:
            self._origin = (read_int(state, self._GLOBAL, op), self._elastic.position(index))
        if seed is not None and seed != self._entropy:
            self._source = self._dataset._resolve_seeds(seed, itertools.count())
        self._entropy = seed
        self._index = index
        self._block = []
        self._block_start = 0

    def _close(self) -> None:
        self._block = []


class StreamIterator(DatasetIterator, Generic[D]):
    """Base of the streaming ops' iterators, which read the iterators of their inputs.

    The state is the op's own keys (``_STATE_KEYS``; by default the input's
    state under ``"parent"``, or a list under ``"parents"``) plus ``"seed"``:
    the seed drawn for the pipeline's ``seed=None`` ops, saved by the
    outermost iterator (``None`` in nested ones). Subclasses implement
    ``_next`` and, when they keep more than their inputs' positions,
    ``_start`` (a fresh position), ``_op_state`` and ``_restore``. ``D`` is the
    op's dataset class: ``self._source`` (the dataset with its seeds resolved)
    is typed as one, so an iterator reads its op's settings without casts.
    """

    _PARENT = "parent"
    _PARENTS = "parents"
    _SEED = "seed"
    _STATE_KEYS: ClassVar[tuple[str, ...]] = (_PARENT,)

    def __init__(self, dataset: Dataset, entropy: int | None, epoch: int = 0) -> None:
        super().__init__(dataset)
        self._epoch = epoch
        self._entropy = entropy
        self._source: D = cast(
            D, dataset if entropy is None else dataset._resolve_seeds(entropy, itertools.count())
        )
        self._inputs: list[DatasetIterator] = []
        self._start()

    # --------------------------------------------------------- subclass hooks
    def _start(self) -> None:
        """Sets up a fresh position: by default one open iterator per input."""
        self._inputs = [self._open(i) for i in range(len(self._source._parents))]

    def _op_state(self) -> State:
        """The op's state without the seed (a fresh dict)."""
        if len(self._inputs) == 1 and self._STATE_KEYS == (self._PARENT,):
            return {self._PARENT: self._inputs[0]._get_state()}
        return {self._PARENTS: [it._get_state() for it in self._inputs]}

    def _restore(self, state: State) -> None:
        """Restores the op's state into the fresh position ``_start`` set up."""
        if self._PARENT in state:
            self._inputs[0]._set_state(read_dict(state, self._PARENT, self._op))
            return
        states = state[self._PARENTS]
        if not isinstance(states, list) or len(states) != len(self._inputs):
            raise StateMismatchError(
                f"{self._op}: state['parents'] must be a list of {len(self._inputs)} states, "
                f"got {brief(states, 120)}"
            )
        for it, inner in zip(self._inputs, states):
            it._set_state(inner)

    def _children(self) -> list[DatasetIterator]:
        """The input iterators open now (closed with this one)."""
        return self._inputs

    def _release(self) -> None:
        for child in self._children():
            child._release()

    # ---------------------------------------------------------------- helpers
    @property
    def _op(self) -> str:
        return self._dataset._op_name

    def _open(self, index: int = 0, epoch: int | None = None) -> DatasetIterator:
        """A fresh iterator over input ``index`` (its seeds already resolved)."""
        parent = self._source._parents[index]
        return parent._make_iterator(None, self._epoch if epoch is None else epoch)

    # ------------------------------------------------------------ base parts
    def _get_state(self) -> State:
        state = self._op_state()
        state[self._SEED] = self._entropy
        return state

    def _set_state(self, state: State) -> None:
        check_keys(state, (*self._STATE_KEYS, self._SEED), self._op)
        seed = read_seed(state, self._op, self._entropy)
        if seed is not None and seed != self._entropy:  # read_seed: None only where ours is
            self._entropy = seed
            self._source = cast(D, self._dataset._resolve_seeds(seed, itertools.count()))
        self._close()
        self._start()
        self._restore(state)

    def _close(self) -> None:
        for child in self._children():
            child.close()


class EndingIterator(StreamIterator[D]):
    """A streaming iterator that can end before its input does (``take_while``, ``zip``).

    Its state adds ``"ended"`` to its inputs' states: once ended it reads no
    input, and a restored one does not either. Subclasses implement ``_read``
    and call ``_end()`` where the op ends.
    """

    _ENDED = "ended"

    def _start(self) -> None:
        super()._start()
        self._ended = False

    def _read(self) -> Element:
        """The next element, while the op has not ended."""
        raise NotImplementedError

    def _next(self) -> Element:
        if self._ended:
            raise StopIteration
        return self._read()

    def _end(self) -> NoReturn:
        """Ends the op here, for good."""
        self._ended = True
        raise StopIteration

    def _op_state(self) -> State:
        states = [it._get_state() for it in self._inputs]
        if self._PARENT in self._STATE_KEYS:
            return {self._PARENT: states[0], self._ENDED: self._ended}
        return {self._PARENTS: states, self._ENDED: self._ended}

    def _restore(self, state: State) -> None:
        ended = read_bool(state, self._ENDED, self._op)
        super()._restore({key: value for key, value in state.items() if key != self._ENDED})
        self._ended = ended


class CountingIterator(StreamIterator[D]):
    """A streaming iterator whose own state is one counter (``_COUNT``) beside its input's."""

    _COUNT = "count"
    _STATE_KEYS: ClassVar[tuple[str, ...]] = (_COUNT, StreamIterator._PARENT)

    def _start(self) -> None:
        super()._start()
        self._count = 0

    def _count_limit(self) -> int | None:
        """The largest valid counter, or ``None`` for no limit."""
        return None

    def _op_state(self) -> State:
        return {self._COUNT: self._count, self._PARENT: self._inputs[0]._get_state()}

    def _restore(self, state: State) -> None:
        self._count = read_int(state, self._COUNT, self._op, maximum=self._count_limit())
        super()._restore({self._PARENT: state[self._PARENT]})


_MAX_LIST_ITEMS = 1 << 26
"""The most values a saved list may hold (arrays larger than this are saved as arrays)."""


def state_array(value: Any, what: str) -> np.ndarray:
    """A saved array, or nested lists of plain values read as one, checked before NumPy sees it.

    NumPy walks every item of nested lists: a hostile list that shares itself
    (``x = [x, x]`` sixty times) would take forever, so lists are walked here
    first with a budget of items and a depth limit.

    Raises:
      StateMismatchError: anything but an array or rectangular-looking lists
        of numbers, bools and text within the budget.
    """
    if isinstance(value, np.ndarray):
        return value
    if not isinstance(value, list):
        raise StateMismatchError(f"{what} must be an array or a list, got {brief(value, 80)}")
    budget = _MAX_LIST_ITEMS
    pending: list[tuple[list[Any], int]] = [(value, 1)]
    while pending:
        items, depth = pending.pop()
        budget -= len(items)
        if budget < 0 or depth > 32:
            raise StateMismatchError(f"{what} is nested too deeply or holds too many values")
        for item in items:
            if isinstance(item, list):
                pending.append((item, depth + 1))
            elif not isinstance(item, (int, float, bool, str, bytes, np.generic)):
                raise StateMismatchError(f"{what} holds {brief(item, 80)}, not a plain value")
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as err:
        raise StateMismatchError(f"{what} is not a rectangular list of values: {err}") from None


def read_dict(state: State, key: str, op: str) -> State:
    """Reads a nested state (a dict) strictly, naming the op and key on error."""
    value = state[key]
    if not isinstance(value, dict):
        raise StateMismatchError(f"{op}: state[{key!r}] must be a dict, got {brief(value, 80)}")
    return value


def read_bool(state: State, key: str, op: str) -> bool:
    """Reads a bool from a state strictly."""
    value = state[key]
    if not isinstance(value, bool):
        raise StateMismatchError(f"{op}: state[{key!r}] must be a bool, got {brief(value, 80)}")
    return value


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
        raise StateMismatchError(f"Iterator state JSON must be an object, got {brief(value, 80)}")
    return value
