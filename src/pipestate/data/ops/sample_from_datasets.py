"""``Dataset.sample_from_datasets``: a weighted random mixture of datasets, resumable by index."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pipestate._validate import brief, check_bool, check_int
from pipestate.data import _spec, _structure
from pipestate.data._fingerprint import describe_callable
from pipestate.data._mixture import BLOCK, Mixer, check_weights, total_length
from pipestate.data._permutation import evict_oldest
from pipestate.data.dataset import INFINITE_CARDINALITY, UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import StreamIterator, read_bool, read_int
from pipestate.errors import InvalidArgumentError, StateMismatchError

_OP = "sample_from_datasets"
_BLOCK_CACHE_BYTES = 1 << 22  # the largest block of outputs kept for the next read


class _Phase:
    """A stretch of outputs with one set of active inputs (random-access path)."""

    __slots__ = ("active", "end", "offsets", "start")

    def __init__(
        self, start: int, end: int | None, offsets: np.ndarray, active: tuple[int, ...]
    ) -> None:
        self.start = start
        self.end = end  # None: never ends
        self.offsets = offsets  # each input's elements consumed before the phase
        self.active = active


class _SampleIterator(StreamIterator["SampleFromDatasetsDataset"]):
    """Reads the input each output's label names; state: the output count, the phase (its
    number, first output and active inputs), whether the mixture ended, and the inputs' states.

    The labels are the random-access path's, so both paths give the same
    elements; an input is found exhausted when it is selected and has none left.
    """

    _INDEX = "index"
    _PHASE = "phase"
    _PHASE_START = "phase_start"
    _ACTIVE = "active"
    _ENDED = "ended"
    _STATE_KEYS = (_INDEX, _PHASE, _PHASE_START, _ACTIVE, _ENDED, StreamIterator._PARENTS)

    def _start(self) -> None:
        super()._start()
        self._index = 0
        self._phase = 0
        self._phase_start = 0
        self._active = self._source._mixer().first_active()
        self._ended = False

    def _next(self) -> Any:
        if self._ended:
            raise StopIteration
        source = self._source
        mixer = source._mixer()
        epoch = source._epoch_key(self._epoch)
        while True:
            if not self._active:
                self._ended = True
                raise StopIteration
            block, offset = divmod(self._index - self._phase_start, BLOCK)
            labels, _ = mixer.block(epoch, self._phase, self._active, block)
            chosen = int(labels[offset])
            try:
                element = self._inputs[chosen]._next()
            except StopIteration:
                if source._stop or mixer.scheduled:
                    if not source._stop:
                        raise source._ended_under_schedule(chosen) from None
                    self._ended = True
                    raise
                self._active = tuple(i for i in self._active if i != chosen)
                self._phase += 1
                self._phase_start = self._index
                continue
            except Exception:
                self._index += 1  # a failing element counts as consumed, as by index
                raise
            self._index += 1
            return element

    def _op_state(self) -> dict[str, Any]:
        return {
            self._INDEX: self._index,
            self._PHASE: self._phase,
            self._PHASE_START: self._phase_start,
            self._ACTIVE: list(self._active),
            self._ENDED: self._ended,
            self._PARENTS: [it._get_state() for it in self._inputs],
        }

    def _restore(self, state: dict[str, Any]) -> None:
        op = self._op
        index = read_int(state, self._INDEX, op)
        phase = read_int(state, self._PHASE, op, maximum=len(self._inputs))
        phase_start = read_int(state, self._PHASE_START, op, maximum=index)
        active = state[self._ACTIVE]
        allowed = self._source._mixer().first_active()
        if (
            not isinstance(active, list)
            or not all(type(i) is int and i in allowed for i in active)
            or active != sorted(set(active))
        ):
            raise StateMismatchError(
                f"{op}: state['active'] must be a sorted list of distinct inputs among "
                f"{list(allowed)}, got {brief(active, 80)}"
            )
        ended = read_bool(state, self._ENDED, op)
        super()._restore({self._PARENTS: state[self._PARENTS]})
        self._index, self._phase, self._phase_start = index, phase, phase_start
        self._active, self._ended = tuple(active), ended


class SampleFromDatasetsDataset(Dataset):
    """Elements of several datasets, each output drawn from one with the given weights.

    Blocked sampling (``pipestate.data._mixture``): each block of 1024
    outputs takes from each input a count fixed by the weights (within
    ``ceil(log2(len(datasets)))`` elements of ``t * weight`` after any ``t``
    outputs at a block boundary), in an order shuffled per block by
    ``(seed, epoch, block)``; each input's elements are read in their own
    order. Over random-access inputs the mixture is random access and its
    state one index: the input and position of any output are computed from
    its index. A finite input is exhausted when it is selected once more than
    it has elements: it leaves the mixture there and the other weights
    renormalise, or the mixture ends with ``stop_on_empty_dataset``.

    ``weights`` may be a schedule: a function of the output count (read at
    the start of each block) returning the weights, so a curriculum resumes
    exactly. Its inputs must be infinite unless ``stop_on_empty_dataset``.

    Raises:
      TypeError: ``datasets`` is not a non-empty sequence of datasets; their
        elements differ in structure or dtypes; a bad ``weights``, ``seed``
        or flag.
      ValueError: ``weights`` of the wrong length, negative, non-finite or
        all zero; a schedule over finite inputs without
        ``stop_on_empty_dataset``.
    """

    _op_name = _OP
    _iterator_class = _SampleIterator

    def __init__(
        self,
        datasets: Sequence[Dataset],
        weights: Sequence[float] | Callable[[int], Any] | None = None,
        seed: int | None = None,
        stop_on_empty_dataset: bool = False,
        rerandomize_each_iteration: bool | None = None,
    ) -> None:
        datasets = _check_datasets(datasets, _OP)
        super().__init__(datasets)
        count = len(datasets)
        if isinstance(weights, Dataset):
            raise TypeError(
                f"{_OP}: weights as a Dataset is not supported; pass a list of {count} weights, "
                "or a function of the output count returning them (a schedule)"
            )
        self._schedule: Callable[[int], Any] | None = None
        if weights is None:
            self._weights: list[float] = [1.0 / count] * count
        elif callable(weights):
            self._schedule = weights
            self._weights = check_weights(weights(0), count, _OP, "weights(0)")
        else:
            self._weights = check_weights(weights, count, _OP)
        total = sum(self._weights)
        self._weights = [w / total for w in self._weights]
        self._seed = None if seed is None else check_int("seed", seed, op=_OP)
        self._stop = bool(check_bool("stop_on_empty_dataset", stop_on_empty_dataset, op=_OP))
        self._rerandomize = bool(
            check_bool(
                "rerandomize_each_iteration", rerandomize_each_iteration, op=_OP, allow_none=True
            )
        )
        self._spec = _merged_spec(datasets, _OP)
        self._lengths = [parent.cardinality() for parent in datasets]
        if self._schedule is not None and not self._stop:
            finite = [i for i, n in enumerate(self._lengths) if n >= 0]
            if finite:
                raise ValueError(
                    f"{_OP}: a weights schedule needs infinite inputs, but inputs {finite} are "
                    "finite; repeat() them, or pass stop_on_empty_dataset=True"
                )
        self._mixer_cache: Mixer | None = None
        self._phase_cache: dict[int, list[_Phase]] = {}
        # The last whole block of outputs read by a vectorised read: reads of
        # 128 elements (the index iterator's) take ten inputs' gathers once
        # per block of 1024, not per read. A cache, never saved.
        self._block_cache: tuple[tuple[int, int, int], Any] | None = None
        self._vectorised_cache: bool | None = None
        self._small_cache: bool | None = None

    # ------------------------------------------------------------ settings
    def _params(self) -> dict[str, Any]:
        weights: Any = (
            describe_callable(self._schedule)
            if self._schedule is not None
            else [float(w) for w in self._weights]
        )
        return {
            "weights": weights,
            "seed": self._seed,
            "stop_on_empty_dataset": self._stop,
            "rerandomize_each_iteration": self._rerandomize,
        }

    def _element_spec(self) -> Any:
        return self._spec

    def _draws_seed(self) -> bool:
        return self._seed is None

    def _keeps_order(self) -> bool:
        return not self._rerandomize

    def _set_drawn_seed(self, seed: int) -> None:
        self._seed = seed
        self._mixer_cache = None
        self._phase_cache = {}
        self._block_cache = None
        self._cardinality_cache = None  # where a stopping mixture ends depends on the seed

    def _mixer(self) -> Mixer:
        if self._mixer_cache is None:
            if self._seed is None:
                raise RuntimeError(f"{_OP}(seed=None) must be read through an iterator")
            weights: Any = self._schedule if self._schedule is not None else self._weights
            self._mixer_cache = Mixer(weights, self._lengths, self._seed, _OP)
        return self._mixer_cache

    def _epoch_key(self, epoch: int) -> int:
        return epoch if self._rerandomize else 0

    def _ended_under_schedule(self, chosen: int) -> InvalidArgumentError:
        return InvalidArgumentError(
            f"{self._op_repr()}: input {chosen} ended, but a weights schedule needs infinite "
            "inputs; repeat() it, or pass stop_on_empty_dataset=True"
        )

    def _ends_by_seed(self) -> bool:
        """Whether where the mixture ends depends on the drawn order (stop at a finite input)."""
        positive = [
            n for n, w in zip(self._lengths, self._weights) if w > 0 or self._schedule is not None
        ]
        return self._stop and any(n >= 0 for n in positive)

    # ------------------------------------------------------------ random access
    @property
    def _random_access(self) -> bool:
        if not all(parent._random_access for parent in self._parents):
            return False
        if UNKNOWN_CARDINALITY in self._lengths:
            return False
        return not self._end_unknown()

    def _end_unknown(self) -> bool:
        """Whether where a stopping mixture ends can't be known before reading it.

        It depends on the order, which must then be fixed (a seed, the same every
        pass); and under a schedule, on weights to come, so the inputs are read
        (a streaming mixture) to find it.
        """
        if not self._ends_by_seed():
            return False
        return self._seed is None or self._rerandomize or self._schedule is not None

    @property
    def _vectorised(self) -> bool:
        if self._vectorised_cache is None:
            self._vectorised_cache = _spec.fully_defined(self._spec) and all(
                p._vectorised for p in self._parents
            )
        return self._vectorised_cache

    def _with_parents(self, parents: tuple[Dataset, ...]) -> Dataset:
        clone = super()._with_parents(parents)
        assert isinstance(clone, SampleFromDatasetsDataset)
        clone._vectorised_cache = clone._small_cache = None
        clone._block_cache = None
        return clone

    def _cardinality(self) -> int:
        lengths = self._lengths
        if UNKNOWN_CARDINALITY in lengths:
            return UNKNOWN_CARDINALITY
        if self._ends_by_seed():
            if self._end_unknown():
                return UNKNOWN_CARDINALITY
            end = self._phases(0)[-1].end
            return INFINITE_CARDINALITY if end is None else end
        if any(n < 0 for n, w in zip(lengths, self._weights) if w > 0) or self._schedule:
            return INFINITE_CARDINALITY
        return total_length(lengths, self._weights)

    def _phases(self, epoch: int) -> list[_Phase]:
        """The phases of pass ``epoch`` (its key), computed once (at most one per input)."""
        found = self._phase_cache.get(epoch)
        if found is not None:
            return found
        mixer = self._mixer()
        phases: list[_Phase] = []
        start, offsets, active = 0, np.zeros(len(self._parents), np.int64), mixer.first_active()
        while True:
            number = len(phases)
            end = mixer.phase_end(epoch, number, active, offsets)
            if end is None:
                phases.append(_Phase(start, None, offsets, active))
                break
            local, exhausted = end
            phases.append(_Phase(start, start + local, offsets, active))
            offsets = offsets + mixer.consumed_until(epoch, number, active, local)
            start += local
            active = tuple(i for i in active if i != exhausted)
            if self._stop or not active:
                break
        if len(self._phase_cache) >= 8:
            evict_oldest(self._phase_cache)
        self._phase_cache[epoch] = phases
        return phases

    def _locate(self, epoch: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each output's input and that input's position (int64 arrays)."""
        key = self._epoch_key(epoch)
        phases = self._phases(key)
        mixer = self._mixer()
        if len(positions) and len(phases) == 1:
            first, last = int(positions[0]) // BLOCK, int(positions[-1]) // BLOCK
            if first == last:  # the common case: one block of one phase
                phase = phases[0]
                labels, within = mixer.block(key, 0, phase.active, first)
                offsets = positions - first * BLOCK
                chosen = labels[offsets]
                return chosen, phase.offsets[chosen] + within[offsets]
        inputs = np.empty(len(positions), np.int64)
        inner = np.empty(len(positions), np.int64)
        starts = np.array([phase.start for phase in phases], np.int64)
        which = np.searchsorted(starts, positions, side="right") - 1
        for number in np.unique(which):
            phase = phases[int(number)]
            in_phase = which == number
            local = positions[in_phase] - phase.start
            blocks, offsets = np.divmod(local, BLOCK)
            chosen = np.empty(len(local), np.int64)
            at = np.empty(len(local), np.int64)
            for block in np.unique(blocks):
                in_block = blocks == block
                labels, within = mixer.block(key, int(number), phase.active, int(block))
                chosen[in_block] = labels[offsets[in_block]]
                at[in_block] = within[offsets[in_block]]
            inputs[in_phase] = chosen
            inner[in_phase] = phase.offsets[chosen] + at
        return inputs, inner

    def _get(self, epoch: int, position: int) -> Any:
        chosen, inner = self._locate(epoch, np.array([position], np.int64))
        return self._parents[int(chosen[0])]._get(epoch, int(inner[0]))

    def _get_batch(self, epochs: np.ndarray, positions: np.ndarray) -> Any:
        if len(positions) and self._vectorised and self._small_elements():
            block = self._cached_block(epochs, positions)
            if block is not None:
                return block
        return self._read_batch(epochs, positions)

    def _small_elements(self) -> bool:
        """Whether a block of elements is small enough to keep (known from the element spec)."""
        if self._small_cache is None:
            leaves = _structure.flatten(self._spec)
            sizes = [
                math.prod(leaf.shape) * leaf.dtype.itemsize  # type: ignore[arg-type]
                for leaf in leaves
                if isinstance(leaf, _spec.TensorSpec) and _spec.fully_defined(leaf)
            ]
            known = len(sizes) == len(leaves) and all(sizes)
            self._small_cache = known and BLOCK * sum(sizes) <= _BLOCK_CACHE_BYTES
        return self._small_cache

    def _cached_block(self, epochs: np.ndarray, positions: np.ndarray) -> Any:
        """``positions`` read from the whole block of outputs they fall in (kept for the next
        read), or ``None`` where they are not in one block of a pipeline with one phase."""
        epoch, first = int(epochs[0]), int(positions[0]) // BLOCK
        phases = self._phases(self._epoch_key(epoch))
        if len(phases) != 1 or int(positions[-1]) // BLOCK != first or not (epochs == epoch).all():
            return None
        key = (self._epoch_key(epoch), epoch, first)
        cached = self._block_cache
        if cached is None or cached[0] != key:
            stop = (first + 1) * BLOCK
            end = phases[0].end  # the mixture's end, if it stops within this block
            whole = np.arange(
                first * BLOCK, stop if end is None else min(stop, end), dtype=np.int64
            )
            batch = self._read_batch(np.full_like(whole, epoch), whole)
            cached = self._block_cache = (key, batch)
        offsets = positions - first * BLOCK
        return _structure.map_structure(lambda leaf: leaf[offsets], cached[1])

    def _read_batch(self, epochs: np.ndarray, positions: np.ndarray) -> Any:
        if len(epochs) and (epochs == epochs[0]).all():
            chosen, inner = self._locate(int(epochs[0]), positions)
        else:
            chosen = np.empty(len(positions), np.int64)
            inner = np.empty(len(positions), np.int64)
            for epoch in np.unique(epochs):
                mask = epochs == epoch
                chosen[mask], inner[mask] = self._locate(int(epoch), positions[mask])
        # Grouped by input (a stable sort keeps each input's positions in order):
        # one read per input, then the outputs put back in place at once.
        order = np.argsort(chosen, kind="stable")
        counts = np.bincount(chosen, minlength=len(self._parents))
        used = np.flatnonzero(counts)
        if len(used) == 1:
            return self._parents[int(used[0])]._get_batch(epochs, inner)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        parts = []
        for i in used:
            where = order[bounds[i] : bounds[i + 1]]
            parts.append(self._parents[int(i)]._get_batch(epochs[where], inner[where]))
        return _gather(parts, order, self)

    def _get_list(self, epoch: int, positions: np.ndarray) -> list[Any]:
        chosen, inner = self._locate(epoch, positions)
        out: list[Any] = [None] * len(positions)
        cut = len(positions)
        for i in np.unique(chosen):
            where = np.flatnonzero(chosen == i)
            got = self._parents[int(i)]._get_list(epoch, inner[where])
            if len(got) < len(where):  # the input's element after these raised
                cut = min(cut, int(where[len(got)]))
            for k, element in zip(where, got):
                out[k] = element
        if cut == 0:
            return [self._get(epoch, int(positions[0]))]  # raises the first element's error
        return out[:cut]


def _check_datasets(datasets: Any, op: str) -> list[Dataset]:
    """A non-empty list of datasets."""
    if isinstance(datasets, Dataset) or not isinstance(datasets, (list, tuple)):
        raise TypeError(
            f"{op}: datasets must be a non-empty list of Datasets, got "
            f"{type(datasets).__name__} {brief(datasets, 80)}"
        )
    if not datasets:
        raise ValueError(f"{op}: datasets must not be empty; pass at least one Dataset")
    bad = [i for i, ds in enumerate(datasets) if not isinstance(ds, Dataset)]
    if bad:
        raise TypeError(
            f"{op}: datasets[{bad[0]}] must be a Dataset, got "
            f"{type(datasets[bad[0]]).__name__} {brief(datasets[bad[0]], 80)}"
        )
    return list(datasets)


def _merged_spec(datasets: Sequence[Dataset], op: str) -> Any:
    """The element spec of outputs drawn from any of ``datasets`` (TypeError if incompatible)."""
    spec = datasets[0]._element_spec()
    for parent in datasets[1:]:
        spec = _spec.merge_specs(spec, parent._element_spec(), op)
    return spec


def _gather(parts: list[Any], order: np.ndarray, what: Dataset) -> Any:
    """Batches of several inputs, for the outputs ``order`` lists input by input, put in
    output order."""
    first = parts[0]
    for batch in parts[1:]:
        try:
            _structure.assert_same_structure(first, batch, what._op_name)
        except TypeError as err:
            raise InvalidArgumentError(str(err)) from None
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))

    def merge(*leaves: np.ndarray) -> np.ndarray:
        shape, dtype = leaves[0].shape[1:], leaves[0].dtype
        for leaf in leaves[1:]:
            if leaf.shape[1:] != shape or (
                leaf.dtype != dtype and not (leaf.dtype.kind == dtype.kind == "S")
            ):
                raise InvalidArgumentError(
                    f"{what._op_repr()}: cannot batch elements of the inputs together: "
                    f"{leaves[0].dtype}{list(shape)} vs {leaf.dtype}{list(leaf.shape[1:])}. "
                    "Use padded_batch, or make the shapes the same before batching."
                )
        merged: np.ndarray = np.concatenate(leaves)[inverse]
        return merged

    return _structure.map_structure(merge, *parts)
