"""Looking inside checkpoints: variables, single values, the object tree, checks and differences."""

from __future__ import annotations

import json
import re
from collections import deque
from typing import Any

import google_crc32c

from pipestate._progress import Progress
from pipestate.checkpoint._index import (
    DISTRIBUTED_FORMAT_VERSION,
    FORMAT_VERSION,
    Node,
    node_paths,
)
from pipestate.checkpoint._locate import Located, locate
from pipestate.checkpoint._names import NameBasedFile
from pipestate.checkpoint._pipeline_state import (
    describe_pipeline_state,
    find_pipeline_states,
    state_as_json,
)
from pipestate.checkpoint._reader import CheckpointReader
from pipestate.checkpoint._state_file import read_state
from pipestate.checkpoint._storage import Storage, as_path
from pipestate.checkpoint._values import Value, attribute_key, decode_value
from pipestate.checkpoint._variable import VARIABLE_VALUE
from pipestate.errors import CheckpointError, CheckpointKeyError, CorruptCheckpointError

__all__ = [
    "describe_state",
    "describe_tree",
    "diff_checkpoints",
    "list_checkpoints",
    "list_variables",
    "load_variable",
    "verify_checkpoint",
]


def _open(path: Any) -> tuple[Located, CheckpointReader | NameBasedFile]:
    found = locate(path, "path")
    if found.kind == "object":
        return found, CheckpointReader(found.storage, found.path, display=found.display)
    return found, NameBasedFile(found.storage, found.path, display=found.display)


def list_variables(path: Any) -> list[tuple[str, list[int]]]:
    """Names and shapes of the arrays in a checkpoint, sorted (like ``tf.train.list_variables``).

    For an object-graph checkpoint the names are the values' keys, e.g.
    ``model/kernel/.ATTRIBUTES/VARIABLE_VALUE``; for a flat safetensors file
    they are its tensor names.

    Args:
        path: A checkpoint prefix (local path or URL) or a safetensors file.

    Returns:
        ``[(name, shape), ...]``.

    Raises:
        NotFoundError: When there is no checkpoint at ``path``.
        CorruptCheckpointError: When its index or header is malformed.

    Example:
        >>> list_variables("ckpt/model-1")  # doctest: +SKIP
        [('model/kernel/.ATTRIBUTES/VARIABLE_VALUE', [3, 4]), ...]
    """
    _, source = _open(path)
    try:
        tensors: dict[str, Any] = dict(source.tensors)
        return [(k, list(tensors[k].shape)) for k in sorted(tensors)]
    finally:
        source.close()


def _attribute_index(nodes: list[Node]) -> dict[str, tuple[int, str]]:
    paths = node_paths(nodes)
    return {
        attribute_key(paths[nid], name): (nid, name)
        for nid, node in enumerate(nodes)
        for name in node.attributes
    }


def load_variable(path: Any, name: str) -> Value:
    """Load one saved value, verifying its checksum.

    Args:
        path: A checkpoint prefix (local path or URL) or a safetensors file.
        name: An array's name from :func:`list_variables`, an attribute key
            (``epoch/.ATTRIBUTES/VALUE``, for inline values too), or a
            variable's path (``model/kernel``).

    Returns:
        A NumPy array, or the saved Python value of an attribute.

    Raises:
        CheckpointKeyError: When ``name`` is not in the checkpoint.
        NotFoundError, CorruptCheckpointError: As :func:`list_variables`.

    Example:
        >>> load_variable("ckpt/model-1", "model/kernel")  # doctest: +SKIP
        array([[...]], dtype=float32)
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {name!r} of type {type(name).__name__}")
    found, source = _open(path)
    try:
        if isinstance(source, NameBasedFile):
            return source.read(name)
        if name in source.tensors:
            return source.read_tensor(name)
        attributes = _attribute_index(source.nodes)
        for key in (name, attribute_key(tuple(name.split("/")), VARIABLE_VALUE)):
            if key in attributes:
                nid, attr = attributes[key]
                return source.decode(source.nodes[nid].attributes[attr], where=key)
        close = sorted(k for k in attributes if k.startswith(name.split("/")[0]))[:5]
        hint = f"; similar names: {', '.join(close)}" if close else "; see list_variables()"
        raise CheckpointKeyError(f"checkpoint {found.display!r} has no value named {name!r}{hint}")
    finally:
        source.close()


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


# Values saved in chunks: DTensors and sharded (JAX) arrays.
_SHARDED_TAGS = frozenset({"dtensor", "sharded"})


def _tensor_ref(tag: str, body: Any) -> str | None:
    """The tensor key of an ``array``, ``scalar`` or ``torch`` tag (a torch view names its base)."""
    if tag == "torch" and isinstance(body, dict):
        body = body.get("of")
    return body if tag in ("array", "scalar", "torch") and isinstance(body, str) else None


def _dtype_name(t: Any) -> str:
    """A tensor's dtype: the safetensors code for types NumPy lacks (``BF16``)."""
    return str(t.native or t.dtype.name)


def _summary(encoded: Any, tensors: dict[str, Any]) -> tuple[str, list[str]]:
    """A one-line description of an encoded value, and lines for the arrays inside it."""
    if isinstance(encoded, dict) and len(encoded) == 1:
        ((tag, body),) = encoded.items()
        ref = _tensor_ref(tag, body)
        if ref is not None and ref in tensors:
            t = tensors[ref]
            shape = ", ".join(map(str, t.shape))
            return f"{_dtype_name(t)}[{shape}]  {_size(t.length)}", []
        if tag in _SHARDED_TAGS and isinstance(body, dict) and isinstance(body.get("shape"), list):
            chunks: list[str] = []
            _collect_refs(encoded, chunks)
            total = sum(tensors[r].length for r in chunks if r in tensors)
            shape = ", ".join(map(str, body["shape"]))
            counted = f"{len(chunks)} chunk{'' if len(chunks) == 1 else 's'}"
            return (
                f"sharded {body.get('dtype')}[{shape}] in {counted}  {_size(total)}",
                [_tensor_line(r, tensors[r]) for r in chunks if r in tensors],
            )
    refs: list[str] = []
    _collect_refs(encoded, refs)
    refs = list(dict.fromkeys(refs))  # tensors sharing storage name one tensor
    if not refs:
        try:
            text = repr(decode_value(encoded, _no_array, where="inspect"))
        except CheckpointError:
            text = json.dumps(encoded)
        return (text if len(text) <= 70 else text[:67] + "..."), []
    total = sum(tensors[r].length for r in refs if r in tensors)
    lines = []
    for r in refs:
        if r in tensors:
            lines.append(_tensor_line(r, tensors[r]))
    return f"nested value with {len(refs)} arrays ({_size(total)})", lines


def _tensor_line(key: str, t: Any) -> str:
    return f"{key}  {_dtype_name(t)}[{', '.join(map(str, t.shape))}]  {_size(t.length)}"


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _no_array(key: str) -> Any:
    raise CorruptCheckpointError(f"unexpected array reference {key!r:.200}")


def _collect_refs(encoded: Any, out: list[str]) -> None:
    # Iterative: the JSON comes from a file and may nest deeper than the stack allows.
    stack = [encoded]
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(reversed(value))
        elif isinstance(value, dict):
            if len(value) == 1:
                ((tag, body),) = value.items()
                ref = _tensor_ref(tag, body)
                if ref is not None:
                    out.append(ref)
                    continue
                if tag in _SHARDED_TAGS and isinstance(body, dict):
                    # A sharded tensor: the arrays of its chunks.
                    chunks = body.get("chunks")
                    for chunk in chunks if isinstance(chunks, list) else ():
                        if isinstance(chunk, dict) and isinstance(chunk.get("of"), str):
                            out.append(chunk["of"])
                    continue
            stack.extend(reversed(list(value.values())))


def _first_parents(nodes: list[Node]) -> list[tuple[int, str] | None]:
    """Each node's parent and local name on its first (breadth-first) path, as in node_paths."""
    parents: list[tuple[int, str] | None] = [None] * len(nodes)
    seen = {0}
    queue = deque([0])
    while queue:
        nid = queue.popleft()
        for name, child in nodes[nid].children.items():
            if child not in seen:
                seen.add(child)
                parents[child] = (nid, name)
                queue.append(child)
    return parents


def describe_tree(path: Any) -> str:
    """The object tree of a checkpoint with each value's dtype, shape and size.

    Each input-pipeline state in it (an iterator saved in the checkpoint)
    follows the tree, described op by op with its position.

    Raises:
        NotFoundError, CorruptCheckpointError: As :func:`list_variables`.
    """
    found, source = _open(path)
    try:
        if isinstance(source, NameBasedFile):
            total = sum(t.length for t in source.tensors.values())
            lines = [
                f"{found.display}: safetensors file, {len(source.tensors)} tensors ({_size(total)})"
            ]
            for name in sorted(source.tensors):
                t = source.tensors[name]
                lines.append(
                    f"  {name}  {t.dtype}[{', '.join(map(str, t.shape))}]  {_size(t.length)}"
                )
            return "\n".join(lines)
        total = sum(t.length for t in source.tensors.values())
        world = source.world_size
        version = FORMAT_VERSION if world == 1 else DISTRIBUTED_FORMAT_VERSION
        saved_by = f", saved by {world} ranks" if world > 1 else ""
        lines = [
            f"{found.display}: pipestate checkpoint (format {version}{saved_by}), "
            f"{len(source.nodes)} objects, {len(source.tensors)} arrays ({_size(total)}) in "
            f"{source.num_shards} shard{'s' if source.num_shards != 1 else ''}"
        ]
        paths = node_paths(source.nodes)
        parents = _first_parents(source.nodes)
        shown: dict[int, str] = {}
        # Iterative, and each object is expanded only on its first path, so the printed
        # tree is as deep as the graph (bounded when the index is read), never deeper.
        stack: list[tuple[int, str, str, bool, bool, tuple[int, str] | None]] = [
            (0, "(root)", "", True, True, None)
        ]
        while stack:
            nid, label, indent, is_last, top, via = stack.pop()
            branch = "" if top else ("└── " if is_last else "├── ")
            node = source.nodes[nid]
            if not top and parents[nid] != via:
                # Any number of references may point at one deep object: its path is
                # joined once, and shown shortened.
                if nid not in shown:
                    shown[nid] = _shorten("/".join(paths[nid]) or "(root)")
                lines.append(f"{indent}{branch}{label} -> same object as {shown[nid]}")
                continue
            per_rank = f", per rank: rank 0's of {world} shown" if node.ranks is not None else ""
            lines.append(f"{indent}{branch}{label} ({node.kind}{per_rank})")
            child_indent = indent if top else indent + ("    " if is_last else "│   ")
            n_entries = len(node.attributes) + len(node.children)
            for i, name in enumerate(node.attributes):
                last = i == n_entries - 1
                text, extra = _summary(node.attributes[name], source.tensors)
                lines.append(f"{child_indent}{'└── ' if last else '├── '}.{name}: {text}")
                pad = child_indent + ("    " if last else "│   ")
                lines.extend(f"{pad}  {line}" for line in extra)
            children = list(node.children.items())
            for i, (name, child) in reversed(list(enumerate(children))):
                last = len(node.attributes) + i == n_entries - 1
                stack.append((child, name, child_indent, last, False, (nid, name)))
        for name in find_pipeline_states(source):
            lines.append("")
            try:
                lines.extend(describe_pipeline_state(source, name))
            except (CheckpointError, RecursionError) as err:  # the tree above is still right
                lines.append(f"{name}: input-pipeline state that can't be described: {err!s:.300}")
        return "\n".join(lines)
    finally:
        source.close()


def describe_state(path: Any, name: str) -> str:
    """The input-pipeline state saved under object path ``name``, as indented JSON.

    Raises:
        NotFoundError, CorruptCheckpointError: As :func:`list_variables`.
        CheckpointKeyError: No iterator state is saved under ``name`` (the
            message lists those that are).
    """
    found, source = _open(path)
    try:
        if isinstance(source, NameBasedFile):
            raise CheckpointKeyError(
                f"{found.display!r} is a flat safetensors file: it holds no input-pipeline state"
            )
        return state_as_json(source, name)
    finally:
        source.close()


def _all_attributes(node: Node) -> list[tuple[str, Any, str]]:
    """``(name, encoded value, rank suffix)`` of every saved value of a node: each rank's for a
    per-rank object of a distributed checkpoint (suffix ``@rank<r>``), else its own."""
    if node.ranks is None:
        return [(name, encoded, "") for name, encoded in node.attributes.items()]
    return [
        (name, encoded, f"@rank{rank}")
        for rank, attributes in enumerate(node.ranks)
        for name, encoded in attributes.items()
    ]


def verify_checkpoint(path: Any, *, progress: bool = False) -> tuple[int, list[str]]:
    """Read every value of a checkpoint and check every checksum.

    Args:
        path: The checkpoint.
        progress: Show the bytes checked and the speed (tqdm, else a line on stderr).

    Returns:
        ``(number of values checked, problems)``; no problems means the checkpoint is intact.

    Raises:
        NotFoundError: When there is no checkpoint at ``path``.
        CorruptCheckpointError: When the index itself cannot be read.
    """
    found, source = _open(path)
    problems: list[str] = []
    checked = 0
    total = sum(t.length for t in source.tensors.values())
    bar = Progress(total, f"verifying {found.display}", unit="B", enabled=progress)
    try:
        if isinstance(source, NameBasedFile):
            # A flat file has no checksums: check that every tensor's bytes are there
            # (float8 and other types NumPy cannot hold are fine here).
            for name in sorted(source.tensors):
                try:
                    source.read_bytes(name)
                    checked += 1
                except CheckpointError as err:
                    problems.append(str(err))
                bar.update(source.tensors[name].length)
            return checked, problems
        for key in sorted(source.tensors):
            try:
                source.read_tensor(key)
                checked += 1
            except (CheckpointError, FileNotFoundError) as err:
                problems.append(str(err))
            bar.update(source.tensors[key].length)
        paths = node_paths(source.nodes)
        for nid, node in enumerate(source.nodes):
            for name, encoded, rank in _all_attributes(node):
                key = attribute_key(paths[nid], name) + rank
                try:
                    source.decode(encoded, where=key)
                except (CheckpointError, FileNotFoundError) as err:
                    message = str(err)
                    if message not in problems:
                        problems.append(message)
        return checked, problems
    finally:
        bar.close()
        source.close()


def _fingerprint(path: Any) -> dict[str, str]:
    _, source = _open(path)
    out: dict[str, str] = {}
    try:
        if isinstance(source, NameBasedFile):
            for name, info in source.tensors.items():
                crc = google_crc32c.value(source.read_bytes(name))
                out[name] = f"{info.dtype}{list(info.shape)} crc32c={crc:08x}"
            return out
        paths = node_paths(source.nodes)
        if source.world_size > 1:
            out["(world size)"] = str(source.world_size)
        for nid, node in enumerate(source.nodes):
            out["/".join(paths[nid]) or "(root)"] = f"object {node.kind}"
            for name, encoded, rank in _all_attributes(node):
                out[attribute_key(paths[nid], name) + rank] = json.dumps(encoded, sort_keys=True)
        for key, t in source.tensors.items():
            out[key] = f"{_dtype_name(t)}{list(t.shape)} crc32c={t.crc32c:08x}"
        return out
    finally:
        source.close()


def diff_checkpoints(path_a: Any, path_b: Any) -> list[str]:
    """Differences between two checkpoints: objects and values only in one, and changed values.

    Arrays are compared by dtype, shape and crc32c checksum.

    Returns:
        Lines such as ``- key``, ``+ key`` and ``~ key: A -> B``; empty when equal.
    """
    a, b = _fingerprint(path_a), _fingerprint(path_b)
    lines = [f"- {k}: {a[k]}" for k in sorted(a.keys() - b.keys())]
    lines += [f"+ {k}: {b[k]}" for k in sorted(b.keys() - a.keys())]
    lines += [f"~ {k}: {a[k]} -> {b[k]}" for k in sorted(a.keys() & b.keys()) if a[k] != b[k]]
    return lines


def list_checkpoints(directory: Any) -> list[str]:
    """One line per checkpoint in ``directory`` (objects, arrays, bytes); latest marked ``*``."""
    display = as_path(directory, "directory")
    storage, fs_dir = Storage.for_path(display)
    try:
        state = read_state(storage, fs_dir)
    except CorruptCheckpointError:
        state = None
    latest = state.model_checkpoint_path if state else None
    lines = []
    names = [n[: -len(".index")] for n in storage.listdir(fs_dir) if n.endswith(".index")]
    for name in sorted(names, key=_natural):
        mark = "*" if name == latest else " "
        prefix = storage.join(fs_dir, name)
        try:
            reader = CheckpointReader(storage, prefix, display=name)
            size = sum(t.length for t in reader.tensors.values())
            lines.append(
                f"{mark} {name}  {len(reader.nodes)} objects, "
                f"{len(reader.tensors)} arrays, {_size(size)}"
            )
            reader.close()
        except CheckpointError as err:
            lines.append(f"{mark} {name}  unreadable: {err}")
    return lines


def _natural(name: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"([0-9]+)", name)]
