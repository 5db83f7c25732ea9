"""Names of checkpoint files, and the paths a state file stores: local paths and URLs.

A checkpoint ``<prefix>`` is ``<prefix>.index`` plus data shards
``<prefix>.data-00000-of-0000N``. A directory's state file (``checkpoint``
unless named otherwise) stores the paths of checkpoints inside the directory
relative to it, and gives them back joined to the directory as the caller
spelled it (``runs/x`` gives ``runs/x/ckpt-3``; ``s3://b/run`` gives
``s3://b/run/ckpt-3``).

Whether a path is a URL is decided here only, the way fsspec decides it.
"""

from __future__ import annotations

import os
import posixpath
import re
import uuid

from fsspec.core import split_protocol

__all__ = [
    "ASIDE_SUFFIX",
    "SHARD_SUFFIX",
    "STATE_FILENAME",
    "aside_name",
    "index_path",
    "is_inside",
    "is_url",
    "relative_checkpoint_path",
    "resolve_checkpoint_path",
    "shard_name",
    "state_filename",
]

STATE_FILENAME = "checkpoint"
# The end of a data shard's file name; groups: the shard's number and the shard count.
SHARD_SUFFIX = r"\.data-([0-9]{5})-of-([0-9]{5})"
# A checkpoint saved again under a number that exists is first written aside, as
# ``<checkpoint_name>-<n>.replace-<8 hex>``, so that the old one stays valid until the switch.
ASIDE_SUFFIX = r"\.replace-[0-9a-f]{8}"
# The protocols of fsspec's local filesystem: ``file:///tmp/x`` is the local path ``/tmp/x``.
_LOCAL_PROTOCOLS = frozenset({"file", "local"})
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def index_path(prefix: str) -> str:
    """The index file of a checkpoint prefix."""
    return prefix + ".index"


def shard_name(basename: str, shard: int, num_shards: int) -> str:
    """The file name of one data shard of the checkpoint ``basename``."""
    return f"{basename}.data-{shard:05d}-of-{num_shards:05d}"


def aside_name(basename: str) -> str:
    """A new name to write the checkpoint ``basename`` aside under (see ``ASIDE_SUFFIX``)."""
    return f"{basename}.replace-{uuid.uuid4().hex[:8]}"


def state_filename(latest_filename: object) -> str:
    """The state file's name: ``latest_filename``, or ``"checkpoint"`` for ``None``.

    Raises:
        TypeError, ValueError: When it is not a plain file name.
    """
    if latest_filename is None:
        return STATE_FILENAME
    if not isinstance(latest_filename, str):
        raise TypeError(
            f"latest_filename must be a str or None, got {latest_filename!r} of type "
            f"{type(latest_filename).__name__}"
        )
    if (
        not latest_filename
        or latest_filename in (".", "..")
        or any(c in latest_filename for c in "/\\\0")
    ):
        raise ValueError(
            "latest_filename must be a plain file name inside the directory (no '/', '\\\\' or "
            f"NUL, not '.' or '..'), got {latest_filename!r}; e.g. 'checkpoint_input'"
        )
    return latest_filename


def _split(path: str) -> tuple[str | None, str]:
    """``(protocol, rest)`` of ``protocol://rest`` as fsspec splits it; ``(None, path)`` otherwise.

    A Windows drive (``C:\\x``) has no protocol, and neither has a name such as
    ``data:x``: fsspec would read it as inline bytes, never a place to save to.
    """
    protocol, rest = split_protocol(path)
    if protocol is None or not path.startswith(f"{protocol}://"):
        return None, path
    return protocol, rest


def _local(path: str) -> str:
    """``path`` without a ``file://`` or ``local://`` protocol."""
    protocol, rest = _split(path)
    return rest if protocol in _LOCAL_PROTOCOLS else path


def is_url(path: str) -> bool:
    """Whether ``path`` is a URL of a filesystem other than the local one (``s3://b/x``)."""
    protocol, _ = _split(path)
    return protocol is not None and protocol not in _LOCAL_PROTOCOLS


def relative_checkpoint_path(directory: str, path: str) -> str:
    """``path`` as stored in ``directory``'s state file.

    Relative to ``directory`` when it lies inside (so the directory can be
    moved or mounted elsewhere); otherwise absolute, or the whole URL.
    """
    if is_url(directory) or is_url(path):
        base = directory.rstrip("/") + "/"
        return path[len(base) :] if path.startswith(base) and len(path) > len(base) else path
    full, base = os.path.abspath(_local(path)), os.path.abspath(_local(directory))
    if full.startswith(os.path.join(base, "")):
        return os.path.relpath(full, base)
    return full


def resolve_checkpoint_path(directory: str, path: str) -> str:
    """Make a path read from a state file usable (a relative one is joined to ``directory``).

    The inverse of :func:`relative_checkpoint_path`.
    """
    if _split(path)[0] is not None or path.startswith("/") or _WINDOWS_DRIVE.match(path):
        return path
    if _split(directory)[0] is not None:
        return f"{directory.rstrip('/')}/{path}"
    return os.path.join(directory, path)


def is_inside(directory: str, path: str) -> bool:
    """Whether the checkpoint ``path`` lies inside ``directory`` (``..`` and symlinks resolved)."""
    if is_url(directory) or is_url(path):
        protocol, rest = _split(directory)
        path_protocol, path_rest = _split(path)
        if path_protocol != protocol:
            return False
        base = posixpath.normpath("/" + rest)
        target = posixpath.normpath("/" + path_rest)
        return target.startswith(base.rstrip("/") + "/") and target != base
    base = os.path.realpath(_local(directory))
    parent, name = os.path.split(os.path.abspath(_local(path)))
    if name in ("", ".", ".."):
        return False
    target = os.path.join(os.path.realpath(parent), name)
    return target.startswith(os.path.join(base, ""))
