"""Keyed pseudo-random permutations of ``[0, n)`` in O(1) memory.

A balanced Feistel network over the smallest even-bit domain that holds ``n``
is a bijection of that domain; cycle walking (re-applying it until the value
lands below ``n``) restricts it to a bijection of ``[0, n)``. The domain is
under ``4 * n``, so fewer than four rounds of walking are expected. Round keys
come from ``numpy.random.SeedSequence`` over ``(seed, epoch)``.
"""

from __future__ import annotations

import functools

import numpy as np

ROUNDS = 6
_MASK64 = (1 << 64) - 1
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_DOMAIN_TAG = 0x5EED_6C0B  # separates these keys from other users of the same seed
_CHUNK = 4096


@functools.lru_cache(maxsize=64)
def round_keys(seed: int, epoch: int) -> tuple[int, ...]:
    """Round keys for ``(seed, epoch)``; distinct pairs give independent keys."""
    sequence = np.random.SeedSequence(entropy=[seed & _MASK64, epoch], spawn_key=(_DOMAIN_TAG,))
    return tuple(int(k) for k in sequence.generate_state(ROUNDS, np.uint64))


def _mix(x: int) -> int:
    x = ((x ^ (x >> 30)) * _M1) & _MASK64
    x = ((x ^ (x >> 27)) * _M2) & _MASK64
    return x ^ (x >> 31)


def _mix_array(x: np.ndarray) -> np.ndarray:
    x = (x ^ (x >> np.uint64(30))) * np.uint64(_M1)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(_M2)
    return x ^ (x >> np.uint64(31))


class Permutation:
    """A pseudo-random bijection of ``[0, n)`` for one ``(seed, epoch)``."""

    def __init__(self, n: int, seed: int, epoch: int) -> None:
        self.n = n
        bits = max(2, (n - 1).bit_length())
        bits += bits % 2
        self._half = bits // 2
        self._mask = (1 << self._half) - 1
        self._keys = round_keys(seed, epoch)
        self._chunks: dict[int, np.ndarray] = {}

    def _encrypt(self, x: int) -> int:
        half, mask = self._half, self._mask
        left, right = x >> half, x & mask
        for key in self._keys:
            left, right = right, left ^ (_mix(right ^ key) & mask)
        return (left << half) | right

    def _encrypt_array(self, x: np.ndarray) -> np.ndarray:
        half, mask = np.uint64(self._half), np.uint64(self._mask)
        left, right = x >> half, x & mask
        for key in self._keys:
            left, right = right, left ^ (_mix_array(right ^ np.uint64(key)) & mask)
        return (left << half) | right

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
        4096 at a time amortises the per-call NumPy overhead.
        """
        chunk_ids = positions // _CHUNK
        first = int(chunk_ids[0]) if len(chunk_ids) else 0
        if len(chunk_ids) and first == int(chunk_ids[-1]) and (chunk_ids == first).all():
            return self._chunk(first)[positions - first * _CHUNK]
        return self.apply(positions)

    def _chunk(self, chunk_id: int) -> np.ndarray:
        table = self._chunks.get(chunk_id)
        if table is None:
            start = chunk_id * _CHUNK
            table = self.apply(np.arange(start, min(start + _CHUNK, self.n), dtype=np.int64))
            if len(self._chunks) >= 4:
                self._chunks.pop(next(iter(self._chunks)))
            self._chunks[chunk_id] = table
        return table
