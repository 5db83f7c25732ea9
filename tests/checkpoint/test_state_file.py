from __future__ import annotations

from pathlib import Path

import pytest

from pipestate.checkpoint._paths import resolve_checkpoint_path
from pipestate.checkpoint._state_file import (
    CheckpointState,
    format_state,
    parse_state,
    read_state_file,
    write_state_file,
)
from pipestate.errors import CorruptCheckpointError


def test_format_is_tensorflow_text_format() -> None:
    state = CheckpointState("ckpt-3", ["ckpt-2", "ckpt-3"], [10.5, 20.25], 1.0)
    assert format_state(state) == (
        'model_checkpoint_path: "ckpt-3"\n'
        'all_model_checkpoint_paths: "ckpt-2"\n'
        'all_model_checkpoint_paths: "ckpt-3"\n'
        "all_model_checkpoint_timestamps: 10.5\n"
        "all_model_checkpoint_timestamps: 20.25\n"
        "last_preserved_timestamp: 1.0\n"
    )
    assert parse_state(format_state(state)) == state


def test_odd_characters_are_escaped() -> None:
    state = CheckpointState('we"ird\\name\n-1', ['we"ird\\name\n-1'])
    assert parse_state(format_state(state)) == state
    assert parse_state('model_checkpoint_path: "a\\101b"').model_checkpoint_path == "aAb"


def test_read_and_write_in_a_directory(tmp_path: Path) -> None:
    assert read_state_file(str(tmp_path)) is None
    write_state_file(str(tmp_path / "sub"), CheckpointState("ckpt-1", ["ckpt-1"]))
    assert read_state_file(str(tmp_path / "sub")) == CheckpointState("ckpt-1", ["ckpt-1"])
    write_state_file("memory://state-test", CheckpointState("m-2", ["m-1", "m-2"]))
    assert read_state_file("memory://state-test") == CheckpointState("m-2", ["m-1", "m-2"])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        pytest.param("", "no model_checkpoint_path", id="empty"),
        pytest.param(
            "model_checkpoint_path: ckpt-1", "expected a double-quoted string", id="unquoted"
        ),
        pytest.param(
            'model_checkpoint_path: "a"\nfoo: "b"', "line 2: unknown field 'foo'", id="field"
        ),
        pytest.param(
            'model_checkpoint_path: "a"\nmodel_checkpoint_path: "b"', "given twice", id="twice"
        ),
        pytest.param('model_checkpoint_path: "a\\q"', "unknown escape", id="escape"),
        pytest.param('model_checkpoint_path: "a"b"', "unescaped quote", id="quote"),
        pytest.param("garbage", "line 1: cannot parse 'garbage'", id="garbage"),
        pytest.param(
            'model_checkpoint_path: "a"\nall_model_checkpoint_timestamps: nan',
            "expected a finite number",
            id="nan",
        ),
        pytest.param(
            'model_checkpoint_path: "a"\nall_model_checkpoint_timestamps: x',
            "expected a number, got 'x'",
            id="not-number",
        ),
        pytest.param(
            'model_checkpoint_path: "a"\nall_model_checkpoint_paths: "a"\n'
            "all_model_checkpoint_timestamps: 1\nall_model_checkpoint_timestamps: 2",
            "2 timestamps for 1 checkpoint paths",
            id="unpaired",
        ),
    ],
)
def test_malformed_state_raises(text: str, match: str) -> None:
    with pytest.raises(CorruptCheckpointError, match=match):
        parse_state(text)


def test_unreadable_state_file_raises(tmp_path: Path) -> None:
    (tmp_path / "checkpoint").write_bytes(b"\xff\xfe")
    with pytest.raises(CorruptCheckpointError, match="not UTF-8 text"):
        read_state_file(str(tmp_path))


@pytest.mark.parametrize(
    ("directory", "path", "expected"),
    [
        pytest.param("/a/b", "ckpt-1", "/a/b/ckpt-1", id="relative"),
        pytest.param("/a/b", "/c/ckpt-1", "/c/ckpt-1", id="absolute"),
        pytest.param("memory://x", "ckpt-1", "memory://x/ckpt-1", id="url-dir"),
        pytest.param("/a", "s3://b/ckpt-1", "s3://b/ckpt-1", id="url-path"),
    ],
)
def test_resolve_checkpoint_path(directory: str, path: str, expected: str) -> None:
    assert resolve_checkpoint_path(directory, path) == expected
