"""Size limits on the checkpoint files pipestate reads whole: indexes, state files, headers.

A file read whole costs memory in proportion to its size, and parsing JSON
several times that, so a damaged or hostile file is refused by its size
before any of it is read. Each limit has a default that fits any real
checkpoint with room to spare, and an environment variable that raises (or
lowers) it, read each time a file is opened::

    PIPESTATE_MAX_INDEX_BYTES=1073741824 python train.py
"""

from __future__ import annotations

import dataclasses
import os

from pipestate.checkpoint._storage import Storage
from pipestate.errors import CheckpointTooLargeError

__all__ = ["HEADER_LIMIT", "INDEX_LIMIT", "STATE_FILE_LIMIT", "SizeLimit", "read_limited"]


@dataclasses.dataclass(frozen=True)
class SizeLimit:
    """An upper bound on the size of one kind of file, overridable by an environment variable.

    Args:
        what: How the files are named in errors, e.g. ``"checkpoint index"``.
        variable: The environment variable that overrides ``default``.
        default: The limit in bytes when the variable is unset.
    """

    what: str
    variable: str
    default: int

    def max_bytes(self) -> int:
        """The limit now: ``$variable`` when set, else ``default``.

        Raises:
            ValueError: When the variable is set to something other than a positive integer.
        """
        raw = os.environ.get(self.variable, "").strip()
        if not raw:
            return self.default
        value = int(raw) if raw.isascii() and raw.isdigit() else 0
        if value <= 0:
            raise ValueError(
                f"{self.variable} must be a positive integer number of bytes, got {raw!r:.60}"
            )
        return value

    def check(self, size: int, where: str) -> None:
        """Refuse ``size`` bytes of what ``where`` names when that is over the limit.

        Raises:
            CheckpointTooLargeError: Naming the size, the limit and how to raise it.
        """
        limit = self.max_bytes()
        if size > limit:
            raise CheckpointTooLargeError(
                f"{where} is {size} bytes, more than the {limit} bytes "
                f"pipestate reads (a limit that bounds memory use; a damaged or hostile file "
                f"can claim any size). If the file is genuine, raise the limit with the "
                f"environment variable {self.variable}, e.g. {self.variable}={_suggest(size)}"
            )


def _suggest(size: int) -> int:
    """A round limit above ``size``: the next power of two."""
    return 1 << max(size, 1).bit_length()


# An index holds about 80 bytes per object and 150 per array: 256 MiB is millions of both.
INDEX_LIMIT = SizeLimit("checkpoint index", "PIPESTATE_MAX_INDEX_BYTES", 256 << 20)
# A state file holds one line per checkpoint kept.
STATE_FILE_LIMIT = SizeLimit("state file", "PIPESTATE_MAX_STATE_FILE_BYTES", 16 << 20)
# The JSON header of a safetensors file (a data shard or a flat name-based file).
HEADER_LIMIT = SizeLimit("safetensors header", "PIPESTATE_MAX_HEADER_BYTES", 100_000_000)


def read_limited(storage: Storage, path: str, limit: SizeLimit) -> bytes:
    """Read the whole file at ``path`` after checking its size against ``limit``.

    The size is taken from the filesystem before anything is read, and at most
    that many bytes are read, so a file claiming a huge size is refused
    without being read and one lying about its size cannot fill memory.

    Raises:
        NotFoundError: When the file does not exist.
        CheckpointTooLargeError: When the file is larger than the limit.
        CorruptCheckpointError: When ``path`` is not a regular file.
    """
    f = storage.open_random_access(path, what=limit.what)
    try:
        size = f.size
        limit.check(size, f"{limit.what} {path!r:.300}")
        data = f.read(0, size)
    finally:
        f.close()
    # A filesystem may return fewer bytes than it claimed; never more than asked.
    return bytes(data[:size])
