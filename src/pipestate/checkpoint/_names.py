"""Name-based restore: a flat ``name -> array`` safetensors file, matched by path names.

Each array a Python object saves has two names: its full key
(``model/kernel/.ATTRIBUTES/VARIABLE_VALUE``) and its variable path
(``model/kernel`` for a Variable; ``model/<attribute>`` for other attributes,
e.g. ``model/fc.weight`` for a Stateful object's state dict entry). A file
written by anyone (e.g. model weights from elsewhere) restores every array
whose name it holds.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Collection
from typing import Any

import numpy as np

from pipestate.checkpoint._graph import GraphView, format_path
from pipestate.checkpoint._restore import LoadStatus, _listing, next_restore_uid
from pipestate.checkpoint._safetensors import TensorInfo, numpy_dtype, parse_header
from pipestate.checkpoint._storage import RandomAccessFile, Storage
from pipestate.checkpoint._trackable import Trackable
from pipestate.checkpoint._values import Value, attribute_key, escape_name, is_torch_tensor
from pipestate.checkpoint._variable import VARIABLE_VALUE
from pipestate.errors import CheckpointKeyError, CheckpointMismatchError, CorruptCheckpointError

__all__ = ["NameBasedFile", "NameBasedSaverStatus", "restore_by_name"]


class NameBasedFile:
    """A safetensors file read without trusting its header; arrays come back as fresh copies."""

    def __init__(self, storage: Storage, path: str, *, display: str | None = None) -> None:
        self.display = display or path
        self._file: RandomAccessFile | None = storage.open_random_access(
            path, what="checkpoint file"
        )
        try:
            self.tensors, self.metadata = parse_header(
                self._file.read(0, min(8, self._file.size)),
                self._file.size,
                what=f"safetensors file {self.display!r}",
                read_more=self._file.read,
            )
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"NameBasedFile({self.display!r}, tensors={len(self.tensors)})"

    def info(self, name: str) -> TensorInfo:
        """The header entry of tensor ``name``."""
        try:
            return self.tensors[name]
        except KeyError:
            raise CheckpointKeyError(f"{self.display!r} has no tensor named {name!r}") from None

    def read(self, name: str) -> np.ndarray:
        """Read tensor ``name`` (BF16 is widened to float32, exactly).

        Raises:
            CheckpointMismatchError: For float8 and other types NumPy cannot hold.
            CorruptCheckpointError: When the file is shorter than its header says.
        """
        info = self.info(name)
        data = self.read_bytes(name)
        dtype = numpy_dtype(info.dtype)
        if dtype is not None:
            array: np.ndarray = np.frombuffer(data, dtype=dtype).reshape(info.shape).copy()
            return array
        if info.dtype == "BF16":
            bits = np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16
            return bits.view(np.float32).reshape(info.shape)
        raise CheckpointMismatchError(
            f"tensor {name!r} in {self.display!r} has dtype {info.dtype}, which NumPy cannot hold; "
            "convert the file to a supported dtype (e.g. F16 or F32)"
        )

    def read_torch(self, name: str) -> Any:
        """Read tensor ``name`` as a torch tensor of its own dtype (BF16 and float8 included)."""
        from pipestate.torch._state import tensor_from_bytes

        info = self.info(name)
        return tensor_from_bytes(self.read_bytes(name), info.dtype, info.shape, name)

    def read_bytes(self, name: str) -> bytes:
        """The raw bytes of tensor ``name``, whatever its dtype.

        Raises:
            CorruptCheckpointError: When the file is shorter than its header says.
        """
        info = self.info(name)
        if self._file is None:
            raise ValueError(f"{self!r} is closed")
        data = self._file.read(info.offset, info.length)
        if len(data) != info.length:
            raise CorruptCheckpointError(f"{self.display!r}: tensor {name!r} is truncated")
        return data

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None


def _names_for(path: tuple[str, ...], attribute: str, nested: tuple[str, ...]) -> list[str]:
    full = attribute_key(path, attribute)
    if nested:
        full += "/" + "/".join(escape_name(p) for p in nested)
    if attribute == VARIABLE_VALUE and not nested:
        short = "/".join(path)
    else:
        short = "/".join((*path, attribute, *nested))
    return [full, short] if short and short != full else [full]


class _Matcher:
    """Replaces the arrays of a value by the file's arrays of the same names."""

    def __init__(self, file: NameBasedFile) -> None:
        self.file = file
        self.used: set[str] = set()
        self.found = 0
        self.missing = 0
        # Torch tensors read so far, by the layout of the template tensor they replaced: a
        # tensor tied to one of them (a file holds tied weights once) takes the same one.
        self._tied: dict[tuple[Any, ...], Any] = {}
        self._untied: dict[tuple[Any, ...], int] = {}

    def __repr__(self) -> str:
        return f"_Matcher({self.file!r}, found={self.found}, missing={self.missing})"

    def substitute(
        self, value: Value, path: tuple[str, ...], attribute: str, nested: tuple[str, ...]
    ) -> Value:
        if is_torch_tensor(value):
            return self._substitute_tensor(value, _names_for(path, attribute, nested))
        if isinstance(value, (np.ndarray, np.generic)):
            for name in _names_for(path, attribute, nested):
                if name in self.file.tensors:
                    self.used.add(name)
                    self.found += 1
                    array = self.file.read(name)
                    return array if isinstance(value, np.ndarray) else array[()]
            self.missing += 1
            return value
        if isinstance(value, list):
            return [
                self.substitute(v, path, attribute, (*nested, str(i))) for i, v in enumerate(value)
            ]
        if isinstance(value, tuple):
            return tuple(
                self.substitute(v, path, attribute, (*nested, str(i))) for i, v in enumerate(value)
            )
        if isinstance(value, dict):
            return {
                k: self.substitute(v, path, attribute, (*nested, str(k))) for k, v in value.items()
            }
        return value

    def _substitute_tensor(self, value: Any, names: list[str]) -> Value:
        layout = (
            str(value.device),
            value.untyped_storage().data_ptr(),
            value.dtype,
            tuple(value.shape),
            value.stride(),
            value.storage_offset(),
        )
        for name in names:
            if name in self.file.tensors:
                self.used.add(name)
                self.found += 1
                tensor = self.file.read_torch(name)
                if value.untyped_storage().nbytes():
                    self._tied.setdefault(layout, tensor)
                    # Tied tensors seen before this one were not missing after all.
                    self.missing -= self._untied.pop(layout, 0)
                return tensor
        if layout in self._tied:
            return self._tied[layout]
        self.missing += 1
        if value.untyped_storage().nbytes():
            self._untied[layout] = self._untied.get(layout, 0) + 1
        return value


class NameBasedSaverStatus(LoadStatus):
    """The status of restoring a flat name-based file.

    ``assert_consumed`` fails when a Python object did not get all its arrays
    or when a name in the file was not used; ``assert_existing_objects_matched``
    checks the Python objects only; ``assert_nontrivial_match`` needs one name
    to have matched.
    """

    def __init__(
        self,
        graph: GraphView,
        uid: int,
        file: NameBasedFile,
        used: set[str],
        optional: Collection[Trackable],
    ) -> None:
        self._graph = graph
        self._uid = uid
        self._display = file.display
        self._names = sorted(file.tensors)
        self._used = used
        self._optional = [weakref.ref(o) for o in optional]

    def __repr__(self) -> str:
        return (
            f"NameBasedSaverStatus({self._display!r}, used {len(self._used)} of "
            f"{len(self._names)} names)"
        )

    def _unrestored(self) -> list[str]:
        optional = [ref() for ref in self._optional]
        return [
            f"Object not restored: {format_path(path)} ({obj!r:.100})"
            for obj, path, _ in self._graph.walk()
            if obj._restore_uid < self._uid and not any(obj is o for o in optional)
        ]

    def assert_consumed(self) -> NameBasedSaverStatus:
        """Assert that every Python object got its arrays and every name in the file was used.

        Raises:
            AssertionError: Listing the objects not restored and the unused names.
        """
        problems = self._unrestored() + [
            f"Unused name in checkpoint: {n}" for n in self._names if n not in self._used
        ]
        if problems:
            raise AssertionError(
                f"Name-based checkpoint {self._display!r} was not fully consumed:\n"
                f"{_listing(problems)}"
            )
        return self

    def assert_existing_objects_matched(self) -> NameBasedSaverStatus:
        """Assert that every Python object now in the graph got all its arrays.

        Raises:
            AssertionError: Listing the objects not restored.
        """
        problems = self._unrestored()
        if problems:
            raise AssertionError(
                f"Some Python objects were not restored from name-based checkpoint "
                f"{self._display!r}:\n{_listing(problems)}"
            )
        return self

    def assert_nontrivial_match(self) -> NameBasedSaverStatus:
        """Assert that at least one name in the file matched an object.

        Raises:
            AssertionError: When no name matched, listing some names of the file.
        """
        if not self._used:
            raise AssertionError(
                f"No name in name-based checkpoint {self._display!r} matched a variable path of "
                f"the Python objects. Names in the file:\n{_listing(self._names) or '  (none)'}"
            )
        return self

    def expect_partial(self) -> NameBasedSaverStatus:
        """Nothing to silence for name-based restores; returns ``self``."""
        return self


def restore_by_name(
    graph: GraphView, file: NameBasedFile, optional: Collection[Trackable] = ()
) -> NameBasedSaverStatus:
    """Restore every array of the graph whose name ``file`` holds.

    An object whose arrays were all found counts as restored; one with some
    found gets those and keeps its other values.
    """
    uid = next_restore_uid()
    matcher = _Matcher(file)
    for obj, path, _ in graph.walk():
        expected = obj._value_names()
        if expected is not None and not expected:
            obj._restore_uid = uid
            continue
        template = obj._serialize_to_values()
        found, missing = matcher.found, matcher.missing
        values = {
            name: matcher.substitute(value, path, name, ())
            for name, value in template.items()
            if expected is None or name in expected
        }
        if matcher.found > found:
            _restore(obj, values, path, file.display)
            if matcher.missing == missing:
                obj._restore_uid = uid
    return NameBasedSaverStatus(graph, uid, file, matcher.used, optional)


def _restore(obj: Trackable, values: dict[str, Any], path: tuple[str, ...], display: str) -> None:
    restore: Callable[[dict[str, Any]], None] = obj._restore_from_values
    try:
        restore(values)
    except (KeyError, TypeError) as err:
        raise CheckpointMismatchError(
            f"cannot restore {obj!r} at {format_path(path)!r} from {display!r}: {err}"
        ) from err
