"""``Dataset.save``: write a dataset's elements to a directory, resumable after a crash."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from pipestate._validate import brief, check_function, check_int
from pipestate.data import _element_store, _element_writer
from pipestate.data._calls import call
from pipestate.data._element_codec import _Malformed, check_dtype
from pipestate.data._element_store import check_compression, directory_root
from pipestate.data._fingerprint import describe_callable
from pipestate.data._structure import Element
from pipestate.data.dataset import INFINITE_CARDINALITY, Dataset
from pipestate.errors import DataLossError, StateMismatchError

_logger = logging.getLogger("pipestate.data")

PROGRESS = "progress.json"
_CHECKPOINT_KEYS = ("checkpoint_interval", "directory")
_MAX_PROGRESS_BYTES = 1 << 28


def shard_of(shard_func: Callable[..., Any] | None, element: Element, op: str) -> int:
    """The shard ``shard_func`` assigns ``element`` to (``0`` without one)."""
    if shard_func is None:
        return 0
    value = call(shard_func, element)
    array = np.asarray(value)
    if array.ndim != 0 or array.dtype.kind not in "iu" or isinstance(value, bool):
        raise TypeError(
            f"{op}: shard_func {describe_callable(shard_func)} must return a scalar integer, "
            f"got {type(value).__name__} {brief(value, 60)}"
        )
    shard = int(array)
    if not 0 <= shard <= _element_store.MAX_SHARD:
        raise ValueError(
            f"{op}: shard_func {describe_callable(shard_func)} returned shard {shard}; shards "
            f"are numbered 0 to {_element_store.MAX_SHARD}"
        )
    return shard


def _check_checkpoint_args(
    value: Any, location: _element_store.Location
) -> tuple[int, _element_store.Location] | None:
    """``checkpoint_args``: the progress interval, and where the progress record goes."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(
            f"save: checkpoint_args must be a dict such as {{'checkpoint_interval': 1000}}, got "
            f"{type(value).__name__} {brief(value, 80)}"
        )
    unknown = sorted(map(str, set(value) - set(_CHECKPOINT_KEYS)))
    if unknown:
        raise TypeError(
            f"save: checkpoint_args takes 'checkpoint_interval' (elements between progress "
            f"records, default 1) and 'directory' (where the record goes, default the save's "
            f"directory), got unknown keys {unknown}"
        )
    interval = check_int(
        "checkpoint_interval", value.get("checkpoint_interval", 1), minimum=1, op="save"
    )
    where = location
    if value.get("directory") is not None:
        where = _element_store.Location(directory_root(value["directory"], "save"))
    return interval, where


def _clear(location: _element_store.Location) -> None:
    """Removes a previous save's files: the manifest first, so none is left half-valid."""
    if location.exists(_element_store.MANIFEST):
        location.remove(_element_store.MANIFEST)
        if location.local:
            location.sync_directory()
    try:
        names = location.fs.ls(location.root.rstrip("/"), detail=False)
    except FileNotFoundError:
        return
    for full in names:
        name = str(full).rstrip("/").rsplit("/", 1)[-1]
        ours = (
            (name.startswith("data-") and name.endswith(".records"))
            or (name.startswith("index-") and name.endswith(".bin"))
            or name == PROGRESS
            or ".tmp-" in name
        )
        if ours:
            location.remove(name)


def _resume(
    location: _element_store.Location,
    records: _element_store.Location,
    fingerprint: str,
    compression: str | None,
    sharding: str,
) -> tuple[_element_writer.ElementWriter, dict[str, Any]] | None:
    """The writer and iterator state of an interrupted save of the same pipeline, if any."""
    if not records.exists(PROGRESS) or location.exists(_element_store.MANIFEST):
        # No record, or the save it describes finished (it crashed before removing it).
        return None
    raw = records.read_bytes(PROGRESS, _MAX_PROGRESS_BYTES, "save")
    try:
        progress = json.loads(raw)
        token, size, count = progress["file"], progress["bytes"], progress["count"]
        parts = [(str(name), int(length)) for name, length in progress["parts"]]
        state = decode_state(progress["state"], records.describe(PROGRESS))
        same = (
            progress["path"] == location.url
            and progress["fingerprint"] == fingerprint
            and progress["compression"] == compression
            and progress["shard_func"] == sharding
        )
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
        _logger.warning("save: %r is damaged; saving from the start", records.describe(PROGRESS))
        return None
    if not same:
        _logger.warning(
            "save: %r records another save, pipeline or settings; saving from the start",
            records.describe(PROGRESS),
        )
        return None
    if not (
        isinstance(token, str)
        and re.fullmatch(r"[0-9a-f]{16}", token)
        and isinstance(size, int)
        and isinstance(count, int)
    ):
        _logger.warning("save: %r is damaged; saving from the start", records.describe(PROGRESS))
        return None
    writer = _element_writer.ElementWriter(location, compression, "save", token)
    resumed = writer.resume_parts(parts, count) if parts else writer.take_over(size, count)
    if not resumed:
        _logger.warning(
            "save: the data file %r of the interrupted save is gone, damaged or in use; "
            "saving from the start",
            location.describe(writer.name),
        )
        return None
    return writer, state


_ARRAY = "__ndarray__"


def encode_state(value: Any) -> Any:
    """An iterator state as JSON values: arrays (a shuffle's buffer) as dtype, shape, base64."""
    if isinstance(value, dict):
        return {key: encode_state(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_state(item) for item in value]
    if isinstance(value, (np.ndarray, np.generic)):
        array = np.asarray(value)
        if array.dtype.kind not in "biufcS":
            raise TypeError(f"save: an iterator state holds a {array.dtype} array")
        data = base64.b64encode(np.ascontiguousarray(array).tobytes()).decode()
        return {_ARRAY: [array.dtype.str, list(array.shape), data, isinstance(value, np.generic)]}
    return value


def decode_state(value: Any, where: str) -> Any:
    """The state :func:`encode_state` wrote, checked (raises ``DataLossError``)."""
    if isinstance(value, dict):
        if set(value) == {_ARRAY}:
            return _decode_array(value[_ARRAY], where)
        return {key: decode_state(item, where) for key, item in value.items()}
    if isinstance(value, list):
        return [decode_state(item, where) for item in value]
    return value


def _decode_array(fields: Any, where: str) -> Any:
    try:
        text, shape, data, scalar = fields
        dtype = check_dtype(text)
        raw = base64.b64decode(data, validate=True)
        if not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ValueError(f"bad shape {brief(shape, 60)}")
        array = np.frombuffer(raw, dtype).reshape(shape).copy()
    except (ValueError, TypeError, binascii.Error, _Malformed) as err:
        raise DataLossError(f"save: {where} holds a malformed array: {err}") from None
    return array[()] if scalar else array


def save(
    dataset: Dataset,
    path: Any,
    compression: Any = None,
    shard_func: Callable[..., Any] | None = None,
    checkpoint_args: Any = None,
) -> None:
    """``Dataset.save``: see its docstring."""
    root = directory_root(path, "save")
    compression = check_compression(compression, "save")
    check_function("shard_func", shard_func, "save", allow_none=True)
    location = _element_store.Location(root)
    checkpointing = _check_checkpoint_args(checkpoint_args, location)
    if dataset.cardinality() == INFINITE_CARDINALITY:
        raise ValueError(f"save: the dataset is infinite, so a save would never end: {dataset!r}")
    fingerprint = dataset.fingerprint
    sharding = describe_callable(shard_func) if shard_func is not None else ""
    interval, records = checkpointing if checkpointing is not None else (0, location)
    resumed = _resume(location, records, fingerprint, compression, sharding) if interval else None
    iterator = iter(dataset)
    if resumed is not None:
        writer, state = resumed
        try:
            iterator.set_state(state)
        except StateMismatchError as err:
            _logger.warning(
                "save: the recorded position does not restore (%s); saving from the start", err
            )
            writer.close()
            resumed = None
    if resumed is None:
        _clear(location)
        writer = _element_writer.ElementWriter(location, compression, "save")
        writer.open_new()
    try:
        for element in iterator:
            writer.write(element, shard_of(shard_func, element, "save"))
            if interval and writer.count % interval == 0:
                _record_progress(records, writer, iterator.get_state(), fingerprint, sharding)
        writer.finish(fingerprint, {"shard_func": sharding})
    finally:
        writer.close()
        iterator.close()
    if interval:
        records.remove(PROGRESS)


def _record_progress(
    records: _element_store.Location,
    writer: _element_writer.ElementWriter,
    state: dict[str, Any],
    fingerprint: str,
    sharding: str,
) -> None:
    """Makes the elements written so far durable, then records how to continue after them.

    A local data file is fsynced and continued after a crash from its recorded
    length; elsewhere (an object store, whose uploads are visible only once
    complete) the data file is closed and the next elements go to a new one.
    """
    if writer.location.local:
        writer.sync()
    else:
        writer.close_part()
    progress = {
        "path": writer.location.url,
        "fingerprint": fingerprint,
        "compression": writer.compression,
        "shard_func": sharding,
        "file": writer.token,
        "parts": writer.parts,
        "bytes": writer.bytes,
        "count": writer.count,
        "state": encode_state(state),
    }
    records.makedirs()
    records.write_atomic(PROGRESS, json.dumps(progress).encode())
