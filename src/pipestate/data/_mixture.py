"""The blocked mixture scheme of ``sample_from_datasets``: which input each output comes from.

Outputs are cut into blocks of ``BLOCK`` elements. The number of elements
each input gives to the first ``t`` outputs is an apportionment of ``t`` by
the weights that only grows with ``t`` (a binary tree of Beatty sequences:
at each node ``floor(t * p)`` go left, the rest right, in exact rational
arithmetic), so each input's count is within ``ceil(log2(inputs))`` of
``t * weight`` at every block boundary. A block's counts are the difference
between its two boundaries; its order is those labels shuffled by a
generator keyed by ``(seed, epoch, phase, block)``. An input's elements are
taken in their own order: the one an output reads is the input's count
before the block plus the output's rank among the block's labels of that
input. So where any output comes from is computed from its index alone, in
time independent of the index.

A *phase* is a stretch of outputs with one set of active inputs. A finite
input is found exhausted when it is selected once more than it has elements;
the next phase starts at that output, without it (the weights of the others
renormalise, as in tf.data), and numbers its blocks from 0.

A weight *schedule* (a function of the output count giving the weights) is
read once per block. Its counts go down the same tree, block by block: a
node's count in a block is split by its left subtree's share of that block's
weights (a multiple of ``2**-24``), the left side taking the floor of the
running sum of ``count * share``, so each input stays within
``ceil(log2(inputs))`` elements of its running ideal. The counts before each
block are kept in a table, extended (vectorised over blocks) as blocks are
read; an input's position is their sum, so a fresh process computes the
table up to the block it restores to, once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from pipestate.data._permutation import evict_oldest

BLOCK = 1024
"""Outputs per block: the unit of the label shuffle and of a schedule's weights."""
_TAG = 0x4D1C_5EED  # separates these generators from other users of the same seed
_CACHE = 16
_BITS = 24
_ONE = 1 << _BITS  # a schedule's shares are multiples of 2**-24
_MAX_BLOCKS = 1 << 52  # blocks of 1024: past any output index a state can hold


def check_weights(values: Any, count: int, op: str, what: str = "weights") -> list[float]:
    """``values`` as ``count`` non-negative finite floats with a positive sum.

    Raises:
      TypeError: not a sequence of numbers.
      ValueError: a wrong length, a negative or non-finite weight, or all zero.
    """
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{op}: {what} must be a sequence of {count} numbers, got {type(values).__name__} "
            f"{values!r:.80}"
        ) from err
    if array.shape != (count,):
        raise ValueError(
            f"{op}: {what} must hold one weight per dataset ({count}), got shape "
            f"{list(array.shape)}: {values!r:.80}"
        )
    if not np.isfinite(array).all() or (array < 0).any() or not array.sum() > 0:
        raise ValueError(
            f"{op}: {what} must be finite, non-negative and not all zero, got {values!r:.80}"
        )
    return [float(w) for w in array]


def _tree(lo: int, hi: int) -> list[tuple[int, int, int]]:
    """The internal nodes ``(lo, mid, hi)`` of the binary tree over inputs ``[lo, hi)``,
    each before its children."""
    if hi - lo <= 1:
        return []
    mid = (lo + hi) // 2
    return [(lo, mid, hi), *_tree(lo, mid), *_tree(mid, hi)]


class _Apportion:
    """Counts per input for the first ``t`` outputs, by fixed weights: monotone in ``t``."""

    def __init__(self, weights: Sequence[float], inputs: Sequence[int]) -> None:
        self._inputs = tuple(inputs)
        fractions = [Fraction(weights[i]) for i in inputs]
        self._nodes: list[tuple[int, int, int, int, int]] = []  # (lo, mid, hi, num, den)
        self._build(fractions, 0, len(fractions))

    def _build(self, fractions: list[Fraction], lo: int, hi: int) -> None:
        if hi - lo <= 1:
            return
        mid = (lo + hi) // 2
        p = sum(fractions[lo:mid], Fraction(0)) / sum(fractions[lo:hi], Fraction(0))
        self._nodes.append((lo, mid, hi, p.numerator, p.denominator))
        self._build(fractions, lo, mid)
        self._build(fractions, mid, hi)

    def __call__(self, t: int, size: int) -> np.ndarray:
        """An int64 array of ``size`` counts (zero for inputs not in this apportionment)."""
        local = [0] * len(self._inputs)
        if local:
            local[0] = t
        totals = {(0, len(self._inputs)): t}
        for lo, mid, hi, num, den in self._nodes:
            whole = totals[(lo, hi)]
            left = whole * num // den
            totals[(lo, mid)] = left
            totals[(mid, hi)] = whole - left
        out = np.zeros(size, np.int64)
        for k, i in enumerate(self._inputs):
            out[i] = totals[(k, k + 1)]
        return out


class Mixer:
    """Where each output of a mixture comes from, for one resolved seed.

    ``weights`` is a list of floats or a schedule (a function of the output
    count). ``lengths`` holds each input's cardinality (negative: infinite or
    unknown, never exhausted by count).
    """

    def __init__(
        self,
        weights: list[float] | Callable[[int], Any],
        lengths: Sequence[int],
        seed: int,
        op: str,
    ) -> None:
        self.count = len(lengths)
        self._weights = weights
        self._lengths = list(lengths)
        self._seed = seed & ((1 << 64) - 1)
        self._op = op
        self._apportions: dict[tuple[int, ...], _Apportion] = {}
        self._blocks: dict[
            tuple[int, int, tuple[int, ...], int], tuple[np.ndarray, np.ndarray]
        ] = {}
        # A schedule's table: row k holds the counts before block k (rows [0, size)
        # of a buffer that doubles); each tree node's remainder of its running sum;
        # extended under a lock, since threads (parallel map, prefetch) share them.
        self._table = np.zeros((64, self.count), np.int64)
        self._size = 1
        self._nodes = _tree(0, self.count)
        self._remainders = [0] * len(self._nodes)
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_lock"]  # a Loader's worker processes get a copy without the lock
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def scheduled(self) -> bool:
        return callable(self._weights)

    def first_active(self) -> tuple[int, ...]:
        """The inputs a mixture starts with: those of positive (fixed) weight."""
        if callable(self._weights):
            return tuple(range(self.count))
        return tuple(i for i, w in enumerate(self._weights) if w > 0)

    # ------------------------------------------------------------ counts
    def _apportion(self, active: tuple[int, ...]) -> _Apportion:
        found = self._apportions.get(active)
        if found is None:
            assert not callable(self._weights)
            found = self._apportions[active] = _Apportion(self._weights, active)
        return found

    def _scheduled_weights(self, first: int, stop: int) -> np.ndarray:
        """The schedule's weights for blocks ``[first, stop)``, checked: a ``(blocks, inputs)``
        float64 array."""
        assert callable(self._weights)
        schedule = self._weights
        # Its errors propagate, as a map function's do.
        values = [schedule(k * BLOCK) for k in range(first, stop)]
        try:
            array = np.asarray(values, np.float64)
            valid = (
                array.shape == (stop - first, self.count)
                and bool(np.isfinite(array).all())
                and not (array < 0).any()
                and bool((array.sum(axis=1) > 0).all())
            )
        except (TypeError, ValueError):
            valid = False
        if not valid:  # raises at the first bad one, with check_weights' message
            array = np.asarray(
                [
                    check_weights(value, self.count, self._op, f"weights({k * BLOCK})")
                    for k, value in zip(range(first, stop), values)
                ]
            )
        return array

    def before(self, active: tuple[int, ...], block: int) -> np.ndarray:
        """Counts per input in the phase before its block ``block`` (a fresh array)."""
        if not callable(self._weights):
            return self._apportion(active)(block * BLOCK, self.count)
        if self._size <= block:
            with self._lock:
                if self._size <= block:
                    self._extend(block + 1)
        found: np.ndarray = self._table[block].copy()
        return found

    def _extend(self, size: int) -> None:
        """Extends a schedule's table to ``size`` rows (under the lock).

        Vectorised over the new blocks: down the tree, each node's block count
        ``N`` is split with ``p`` (its left subtree's share of the block's
        weights, in units of ``2**-24``); the left side's running total is the
        floor of the running sum of ``N * p``, so its count per block lies in
        ``[0, N]`` and stays within one element of that sum.
        """
        first, stop = self._size - 1, size - 1  # the blocks whose counts are new
        weights = self._scheduled_weights(first, stop)
        prefix = np.zeros((stop - first, self.count + 1))
        np.cumsum(weights, axis=1, out=prefix[:, 1:])
        counts = {(0, self.count): np.full(stop - first, BLOCK, np.int64)}
        for number, (lo, mid, hi) in enumerate(self._nodes):
            total = prefix[:, hi] - prefix[:, lo]
            share = (prefix[:, mid] - prefix[:, lo]) / np.where(total > 0, total, 1.0)
            p = np.clip(np.round(share * _ONE), 0, _ONE).astype(np.int64)
            whole = counts[(lo, hi)]
            running = self._remainders[number] + np.cumsum(whole * p)
            left_total = running >> _BITS
            left = np.diff(left_total, prepend=0)
            self._remainders[number] = int(running[-1] - (int(left_total[-1]) << _BITS))
            counts[(lo, mid)] = left
            counts[(mid, hi)] = whole - left
        per_block = np.stack([counts[(i, i + 1)] for i in range(self.count)], axis=1)
        rows = self._table[first] + np.cumsum(per_block, axis=0)
        if len(self._table) < size:
            grown = np.zeros((max(size, 2 * len(self._table)), self.count), np.int64)
            grown[: self._size] = self._table[: self._size]
            self._table = grown
        self._table[self._size : size] = rows
        self._size = size

    # ------------------------------------------------------------ blocks
    def block(
        self, epoch: int, phase: int, active: tuple[int, ...], block: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, positions)`` of a block: each output's input, and its position in the
        phase's share of that input. Cached (a few blocks)."""
        key = (epoch, phase, active, block)
        found = self._blocks.get(key)
        if found is not None:
            return found
        start = self.before(active, block)
        counts = self.before(active, block + 1) - start
        labels = np.repeat(np.arange(self.count, dtype=np.int64), counts)
        rng = np.random.default_rng([self._seed, epoch, phase, block, _TAG])
        rng.shuffle(labels)
        order = np.argsort(labels, kind="stable")
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        ranks = np.empty(BLOCK, np.int64)
        ranks[order] = np.arange(BLOCK, dtype=np.int64) - first[labels[order]]
        positions = start[labels] + ranks
        if len(self._blocks) >= _CACHE:
            evict_oldest(self._blocks)
        self._blocks[key] = (labels, positions)
        return labels, positions

    # ------------------------------------------------------------ phases
    def phase_end(
        self, epoch: int, phase: int, active: tuple[int, ...], consumed: np.ndarray
    ) -> tuple[int, int] | None:
        """``(output, input)``: where in the phase (counted from its start) an active finite
        input is first selected past its end, and which; ``None`` if never."""
        best: tuple[int, int] | None = None
        for i in active:
            n = self._lengths[i]
            if n < 0:
                continue
            remaining = n - int(consumed[i])
            # The block holding the (remaining + 1)-th selection of i: counts grow with t.
            high = 1
            while high <= _MAX_BLOCKS and self.before(active, high)[i] <= remaining:
                high *= 2
            if high > _MAX_BLOCKS:
                continue  # a weight so small the input outlasts any int64 output count
            low = high // 2 if high > 1 else 0
            while low < high:  # smallest k with before(k + 1) > remaining
                mid = (low + high) // 2
                if self.before(active, mid + 1)[i] > remaining:
                    high = mid
                else:
                    low = mid + 1
            k = low
            labels, _ = self.block(epoch, phase, active, k)
            nth = remaining - int(self.before(active, k)[i])
            r = int(np.flatnonzero(labels == i)[nth])
            at = k * BLOCK + r
            if best is None or at < best[0]:
                best = (at, i)
        return best

    def consumed_until(
        self, epoch: int, phase: int, active: tuple[int, ...], local: int
    ) -> np.ndarray:
        """Counts per input of the phase's first ``local`` outputs."""
        k, r = divmod(local, BLOCK)
        counts = self.before(active, k)
        if r:
            labels, _ = self.block(epoch, phase, active, k)
            counts += np.bincount(labels[:r], minlength=self.count)
        return counts


def total_length(lengths: Sequence[int], weights: list[float]) -> int:
    """Outputs of a mixture that runs until its positive-weight inputs are exhausted."""
    return sum(n for n, w in zip(lengths, weights) if w > 0)
