"""The ``checkpoint`` state file: which checkpoints a directory holds, newest last.

The format is TensorFlow's text format for ``CheckpointState``::

    model_checkpoint_path: "ckpt-3"
    all_model_checkpoint_paths: "ckpt-2"
    all_model_checkpoint_paths: "ckpt-3"
    all_model_checkpoint_timestamps: 1700000000.5
    all_model_checkpoint_timestamps: 1700000100.25
    last_preserved_timestamp: 1699999000.0

Paths are stored relative to the directory holding the file when they lie in
it; absolute paths and URLs are kept as given.
"""

from __future__ import annotations

import dataclasses
import math
import re

from pipestate.checkpoint._limits import STATE_FILE_LIMIT, read_limited
from pipestate.checkpoint._paths import STATE_FILENAME
from pipestate.checkpoint._storage import Storage, as_path
from pipestate.errors import CorruptCheckpointError, NotFoundError

__all__ = [
    "CheckpointState",
    "format_state",
    "parse_state",
    "read_state",
    "read_state_file",
    "write_state",
    "write_state_file",
]

# Applied to stripped lines: no pattern here can backtrack, so parsing is linear in the text.
_FIELD = re.compile(r"([a-z_]+)\s*:")
_ESCAPE = re.compile(r"\\([0-7]{1,3}|.?)", re.DOTALL)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "'": "'", "\\": "\\"}


@dataclasses.dataclass
class CheckpointState:
    """The contents of a ``checkpoint`` state file.

    Attributes:
        model_checkpoint_path: The newest checkpoint prefix.
        all_model_checkpoint_paths: Prefixes of the checkpoints kept, oldest first.
        all_model_checkpoint_timestamps: Save times (seconds since the epoch) of
            those checkpoints; empty or as long as ``all_model_checkpoint_paths``.
        last_preserved_timestamp: When the last checkpoint kept for good was saved.
    """

    model_checkpoint_path: str
    all_model_checkpoint_paths: list[str] = dataclasses.field(default_factory=list)
    all_model_checkpoint_timestamps: list[float] = dataclasses.field(default_factory=list)
    last_preserved_timestamp: float | None = None


def _quote(text: str) -> str:
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _unquote(token: str, line_no: int, source: str) -> str:
    if len(token) < 2 or token[0] != '"' or token[-1] != '"':
        raise CorruptCheckpointError(
            f"{source}, line {line_no}: expected a double-quoted string, got {token!r:.200}"
        )
    # One pass of a regular expression and one join: linear in the length of the string.
    # split() alternates literal text and the captured escape: text, escape, text, ...
    pieces = _ESCAPE.split(token[1:-1])
    out: list[bytes] = []
    for i, piece in enumerate(pieces):
        if i % 2 == 0:
            if '"' in piece:
                raise CorruptCheckpointError(
                    f"{source}, line {line_no}: unescaped quote inside {token!r:.200}"
                )
            out.append(piece.encode("utf-8", "surrogatepass"))
        elif piece in _ESCAPES:
            out.append(_ESCAPES[piece].encode("ascii"))
        elif "0" <= piece[:1] <= "7" and int(piece, 8) <= 0o377:
            # An octal escape is one byte of the UTF-8 text, as TensorFlow writes them.
            out.append(bytes((int(piece, 8),)))
        else:
            sequence = "\\" + piece
            raise CorruptCheckpointError(
                f"{source}, line {line_no}: unknown escape sequence {sequence!r} in {token!r:.200}"
            )
    try:
        return b"".join(out).decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptCheckpointError(
            f"{source}, line {line_no}: octal escapes in {token!r:.200} are not UTF-8"
        ) from None


def _number(token: str, line_no: int, source: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise CorruptCheckpointError(
            f"{source}, line {line_no}: expected a number, got {token!r:.100}"
        ) from None
    if not math.isfinite(value):
        raise CorruptCheckpointError(
            f"{source}, line {line_no}: expected a finite number, got {token!r:.100}"
        )
    return value


def parse_state(text: str, *, source: str = "checkpoint state file") -> CheckpointState:
    """Parse the text of a state file strictly.

    Raises:
        CorruptCheckpointError: On an unknown field, a malformed value, a
            missing ``model_checkpoint_path`` or timestamps that do not pair up
            with the paths.
    """
    model_path: str | None = None
    paths: list[str] = []
    stamps: list[float] = []
    preserved: float | None = None
    for line_no, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        match = _FIELD.match(line)
        if match is None:
            raise CorruptCheckpointError(f"{source}, line {line_no}: cannot parse {line!r:.200}")
        key, token = match.group(1), line[match.end() :].lstrip()
        if key == "model_checkpoint_path":
            if model_path is not None:
                raise CorruptCheckpointError(
                    f"{source}, line {line_no}: model_checkpoint_path given twice"
                )
            model_path = _unquote(token, line_no, source)
        elif key == "all_model_checkpoint_paths":
            paths.append(_unquote(token, line_no, source))
        elif key == "all_model_checkpoint_timestamps":
            stamps.append(_number(token, line_no, source))
        elif key == "last_preserved_timestamp":
            preserved = _number(token, line_no, source)
        else:
            raise CorruptCheckpointError(f"{source}, line {line_no}: unknown field {key!r:.100}")
    if model_path is None:
        raise CorruptCheckpointError(f"{source}: no model_checkpoint_path")
    if stamps and len(stamps) != len(paths):
        raise CorruptCheckpointError(
            f"{source}: {len(stamps)} timestamps for {len(paths)} checkpoint paths"
        )
    return CheckpointState(model_path, paths, stamps, preserved)


def format_state(state: CheckpointState) -> str:
    """Render a :class:`CheckpointState` in the text format :func:`parse_state` reads."""
    lines = [f"model_checkpoint_path: {_quote(state.model_checkpoint_path)}"]
    lines += [f"all_model_checkpoint_paths: {_quote(p)}" for p in state.all_model_checkpoint_paths]
    lines += [
        f"all_model_checkpoint_timestamps: {t!r}" for t in state.all_model_checkpoint_timestamps
    ]
    if state.last_preserved_timestamp is not None:
        lines.append(f"last_preserved_timestamp: {state.last_preserved_timestamp!r}")
    return "\n".join(lines) + "\n"


def read_state(
    storage: Storage, directory: str, filename: str = STATE_FILENAME
) -> CheckpointState | None:
    """Read the state file in ``directory`` (a path on ``storage``); ``None`` when there is none.

    Raises:
        CorruptCheckpointError: When the file exists but cannot be parsed.
        CheckpointTooLargeError: When the file is larger than
            ``PIPESTATE_MAX_STATE_FILE_BYTES`` (16 MiB by default).
    """
    path = storage.join(directory, filename)
    if not storage.isfile(path):
        return None
    try:
        data = read_limited(storage, path, STATE_FILE_LIMIT)
    except NotFoundError:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CorruptCheckpointError(f"state file {path!r} is not UTF-8 text: {err}") from None
    return parse_state(text, source=f"state file {path!r}")


def write_state(
    storage: Storage,
    directory: str,
    state: CheckpointState,
    filename: str = STATE_FILENAME,
    *,
    fsync: bool = True,
) -> None:
    """Atomically replace the state file in ``directory`` (a path on ``storage``)."""
    storage.makedirs(directory)
    storage.write_atomic(
        storage.join(directory, filename), format_state(state).encode("utf-8"), fsync=fsync
    )


def read_state_file(directory: str, filename: str = STATE_FILENAME) -> CheckpointState | None:
    """Read the state file in ``directory`` (a local path or URL).

    Returns:
        The parsed state, or ``None`` when the directory has no state file.

    Raises:
        CorruptCheckpointError: When the file exists but cannot be parsed.
    """
    storage, fs_dir = Storage.for_path(as_path(directory, "directory"))
    return read_state(storage, fs_dir, filename)


def write_state_file(
    directory: str, state: CheckpointState, filename: str = STATE_FILENAME
) -> None:
    """Atomically replace the state file in ``directory`` (a local path or URL)."""
    storage, fs_dir = Storage.for_path(as_path(directory, "directory"))
    write_state(storage, fs_dir, state, filename)
