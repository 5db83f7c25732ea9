"""Typed errors raised by pipestate.

Every error pipestate raises on purpose derives from :class:`PipestateError`,
and also from the builtin exception a caller would naturally catch
(``ValueError`` for bad state or arguments, ``FileNotFoundError`` for a
missing checkpoint, ``OSError`` for storage failures).
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CheckpointKeyError",
    "CheckpointLockedError",
    "CheckpointMismatchError",
    "CheckpointTooLargeError",
    "CheckpointWriteError",
    "CorruptCheckpointError",
    "DataLossError",
    "DistributedSaveError",
    "ExternalStateError",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "NotFoundError",
    "PipestateError",
    "StateMismatchError",
    "StorageError",
    "StorageTimeoutError",
    "UnavailableError",
]


class PipestateError(Exception):
    """Base class of every error pipestate raises on purpose."""


class StateMismatchError(PipestateError, ValueError):
    """An iterator state does not fit the dataset it is restored into.

    Raised when the state's format version is unknown, when the fingerprint of
    the dataset definition differs (the message names the op that differs), or
    when a key or value of the state is missing or malformed.
    """


class ExternalStateError(PipestateError, ValueError):
    """A pipeline depends on state pipestate cannot save, and the policy is ``fail``."""


class CheckpointError(PipestateError):
    """Base class of errors about checkpoint files."""


class CorruptCheckpointError(CheckpointError, ValueError):
    """A checkpoint file is damaged, truncated, hostile or not a pipestate checkpoint."""


class CheckpointTooLargeError(CorruptCheckpointError):
    """A checkpoint file is larger than pipestate reads (a limit that bounds memory use).

    The message names the file, its size, the limit and the environment
    variable that raises the limit (e.g. ``PIPESTATE_MAX_INDEX_BYTES``).
    """


class NotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint (or one of its files) does not exist."""


class CheckpointMismatchError(CheckpointError, ValueError):
    """A saved value does not fit the object it is restored into (dtype, shape or kind)."""


class CheckpointWriteError(CheckpointError, OSError):
    """A checkpoint could not be written: the storage is full, read-only or failing.

    ``errno`` is that of the underlying error (``ENOSPC`` for a full disk,
    ``EFBIG`` for a file-size limit). The checkpoint being written does not
    exist afterwards; earlier checkpoints and the state file are untouched.
    """


class DistributedSaveError(CheckpointWriteError):
    """A save made by every rank of a distributed job failed; no rank committed it.

    Raised on every rank that takes part. ``missing_ranks`` lists the ranks
    that did not arrive within the timeout, ``failed_ranks`` those that
    reported an error; the message names both, and what each failing rank
    reported. The previous checkpoint stays the latest.
    """

    def __init__(
        self,
        message: str,
        *,
        missing_ranks: tuple[int, ...] = (),
        failed_ranks: tuple[int, ...] = (),
    ) -> None:
        super().__init__(message)
        self.missing_ranks = missing_ranks
        self.failed_ranks = failed_ranks

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class StorageError(CheckpointError, OSError):
    """The storage failed with an error that is not an ``OSError`` of its own.

    fsspec filesystems raise their client's exceptions (botocore's
    ``EndpointConnectionError`` from s3fs, for one); pipestate raises this
    instead, naming the operation and the path, with the original error as
    ``__cause__``.
    """


class StorageTimeoutError(StorageError, TimeoutError):
    """A storage operation did not finish within the ``timeout`` it was given.

    The operation may still complete later; the message says what that means
    for the checkpoint being saved.
    """


class CheckpointLockedError(CheckpointError, BlockingIOError):
    """Another process is saving into the same directory (it holds the writer lock).

    The message names the holder (host, pid, owner id) and how old its lease is.
    """


class CheckpointKeyError(CheckpointError, KeyError):
    """A name asked of a checkpoint (a variable, a value) is not in it."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DataLossError(PipestateError, ValueError):
    """Input data is damaged or truncated (as ``tf.errors.DataLossError``).

    Raised while reading a record file whose framing or checksums are wrong,
    or a compressed file that can't be decompressed; the message names the
    file and the byte offset of the damaged record.
    """


class InvalidArgumentError(PipestateError, ValueError):
    """Elements can't be combined as an op asks (as ``tf.errors.InvalidArgumentError``).

    Raised while iterating when ``batch`` (or another op that stacks elements)
    meets elements whose structures, dtypes or shapes differ; the message names
    the op, the element and the component that differ, and what to do instead
    (``padded_batch`` for shapes, a ``map`` that makes the structures agree).
    """


class FailedPreconditionError(PipestateError, ValueError):
    """The data breaks a condition the pipeline asserts (as ``tf.errors.FailedPreconditionError``).

    Raised while iterating by ``assert_cardinality`` when the input ends before
    or runs past the number of elements it was declared to have; the message
    names the op and both counts.
    """


class UnavailableError(PipestateError, OSError):
    """Reading input data kept failing with transient errors (as ``tf.errors.UnavailableError``).

    Raised by the file sources after the last of the attempts their
    ``ReadOptions`` allow for a request that failed with a connection error,
    a timeout or a server-side (5xx, throttling) error; the message names the
    URL, the byte range and the number of attempts, and the last error is the
    ``__cause__``. Errors that retrying can't fix (a missing file, a denied
    permission) are never retried.
    """
