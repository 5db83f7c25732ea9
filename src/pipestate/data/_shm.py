"""Elements in shared memory: how loader workers hand NumPy data over without pickling it.

A worker writes a chunk of elements into one shared-memory block and sends
only its layout (structure, dtypes, shapes, offsets) through the pipe. When
every element of the chunk has the same structure, dtypes and shapes (the
usual case: batches of one pipeline), each leaf is written as one stacked
array; otherwise each element's leaves are written one by one. The consumer
copies the arrays out (one ``memcpy`` per leaf) and removes the block at once,
so returned elements own their memory; torch tensors are made with
``torch.from_numpy`` on those copies, without another copy.

The consumer owns every block: it names each one (:class:`Blocks`) before a
worker creates it, and removes it by that name, whatever happened to the
worker. A worker killed before, while or after creating its block leaves
nothing behind once the consumer has removed the names it handed out. Workers
never register blocks with ``multiprocessing``'s resource tracker; the
consumer registers each name once, so the tracker removes what is left only if
the consumer itself is killed, and never reports a block as leaked otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import mmap
import os
import secrets
import sys
from multiprocessing import resource_tracker
from typing import Any

import numpy as np

from pipestate._validate import brief
from pipestate.data._structure import is_namedtuple

try:
    import _posixshmem
except ImportError:  # pragma: no cover - Windows has no named POSIX shared memory
    _posixshmem = None

_ALIGN = 64
_RTYPE = "shared_memory"  # the resource tracker's name for POSIX shared memory
_SHM_DIR = "/dev/shm"  # where Linux lists the blocks

Leaf = tuple[str, tuple[int, ...], int, bool]  # dtype, shape, offset, is a NumPy scalar


def _flatten(element: Any, leaves: list[Any], objects: bool = False) -> Any:
    """The element's structure with its leaves appended to ``leaves`` (dict order kept).

    With ``objects`` (a loader's ``collate_fn`` output) lists, mapping types
    and Python values other than arrays are kept too: values travel in the
    structure, pickled with the layout.
    """
    if isinstance(element, dict):
        children = tuple(_flatten(v, leaves, objects) for v in element.values())
        if objects and type(element) is not dict:
            return ("m", type(element), tuple(element), children)
        return ("d", tuple(element), children)
    if is_namedtuple(element):
        return ("n", type(element), tuple(_flatten(v, leaves, objects) for v in element))
    if isinstance(element, tuple):
        return ("t", tuple(_flatten(v, leaves, objects) for v in element))
    if objects and isinstance(element, list):
        return ("l", tuple(_flatten(v, leaves, objects) for v in element))
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(element, torch.Tensor):
        array, dtype = _from_tensor(torch, element)
        leaves.append(array)
        return ("T", dtype)
    if objects and not isinstance(element, (np.ndarray, np.generic)):
        return ("o", element)
    if isinstance(element, np.bytes_) and element.endswith(b"\x00"):
        # An S array (and pickling an np.bytes_) drops trailing NUL bytes: such a
        # value travels as plain bytes in the structure.
        return ("b", bytes(element))
    if not isinstance(element, (np.ndarray, np.generic)):
        element = np.asarray(element)
    if element.dtype.hasobject:
        raise TypeError(f"Loader: cannot send an element with an object array leaf {element!r:.80}")
    leaves.append(element)
    return None


_SAME_SIZE_INT = {1: "int8", 2: "int16", 4: "int32", 8: "int64"}


def _from_tensor(torch: Any, tensor: Any) -> tuple[np.ndarray, str]:
    """A CPU tensor's data as an array (a same-size integer view for dtypes NumPy lacks).

    The tensor is detached first: elements carry data, not autograd history.
    """
    data = tensor.detach()
    if data.layout != torch.strided or data.is_quantized:
        raise TypeError(
            f"Loader: cannot send a {data.layout} / quantized tensor; convert it to a dense "
            f"tensor in the dataset or collate_fn (tensor.to_dense()): {brief(tensor)}"
        )
    data = data.cpu().resolve_conj().resolve_neg()
    dtype = str(data.dtype).removeprefix("torch.")
    try:
        return data.numpy(), dtype
    except TypeError:  # bfloat16, float8, ...: NumPy has no such dtype
        size = data.element_size()
        if size not in _SAME_SIZE_INT:
            raise TypeError(
                f"Loader: cannot send a tensor of dtype {data.dtype}: {brief(tensor)}"
            ) from None
        return data.view(getattr(torch, _SAME_SIZE_INT[size])).numpy(), dtype


def _to_tensor(array: np.ndarray, dtype: str) -> Any:
    """The tensor ``_from_tensor`` sent, sharing ``array``'s memory."""
    import torch

    tensor = torch.from_numpy(array)
    wanted = getattr(torch, dtype)
    return tensor if tensor.dtype == wanted else tensor.view(wanted)


def _unflatten(tree: Any, leaves: Any) -> Any:
    if tree is None:
        return next(leaves)
    kind = tree[0]
    if kind == "d":
        return {key: _unflatten(sub, leaves) for key, sub in zip(tree[1], tree[2])}
    if kind == "n":
        return tree[1](*(_unflatten(sub, leaves) for sub in tree[2]))
    if kind == "T":
        return _to_tensor(next(leaves), tree[1])
    if kind == "o":
        return tree[1]
    if kind == "b":
        return np.bytes_(tree[1])
    if kind == "l":
        return [_unflatten(sub, leaves) for sub in tree[1]]
    if kind == "m":
        items = {key: _unflatten(sub, leaves) for key, sub in zip(tree[2], tree[3])}
        try:
            return tree[1](items)
        except Exception:  # a mapping type that can't be built from a dict
            return items
    return tuple(_unflatten(sub, leaves) for sub in tree[1])


def _signature(leaf: Any) -> tuple[str, tuple[int, ...], bool]:
    return leaf.dtype.str, leaf.shape, isinstance(leaf, np.generic)


def pack(elements: list[Any], name: str, objects: bool = False) -> tuple[Any, bool]:
    """Writes ``elements`` into a new shared-memory block called ``name``.

    Returns ``(layout, created)``; no block is created when there are no
    bytes to send. On failure the block is removed before the error propagates.
    With ``objects``, lists and Python values are kept (see ``_flatten``).
    """
    trees: list[Any] = []
    per_element: list[list[Any]] = []
    for element in elements:
        leaves: list[Any] = []
        trees.append(_flatten(element, leaves, objects))
        per_element.append(leaves)
    stacked = bool(elements) and _same_trees(trees)
    if stacked:
        signature = [_signature(leaf) for leaf in per_element[0]]
        stacked = all(
            [_signature(leaf) for leaf in leaves] == signature for leaves in per_element[1:]
        )
    count = len(elements)
    if stacked:
        columns = list(zip(*per_element)) if per_element[0] else []
        specs = [(dtype, (count, *shape), scalar) for dtype, shape, scalar in signature]
    else:
        columns = [(leaf,) for leaves in per_element for leaf in leaves]
        specs = [(leaf.dtype.str, leaf.shape, isinstance(leaf, np.generic)) for (leaf,) in columns]
    offsets, size = [], 0
    for dtype, shape, _ in specs:
        offsets.append(size)
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        size += -(-nbytes // _ALIGN) * _ALIGN
    layout_leaves = [
        (dtype, shape, offset, scalar) for (dtype, shape, scalar), offset in zip(specs, offsets)
    ]
    layout = (
        ("stacked", trees[0], count, layout_leaves) if stacked else ("each", trees, layout_leaves)
    )
    if not size:
        return layout, False
    try:
        block = _create(name, size)
        try:
            for (dtype, shape, _), offset, column in zip(specs, offsets, columns):
                target = np.ndarray(shape, dtype, buffer=block, offset=offset)
                if not stacked:
                    target[...] = column[0]
                elif len(shape) == 1:
                    target[...] = column
                else:
                    np.stack(column, out=target)
                del target
        finally:
            block.close()
    except BaseException:
        unlink(name)
        raise
    return layout, True


def _same_trees(trees: list[Any]) -> bool:
    """Whether every element has the first one's structure (values kept in it compared too)."""
    try:
        return all(bool(tree == trees[0]) for tree in trees)
    except Exception:  # a value whose == is not a plain bool
        return False


def unpack(layout: Any, name: str | None) -> list[Any]:
    """The elements a worker packed, copied out of block ``name`` (``None``: no block)."""
    block = _open(name) if name is not None else None
    try:
        arrays = []
        for dtype, shape, offset, _ in layout[-1]:
            if block is None:
                arrays.append(np.empty(shape, dtype))
            else:
                arrays.append(np.ndarray(shape, dtype, buffer=block, offset=offset).copy())
    finally:
        if block is not None:
            block.close()
    if layout[0] == "stacked":
        _, tree, count, leaves = layout
        columns = []
        for array, (_, shape, _, scalar) in zip(arrays, leaves):
            if scalar or len(shape) > 1:
                columns.append(list(array))
            else:  # 0-d array leaves: keep them arrays, not NumPy scalars
                columns.append([array[i : i + 1].reshape(()) for i in range(count)])
        rows = list(zip(*columns)) if columns else [() for _ in range(count)]
        return [_unflatten(tree, iter(row)) for row in rows]
    _, trees, leaves = layout
    values = iter(
        array[()] if scalar else array for array, (_, _, _, scalar) in zip(arrays, leaves)
    )
    return [_unflatten(tree, values) for tree in trees]


class Blocks:
    """The names of one consumer's blocks: handed out before the blocks exist, removed by it.

    Names are ``ps_<pid>_<random>_<serial>`` (short enough for macOS's 31
    characters), never reused by the consumer. Each is registered with the
    resource tracker when handed out and unregistered when released, so the
    tracker holds exactly the names that may still exist.
    """

    def __init__(self) -> None:
        self.prefix = f"ps_{os.getpid()}_{secrets.token_hex(3)}_"
        self._serial = itertools.count()
        self._live: set[str] = set()

    def new(self) -> str:
        """A fresh name for a block a worker is about to create."""
        name = f"{self.prefix}{next(self._serial):x}"
        resource_tracker.register(_path(name), _RTYPE)
        self._live.add(name)
        return name

    def release(self, name: str, exists: bool = True) -> None:
        """Forgets ``name``, removing its block if it may exist."""
        if exists:
            unlink(name)
        if name in self._live:
            self._live.remove(name)
            resource_tracker.unregister(_path(name), _RTYPE)

    def release_all(self) -> None:
        """Removes every block handed out and not yet released, and any other under the prefix.

        Call it only once no worker can still create a block.
        """
        for name in sorted(self._live):
            self.release(name)
        for name in leftovers(self.prefix):
            unlink(name)

    def __repr__(self) -> str:
        return f"Blocks(prefix={self.prefix!r}, live={len(self._live)})"


def leftovers(prefix: str) -> list[str]:
    """Blocks whose names start with ``prefix``, where the system lists them (Linux)."""
    try:
        return sorted(name for name in os.listdir(_SHM_DIR) if name.startswith(prefix))
    except OSError:
        return []


def unlink(name: str) -> None:
    """Removes block ``name`` if it exists."""
    with contextlib.suppress(FileNotFoundError):
        _posixshmem.shm_unlink(_path(name))


def _path(name: str) -> str:
    return "/" + name


def _create(name: str, size: int) -> mmap.mmap:
    """A new block of ``size`` bytes, mapped; fails if ``name`` exists."""
    fd = _posixshmem.shm_open(_path(name), os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
    try:
        _reserve(fd, size)
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


def _reserve(fd: int, size: int) -> None:
    """Sizes a new block, allocating it where the system can.

    Allocating now makes a full ``/dev/shm`` raise ``OSError`` here, rather
    than kill the worker with ``SIGBUS`` when it writes the block.
    """
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, size)
            return
        except OSError as err:
            if err.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
    os.ftruncate(fd, size)


def _open(name: str) -> mmap.mmap:
    """Block ``name``, mapped read-only."""
    fd = _posixshmem.shm_open(_path(name), os.O_RDONLY)
    try:
        return mmap.mmap(fd, os.fstat(fd).st_size, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
