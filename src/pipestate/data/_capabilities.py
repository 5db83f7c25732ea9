"""What an op declares about itself, read by the iterators, the engine and the elastic rule.

Each op's dataset class states its capabilities as class attributes (and,
where they depend on its arguments, in ``_background()``); nothing in the
engine tests an op's name or probes for attributes. See
``docs/architecture.md#adding-an-op``.
"""

from __future__ import annotations

import enum
from typing import NamedTuple


class Elastic(enum.Enum):
    """How the position of an elastic ``shard`` below an op maps through the op.

    A random-access pipeline topped by ``shard`` and only ``ONE_TO_ONE`` and
    ``BATCH`` ops saves the job's global count, so its state restores under
    another number of shards (``docs/parallel.md#elastic-shards``).
    """

    BLOCKS = "blocks"
    """The default: the op's output positions are not a fixed multiple of its input's; a
    shard below it does not re-partition."""
    ONE_TO_ONE = "one-to-one"
    """Output element ``i`` is input element ``i`` transformed (map, prefetch)."""
    BATCH = "batch"
    """Output element ``i`` is input elements ``i * batch_size ...`` (batch)."""
    SHARD = "shard"
    """The op is the shard whose position re-partitions."""


class Background(NamedTuple):
    """Background threads an op asks for (``Dataset._background()``), merged over a pipeline."""

    threads: int
    """Threads wanted (>= 1)."""
    buffer: int = 0
    """Elements to keep ready ahead of the consumer (0: let the chunking decide)."""
    autotune: bool = True
    """Whether the thread count may be reduced when more threads are not faster."""
    reorder: bool = False
    """Whether the op's elements may be delivered out of order (``deterministic=False``)."""
