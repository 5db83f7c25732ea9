"""Fuzzing every reader: damaged and hostile files give the original values or a typed error.

Each example copies a small valid checkpoint (an index and several shards) or a
flat safetensors file, damages it (bit flips, overwrites, truncation, inserted
or removed bytes, JSON-level mutations of the index or of a safetensors header,
with or without a re-computed index checksum), and calls every read entry
point. The only acceptable outcomes are success with values bit-identical to
the originals (or, for a flat file, to what the reference ``safetensors``
reader sees) and a :class:`~pipestate.errors.PipestateError`; anything else
(another exception, a hang, an absurd allocation) fails.

``PIPESTATE_FUZZ_EXAMPLES=5000`` runs many more examples per test.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import math
import os
import random
import shutil
import struct
import tempfile
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from pipestate.checkpoint import (
    AutoTrackable,
    Checkpoint,
    CheckpointableSaver,
    CheckpointOptions,
    Variable,
    list_variables,
    load_variable,
)
from pipestate.checkpoint._index import body_crc as _body_crc
from pipestate.checkpoint._inspect import (
    describe_tree,
    diff_checkpoints,
    list_checkpoints,
    verify_checkpoint,
)
from pipestate.cli import main
from pipestate.errors import (
    CheckpointKeyError,
    CheckpointMismatchError,
    CorruptCheckpointError,
    PipestateError,
)

EXAMPLES = int(os.environ.get("PIPESTATE_FUZZ_EXAMPLES", "70"))
TIMEOUT = max(60, EXAMPLES // 5)
MAX_EXTRA_MEMORY = 64 << 20
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=EXAMPLES <= 100,
    database=None,
)


# -- the originals ---------------------------------------------------------------------


def build_model(seed: int) -> AutoTrackable:
    """A small graph covering every kind of value; ``seed`` changes every value."""
    rng = np.random.default_rng(seed)
    model = AutoTrackable()
    model.dense = AutoTrackable()
    model.dense.kernel = Variable(rng.standard_normal((3, 4)).astype(np.float32))
    model.dense.bias = Variable(rng.integers(0, 100, 2).astype(np.int64))
    model.flags = Variable(rng.integers(0, 2, 3).astype(bool))
    model.names = Variable(np.array(["ab", f"s{seed}"]))  # stored as raw U8 bytes
    model.layers = [Variable(np.float64(seed) + 0.5), Variable(np.zeros((2, 0), np.float16))]
    model.config = {"lr": 0.1 * (seed + 1), "t": (seed, b"\x00\xff"), "inf": -math.inf, 3: "k"}
    model.epoch = seed
    model.rng = np.random.default_rng(seed)
    model.pyrng = random.Random(seed)
    model.buffer = np.arange(5, dtype=np.uint8) + seed
    return model


def snapshot(model: AutoTrackable) -> dict[str, Any]:
    """Every restorable value of ``build_model``'s graph, in a form compared bit for bit."""

    def array(a: Any) -> tuple[str, tuple[int, ...], bytes]:
        a = np.asarray(a)
        return (a.dtype.str, a.shape, a.tobytes())

    return {
        "kernel": array(model.dense.kernel),
        "bias": array(model.dense.bias),
        "flags": array(model.flags),
        "names": array(model.names),
        "layer0": array(model.layers[0]),
        "layer1": array(model.layers[1]),
        "config": repr(dict(model.config)),
        "epoch": (type(model.epoch), model.epoch),
        "rng": repr(model.rng.bit_generator.state),
        "pyrng": model.pyrng.getstate(),
        "buffer": array(model.buffer),
    }


class Original:
    """A saved checkpoint and what every reader must return for it."""

    def __init__(
        self,
        directory: Path,
        prefix: str,
        files: dict[str, bytes],
        snapshot: dict[str, Any],
        variables: list[tuple[str, list[int]]],
        values: dict[str, tuple[str, tuple[int, ...], bytes]],
    ) -> None:
        self.directory = directory
        self.prefix = prefix  # relative to ``directory``
        self.files = files
        self.snapshot = snapshot
        self.variables = variables
        self.values = values

    def __repr__(self) -> str:  # short: hypothesis prints it with every failing example
        return f"Original({str(self.directory / self.prefix)!r}, files={sorted(self.files)})"


def _freeze(value: Any) -> tuple[str, tuple[int, ...], bytes]:
    array = np.asarray(value)
    return (array.dtype.str, array.shape, array.tobytes())


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Original:
    directory = tmp_path_factory.mktemp("original")
    model = build_model(1)
    # Small shards: the arrays spread over several files.
    path = Checkpoint(model=model).save(
        str(directory / "ckpt"), options=CheckpointOptions(max_shard_bytes=40)
    )
    files = {p.name: p.read_bytes() for p in directory.iterdir() if p.name != "checkpoint"}
    assert sum(".data-" in name for name in files) >= 3
    variables = list_variables(path)
    values = {name: _freeze(load_variable(path, name)) for name, _ in variables}
    return Original(directory, "ckpt-1", files, snapshot(model), variables, values)


NAMED = {
    "model/dense/kernel": np.arange(12, dtype=np.float32).reshape(3, 4),
    "model/dense/bias": np.array([5, -6], dtype=np.int64),
    "model/flags": np.array([True, False, True]),
    "model/layers/0": np.array(2.5),
    "model/layers/1": np.zeros((2, 0), np.float16),
    "model/buffer/VALUE": np.arange(5, dtype=np.uint8),
}


@pytest.fixture(scope="module")
def named_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("named") / "weights.safetensors"
    safetensors.numpy.save_file(NAMED, str(path))
    return path.read_bytes()


# -- mutations -------------------------------------------------------------------------


class Raw:
    """A JSON fragment written verbatim (NaN, huge literals, deep nesting)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text[:40]!r}{'...' if len(self.text) > 40 else ''})"


class DupDict:
    """A JSON object written with a repeated key."""

    def __init__(self, items: list[tuple[str, Any]]) -> None:
        self.items = items

    def __repr__(self) -> str:
        return f"DupDict({self.items!r:.80})"


def dump(value: Any) -> str:
    """JSON text for ``value``, with :class:`Raw` and :class:`DupDict` written as they say."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, DupDict):
        return "{" + ", ".join(f"{json.dumps(k)}: {dump(v)}" for k, v in value.items) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(dump(v) for v in value) + "]"
    return json.dumps(value)


HOSTILE_CONSTANTS: list[Any] = [
    None,
    True,
    0,
    -1,
    1,
    2**31,
    2**32,
    2**63 - 1,
    2**63,
    2**64,
    -(2**63) - 1,
    10**100,
    1.5,
    -0.0,
    1e308,
    "",
    Raw(json.dumps("x" * 200_000)),
    "<f4",
    "|O8",
    ">f4",
    "<U99999",
    "<M8[999999as]",
    "<f16",
    "|V3",
    [],
    {},
    [2**40, 2**40],
    [0, 2**40, 2**40],
    [0, 2**63],
    [0, 2**70],
    [1] * 65,
    [3, -4],
    {"array": "nope"},
    {"scalar": "nope"},
    {"array": [1]},
    {"scalar": {}},
    {"float": "nan"},
    {"bytes": "!!"},
    {"tuple": 5},
    {"items": [[[1], 2]]},
    {"items": [[{"array": "nope"}, 1]]},
    {"dict": []},
    Raw("NaN"),
    Raw("-Infinity"),
    Raw("1e999"),
    Raw("-0"),
    Raw("1" * 5000),
    Raw("[" * 700 + "]" * 700),
    Raw("[" * 5000 + "]" * 5000),
    Raw('{"a":' * 300 + "1" + "}" * 300),
    Raw('"\\ud800"'),
    Raw('"\\u0000"'),
]


def _deep_tuple(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"tuple": [value]}
    return value


HOSTILE_CONSTANTS += [Raw(json.dumps(_deep_tuple(n))) for n in (99, 150, 400)]

json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(HOSTILE_CONSTANTS),
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
).map(copy.deepcopy)  # constants are mutable; mutations must not change them


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _paths(child, (*prefix, i))


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        value = value[part]
    return value


def mutate_json(data: st.DataObject, document: Any, array_keys: list[str]) -> Any:
    """Apply one to three structural mutations to a parsed JSON document."""
    for _ in range(data.draw(st.integers(1, 3), label="json mutations")):
        paths = list(_paths(document))
        path = data.draw(st.sampled_from(paths), label="path")
        op = data.draw(
            st.sampled_from(["replace", "number", "delete", "add", "duplicate", "swap", "alias"]),
            label="op",
        )
        target = _get(document, path)
        parent = _get(document, path[:-1]) if path else None
        if op == "replace" or (op == "number" and not isinstance(target, (int, float))):
            new: Any = data.draw(json_values, label="value")
        elif op == "number":
            new = data.draw(
                st.sampled_from(
                    [
                        target + 1,
                        target - 1,
                        -target,
                        target * 2**40,
                        target + 2**64,
                        float(target),
                        str(target),
                        [target],
                    ]
                ),
                label="number",
            )
        elif op == "delete":
            if parent is None or isinstance(parent, DupDict):
                continue
            del parent[path[-1]]
            continue
        elif op == "add":
            if isinstance(target, dict):
                target[data.draw(st.text(max_size=8), label="key")] = data.draw(json_values)
            elif isinstance(target, list):
                target.append(data.draw(json_values, label="item"))
            continue
        elif op == "duplicate":
            if not isinstance(target, dict) or not target:
                continue
            key = data.draw(st.sampled_from(sorted(target)), label="dup key")
            new = DupDict([*target.items(), (key, data.draw(json_values, label="dup value"))])
        elif op == "swap":
            other = data.draw(st.sampled_from(paths), label="other path")
            if other == path or other[: len(path)] == path or path[: len(other)] == other:
                continue
            new = _get(document, other)
            if other:
                _get(document, other[:-1])[other[-1]] = target
        else:  # alias: make a value refer to another array
            if not array_keys:
                continue
            tag = data.draw(st.sampled_from(["array", "scalar"]), label="tag")
            new = {tag: data.draw(st.sampled_from(array_keys), label="alias")}
        if parent is None:
            document = new
        else:
            parent[path[-1]] = new
    return document


def mutate_bytes(data: st.DataObject, content: bytes) -> bytes:
    """Apply one to three byte-level mutations."""
    out = bytearray(content)
    for _ in range(data.draw(st.integers(1, 3), label="byte mutations")):
        op = data.draw(
            st.sampled_from(["flip", "overwrite", "truncate", "insert", "delete"]), label="op"
        )
        at = data.draw(st.integers(0, max(len(out) - 1, 0)), label="at")
        if op == "flip" and out:
            out[at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        elif op == "overwrite" and out:
            chunk = data.draw(st.binary(min_size=1, max_size=16), label="bytes")
            out[at : at + len(chunk)] = chunk
        elif op == "truncate":
            del out[at:]
        elif op == "insert":
            out[at:at] = data.draw(st.binary(min_size=1, max_size=16), label="bytes")
        elif op == "delete":
            del out[at : at + data.draw(st.integers(1, 16), label="count")]
    return bytes(out)


def mutate_index(data: st.DataObject, content: bytes, array_keys: list[str]) -> tuple[bytes, bool]:
    """A JSON-level mutation of an index; returns the bytes and whether the checksum was redone."""
    document = mutate_json(data, json.loads(content), array_keys)
    reseal = data.draw(st.booleans(), label="reseal")
    if reseal and isinstance(document, dict) and "crc32c" in document:
        document["crc32c"] = Raw("__CRC__")
        text = dump(document)
        try:
            body = json.loads(text.replace("__CRC__", "0"))["checkpoint"]
            text = text.replace("__CRC__", str(_body_crc(body)))
        except (ValueError, KeyError, TypeError, RecursionError):
            reseal = False
            text = text.replace("__CRC__", "0")
        return text.encode("utf-8", "surrogatepass"), reseal
    return dump(document).encode("utf-8", "surrogatepass"), False


def mutate_safetensors_header(data: st.DataObject, content: bytes) -> bytes:
    """A JSON-level mutation of a safetensors header, and perhaps a wrong header length."""
    (n,) = struct.unpack("<Q", content[:8])
    header = json.loads(content[8 : 8 + n])
    if data.draw(st.booleans(), label="mutate header json"):
        header = mutate_json(data, header, [])
    text = dump(header).encode("utf-8", "surrogatepass")
    rest = content[8 + n :]
    length = data.draw(
        st.one_of(
            st.just(len(text)),
            st.sampled_from([0, 1, 7, 2**63, 2**64 - 1, 100_000_001]),
            st.integers(0, len(text) + len(rest) + 16),
        ),
        label="header length",
    )
    return struct.pack("<Q", length) + text + rest


# -- running the readers ---------------------------------------------------------------


@contextlib.contextmanager
def bounded_memory() -> Iterator[None]:
    """Fail when the block allocates over ``MAX_EXTRA_MEMORY`` (NumPy reports to tracemalloc)."""
    tracemalloc.start()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MAX_EXTRA_MEMORY, f"a reader allocated {peak} bytes"


def attempt(
    label: str, call: Callable[[], Any], allowed: tuple[type[BaseException], ...]
) -> tuple[bool, Any]:
    """Run a reader: ``(True, result)``, or ``(False, error)`` for an allowed typed error."""
    try:
        result = call()
    except PipestateError as err:
        if not isinstance(err, allowed):
            raise AssertionError(f"{label}: {type(err).__name__} is not expected: {err}") from err
        _event(f"{label}: {type(err).__name__}")
        return False, err
    _event(f"{label}: ok")
    return True, result


def _event(text: str) -> None:
    # Outcome statistics for --hypothesis-show-statistics; outside a hypothesis test, nothing.
    with contextlib.suppress(InvalidArgument):
        event(text)


def run_cli(argv: list[str]) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(argv)
    assert code in (0, 1, 2), code
    return code


def check_object_readers(
    directory: Path, original: Original, allowed: tuple[type[BaseException], ...], exact: bool
) -> None:
    """Call every reader on ``directory``'s checkpoint; ``exact``: success means original values."""
    path = str(directory / original.prefix)

    def restore(how: str) -> dict[str, Any]:
        fresh = build_model(2)
        ckpt = Checkpoint(model=fresh)
        _ = ckpt.save_counter  # the checkpoint has one
        if how == "restore":
            status = ckpt.restore(path)
        elif how == "read":
            status = ckpt.read(path)
        else:
            status = CheckpointableSaver(ckpt).restore(path)
        if exact:
            status.assert_consumed()
        status.expect_partial()
        return snapshot(fresh)

    for how in ("restore", "read", "saver"):
        ok, result = attempt(how, functools.partial(restore, how), allowed)
        if ok and exact:
            assert result == original.snapshot, how
    ok, result = attempt("list_variables", functools.partial(list_variables, path), allowed)
    if ok and exact:
        assert result == original.variables
    names = [
        "model/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE",  # an array, by key
        "model/pyrng/.ATTRIBUTES/STATE/internal",  # an array nested in a value
        "model/dense/kernel",  # a variable, by path
        "model/config/.ATTRIBUTES/VALUE",  # an inline value
    ]
    for name in names:
        ok, result = attempt("load_variable", functools.partial(load_variable, path, name), allowed)
        if ok and exact and name in original.values:
            assert _freeze(result) == original.values[name], name
    attempt("describe_tree", functools.partial(describe_tree, path), allowed)
    ok, result = attempt("verify", functools.partial(verify_checkpoint, path), allowed)
    if ok and exact:
        checked, problems = result  # damage may be reported rather than raised
        assert problems or checked == len(original.variables)
    original_path = str(original.directory / original.prefix)
    ok, result = attempt("diff", functools.partial(diff_checkpoints, path, original_path), allowed)
    if ok and exact:
        assert result == []
    attempt("ls", functools.partial(list_checkpoints, str(directory)), allowed)
    # The command itself: exit status 0, 1 (damage found) or 2 (unreadable), no traceback.
    run_cli(["inspect", path])
    run_cli(["verify", path])
    # A data shard is a safetensors file too: name-based restore reads it.
    shard = next(name for name in sorted(os.listdir(directory)) if ".data-" in name)
    attempt(
        "name-based restore of a shard",
        lambda: Checkpoint(model=build_model(2)).restore(str(directory / shard)).expect_partial(),
        (*allowed, CheckpointMismatchError, CheckpointKeyError),
    )


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="pipestate-fuzz-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# -- the tests -------------------------------------------------------------------------


@pytest.mark.timeout(TIMEOUT)
@FUZZ
@given(data=st.data())
def test_damaged_bytes_give_original_values_or_typed_errors(
    original: Original, data: st.DataObject
) -> None:
    """Byte-level damage to the index or a shard: nothing wrong is ever returned."""
    target = data.draw(st.sampled_from(sorted(original.files)), label="file")
    with scratch() as directory:
        for name, content in original.files.items():
            if name == target:
                content = mutate_bytes(data, content)
            (directory / name).write_bytes(content)
        with bounded_memory():
            check_object_readers(directory, original, (CorruptCheckpointError,), exact=True)


@pytest.mark.timeout(TIMEOUT)
@FUZZ
@given(data=st.data())
def test_hostile_index_json_gives_typed_errors(original: Original, data: st.DataObject) -> None:
    """JSON-level mutations of the index, often with a valid checksum: typed errors only."""
    index = f"{original.prefix}.index"
    keys = [name for name, _ in original.variables]
    content, resealed = mutate_index(data, original.files[index], keys)
    with scratch() as directory:
        for name, file_content in original.files.items():
            (directory / name).write_bytes(content if name == index else file_content)
        with bounded_memory():
            if resealed:
                # A consistent but different index may name other shards, values or objects.
                allowed: tuple[type[BaseException], ...] = (PipestateError,)
            else:
                allowed = (CorruptCheckpointError,)
            check_object_readers(directory, original, allowed, exact=not resealed)


@pytest.mark.timeout(TIMEOUT)
@FUZZ
@given(data=st.data())
def test_hostile_shard_header_gives_original_values_or_typed_errors(
    original: Original, data: st.DataObject
) -> None:
    """JSON-level mutations of a data shard's safetensors header and of its length prefix."""
    shards = sorted(name for name in original.files if ".data-" in name)
    target = data.draw(st.sampled_from(shards), label="shard")
    with scratch() as directory:
        for name, content in original.files.items():
            if name == target:
                content = mutate_safetensors_header(data, content)
            (directory / name).write_bytes(content)
        with bounded_memory():
            check_object_readers(directory, original, (CorruptCheckpointError,), exact=True)


def reference_arrays(path: Path) -> dict[str, tuple[str, tuple[int, ...], bytes]] | None:
    """What the reference safetensors reader sees in ``path``, or ``None`` when it refuses it."""
    try:
        return {k: _freeze(v) for k, v in safetensors.numpy.load_file(str(path)).items()}
    except Exception:  # the reference's errors are untyped; refusing is all that matters here
        return None


@pytest.mark.timeout(TIMEOUT)
@FUZZ
@given(data=st.data())
def test_damaged_name_based_file(named_file: bytes, data: st.DataObject) -> None:
    """A flat safetensors file, damaged: typed errors, or the values the file really holds."""
    if data.draw(st.booleans(), label="header-level"):
        content = mutate_safetensors_header(data, named_file)
    else:
        content = mutate_bytes(data, named_file)
    with scratch() as directory:
        file = directory / "weights.safetensors"
        file.write_bytes(content)
        path = str(file)
        reference = reference_arrays(file)
        allowed = (CorruptCheckpointError, CheckpointMismatchError, CheckpointKeyError)
        with bounded_memory():
            for how in ("restore", "read", "saver"):

                def restore(how: str = how) -> AutoTrackable:
                    fresh = build_model(2)
                    ckpt = Checkpoint(model=fresh)
                    if how == "restore":
                        ckpt.restore(path)
                    elif how == "read":
                        ckpt.read(path)
                    else:
                        CheckpointableSaver(ckpt).restore(path)
                    return fresh

                ok, fresh = attempt(how, restore, allowed)
                if ok and reference is not None:
                    got = snapshot(fresh)
                    for name, key in [
                        ("model/dense/kernel", "kernel"),
                        ("model/dense/bias", "bias"),
                        ("model/flags", "flags"),
                        ("model/layers/0", "layer0"),
                        ("model/buffer/VALUE", "buffer"),
                    ]:
                        if name in reference and reference[name][:2] == got[key][:2]:
                            assert got[key] == reference[name], name
            ok, result = attempt("list_variables", functools.partial(list_variables, path), allowed)
            if ok and reference is not None:
                assert [(n, list(reference[n][1])) for n in sorted(reference)] == result
            for name in NAMED:
                load = functools.partial(load_variable, path, name)
                ok, result = attempt("load_variable", load, allowed)
                if ok and reference is not None and name in reference:
                    assert _freeze(result) == reference[name], name
            attempt("describe_tree", functools.partial(describe_tree, path), allowed)
            attempt("verify", functools.partial(verify_checkpoint, path), allowed)
            attempt("diff", functools.partial(diff_checkpoints, path, path), allowed)
            for argv in (["inspect", path], ["verify", path], ["diff", path, path]):
                run_cli(argv)


def test_the_fuzzer_can_tell_a_wrong_value(original: Original, tmp_path: Path) -> None:
    """The oracle is not vacuous: a damaged value that slipped through would be caught."""
    for name, content in original.files.items():
        (tmp_path / name).write_bytes(content)
    check_object_readers(tmp_path, original, (CorruptCheckpointError,), exact=True)
    other = Checkpoint(model=build_model(3)).save(
        str(tmp_path / "ckpt"), options=CheckpointOptions(max_shard_bytes=40)
    )
    os.replace(other + ".index", tmp_path / f"{original.prefix}.index")
    with pytest.raises(AssertionError):
        check_object_readers(tmp_path, original, (CorruptCheckpointError,), exact=True)
