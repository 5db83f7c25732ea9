"""Keyed pseudo-random permutations of ``[0, n)`` in O(1) memory.

A Feistel network over the smallest power-of-two domain that holds ``n`` is a
bijection of that domain (its two halves differ by at most one bit, and swap
widths each round); cycle walking (re-applying it until the value lands below
``n``) restricts it to a bijection of ``[0, n)``. The domain is under
``2 * n``, so fewer than two rounds of walking are expected. Round keys
come from ``numpy.random.SeedSequence`` over ``(seed, epoch)``.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import numpy as np

ROUNDS = 4
_MASK64 = (1 << 64) - 1
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_DOMAIN_TAG = 0x5EED_6C0B  # separates these keys from other users of the same seed
_CHUNK = 16384


@functools.lru_cache(maxsize=64)
def round_keys(seed: int, epoch: int) -> tuple[int, ...]:
    """Round keys for ``(seed, epoch)``; distinct pairs give independent keys."""
    sequence = np.random.SeedSequence(entropy=[seed & _MASK64, epoch], spawn_key=(_DOMAIN_TAG,))
    return tuple(int(k) for k in sequence.generate_state(ROUNDS, np.uint64))


def _mix(x: int) -> int:
    # One multiply-xorshift: the key is added first, so each round is a
    # different function; four rounds make a pseudo-random permutation.
    x = (x * _M1) & _MASK64
    return (((x ^ (x >> 29)) * _M2) & _MASK64) >> 32


def _mix_array(x: np.ndarray) -> np.ndarray:
    x = x * np.uint64(_M1)
    mixed: np.ndarray = ((x ^ (x >> np.uint64(29))) * np.uint64(_M2)) >> np.uint64(32)
    return mixed


class Permutation:
    """A pseudo-random bijection of ``[0, n)`` for one ``(seed, epoch)``."""

    def __init__(self, n: int, seed: int, epoch: int) -> None:
        self.n = n
        bits = max(2, (n - 1).bit_length())
        self._high = bits // 2  # width of the left half; the right one has the rest
        self._low = bits - self._high
        self._keys = round_keys(seed, epoch)
        self._chunks: dict[int, np.ndarray] = {}

    def _encrypt(self, x: int) -> int:
        high, low = self._high, self._low
        left, right = x >> low, x & ((1 << low) - 1)
        for key in self._keys:
            left, right = right, left ^ (_mix((right + key) & _MASK64) & ((1 << high) - 1))
            high, low = low, high
        return (left << low) | right

    def _encrypt_array(self, x: np.ndarray) -> np.ndarray:
        high, low = self._high, self._low
        left, right = x >> np.uint64(low), x & np.uint64((1 << low) - 1)
        for key in self._keys:
            mask = np.uint64((1 << high) - 1)
            left, right = right, left ^ (_mix_array(right + np.uint64(key)) & mask)
            high, low = low, high
        joined: np.ndarray = (left << np.uint64(low)) | right
        return joined

    def __call__(self, position: int) -> int:
        """The image of one position."""
        x = self._encrypt(position)
        while x >= self.n:
            x = self._encrypt(x)
        return x

    def apply(self, positions: np.ndarray) -> np.ndarray:
        """The images of an int64 array of positions, vectorised."""
        x = self._encrypt_array(positions.astype(np.uint64))
        outside = x >= self.n
        while outside.any():
            x[outside] = self._encrypt_array(x[outside])
            outside = x >= self.n
        return x.astype(np.int64)

    def apply_cached(self, positions: np.ndarray) -> np.ndarray:
        """Like :meth:`apply`, computing whole aligned chunks once and reusing them.

        Sequential readers ask for small runs of positions; permuting a chunk of
        16384 at a time amortises the per-call NumPy overhead.
        """
        chunk_ids = positions // _CHUNK
        first = int(chunk_ids[0]) if len(chunk_ids) else 0
        if len(chunk_ids) and first == int(chunk_ids[-1]) and (chunk_ids == first).all():
            picked: np.ndarray = self._chunk(first)[positions - first * _CHUNK]
            return picked
        return self.apply(positions)

    def _chunk(self, chunk_id: int) -> np.ndarray:
        table = self._chunks.get(chunk_id)
        if table is None:
            start = chunk_id * _CHUNK
            table = self.apply(np.arange(start, min(start + _CHUNK, self.n), dtype=np.int64))
            if len(self._chunks) >= 4:
                evict_oldest(self._chunks)
            self._chunks[chunk_id] = table
        return table


def evict_oldest(cache: dict[Any, Any]) -> None:
    """Drops the oldest entry of a small cache; safe when threads share the cache.

    Worker threads (parallel map, prefetch) may evict at the same time: a key
    another thread removed first, or a dict changed while looking, is fine.
    """
    with contextlib.suppress(StopIteration, RuntimeError):
        cache.pop(next(iter(cache)), None)
