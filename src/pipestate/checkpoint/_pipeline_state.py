"""Input-pipeline states inside a checkpoint, described for people.

An iterator saved in a checkpoint (``Checkpoint(data=iterator)``, the input
hook, ``make_saveable_from_iterator``) is an object whose attributes are the
state's envelope: ``version``, ``fingerprint``, ``ops`` and ``iterator``.
This module finds those objects and renders the nested ``iterator`` state as
a tree of ops with their positions. It reads the checkpoint only: the
checkpoint layer knows nothing of the ops, so it names them from the state's
``ops`` list and the keys the data layer writes.
"""

from __future__ import annotations

import json
from typing import Any

from pipestate.checkpoint._index import node_paths
from pipestate.checkpoint._reader import CheckpointReader
from pipestate.checkpoint._values import decode_value
from pipestate.errors import CheckpointError, CheckpointKeyError, CorruptCheckpointError

__all__ = ["describe_pipeline_state", "find_pipeline_states", "state_as_json"]

_ENVELOPE = frozenset({"version", "fingerprint", "ops", "iterator"})
_PARENT, _PARENTS, _SEED = "parent", "parents", "seed"

# What the data layer's state keys mean (iterator.py and the ops' iterators).
_MEANINGS = {
    "index": "elements consumed at this point of the pipeline",
    "global": "elastic shard: elements consumed by all shards together (re-partitions "
    "under another shard count)",
    "ahead": "ranges delivered beyond the index (deterministic=False)",
    "pass": "epoch: the pass of repeat",
    "yielded": "whether this pass has yielded an element yet",
    "produced": "elements produced",
    "filled": "whether the shuffle buffer was filled once",
    "buffer": "the shuffle buffer",
    "count": "counter",
    "taken": "elements taken",
    "skipped": "elements skipped",
    "ended": "whether the op has ended",
    "current": "the input being read",
    "file": "the file being read",
    "file_index": "index of the file being read",
    "offset": "position in the current file or batch",
    "scan_state": "scan's carried state",
    "cycle_index": "interleave's current slot",
    "block_index": "elements read from the current slot's block",
    "slots": "interleave's open inputs",
}


class _Array:
    """An array of the state, shown by dtype, shape and size instead of its values."""

    def __init__(self, dtype: str, shape: list[int], length: int) -> None:
        self.text = f"{dtype}[{', '.join(map(str, shape))}] ({length} B)"

    def __repr__(self) -> str:
        return self.text


def find_pipeline_states(reader: CheckpointReader) -> dict[str, int]:
    """The paths (``data``, ``inputs/0``) of the objects holding an iterator state, by node id."""
    paths = node_paths(reader.nodes)
    found: dict[str, int] = {}
    for nid, node in enumerate(reader.nodes):
        if set(node.attributes) == _ENVELOPE:
            found["/".join(paths[nid]) or "(root)"] = nid
    return found


def _decoded(reader: CheckpointReader, nid: int, name: str, where: str) -> Any:
    """An attribute's value with its arrays summarised, not read."""
    tensors = reader.tensors

    def summary(key: str) -> Any:
        t = tensors.get(key)
        if t is None:
            raise CorruptCheckpointError(
                f"{where}: refers to array {key!r:.200}, which the index lacks"
            )
        return _Array(str(t.native or t.dtype.name), list(t.shape), t.length)

    try:
        return decode_value(reader.nodes[nid].attributes[name], summary, where=where)
    except CorruptCheckpointError:
        raise
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as err:
        # A value shaped as no saved state is (a scalar or sharded tensor where an
        # iterator's state has arrays): say so rather than fail while summarising it.
        raise CorruptCheckpointError(
            f"{where}: not an input-pipeline state ({type(err).__name__}: {err!s:.200})"
        ) from None


def _value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _render(state: Any, ops: list[str], lines: list[str], indent: str, top: bool) -> None:
    """One line per op, from the outermost down, with its own keys; inputs nest under it."""
    if not isinstance(state, dict):
        lines.append(f"{indent}{_value(state)}")
        return
    own = {k: v for k, v in state.items() if k not in (_PARENT, _PARENTS)}
    if "index" in own:  # an index iterator: the random-access ops up to here, one index
        name = " -> ".join(ops) if ops else "random-access ops"
        label = f"{name} (random access, one index)"
    else:
        label = ops[-1] if ops else "op"
    items = []
    for key, value in own.items():
        if key == _SEED and (value is None or not top):
            continue  # only the outermost iterator saves the drawn seed
        items.append(f"{key}={_value(value)}")
    lines.append(f"{indent}{label}: {', '.join(items) if items else '(no position of its own)'}")
    for key in own:
        meaning = "seed drawn for the seed=None ops" if key == _SEED else _MEANINGS.get(key)
        if meaning and not (key == _SEED and (own[key] is None or not top)):
            lines.append(f"{indent}    {key}: {meaning}")
    child = indent + "  "
    if _PARENT in state:
        _render(state[_PARENT], ops[:-1] if "index" not in own else [], lines, child, False)
    elif _PARENTS in state and isinstance(state[_PARENTS], list):
        for i, inner in enumerate(state[_PARENTS]):
            lines.append(f"{child}input {i}:")
            _render(inner, [], lines, child + "  ", False)


def describe_pipeline_state(reader: CheckpointReader, name: str) -> list[str]:
    """Lines describing the iterator state saved under ``name`` (as ``find_pipeline_states``).

    Raises:
        CheckpointKeyError: No iterator state is saved under ``name``.
        CorruptCheckpointError: The state's values can't be decoded.
    """
    states = find_pipeline_states(reader)
    if name not in states:
        known = ", ".join(states) or "none"
        raise CheckpointKeyError(
            f"checkpoint {reader.display!r} has no input-pipeline state named {name!r}; "
            f"iterator states in it: {known}"
        )
    nid = states[name]
    node = reader.nodes[nid]
    values = {key: _decoded(reader, nid, key, f"{name}/.{key}") for key in sorted(_ENVELOPE)}
    ops = values["ops"] if isinstance(values["ops"], list) else []
    names = [str(op).split(":")[0] for op in ops]
    lines = [
        f"{name} ({node.kind}): input-pipeline state version {values['version']}, "
        f"fingerprint {values['fingerprint']}",
        f"  ops, sources first: {' -> '.join(names) if names else '(none)'}",
    ]
    if "shard" in names:
        lines.append(
            "  sharded: a shard op reads part of the data (an elastic 'global' count below "
            "lets the state restore under another number of shards)"
        )
    lines.append("  position, outermost op first:")
    _render(values["iterator"], names, lines, "    ", True)
    return lines


def state_as_json(reader: CheckpointReader, name: str) -> str:
    """The iterator state saved under ``name`` as indented JSON (arrays summarised)."""
    states = find_pipeline_states(reader)
    if name not in states:
        raise CheckpointKeyError(
            f"checkpoint {reader.display!r} has no input-pipeline state named {name!r}; "
            f"iterator states in it: {', '.join(states) or 'none'}"
        )
    nid = states[name]
    values = {key: _decoded(reader, nid, key, f"{name}/.{key}") for key in sorted(_ENVELOPE)}
    try:
        return json.dumps(values, indent=2, default=repr)
    except (TypeError, ValueError) as err:  # a value decode_value made that JSON can't hold
        raise CheckpointError(f"can't show the state {name!r} as JSON: {err}") from err
