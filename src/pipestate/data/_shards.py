"""Shard lists: brace notation (``shard-{000..009}.tar``), globs and lists of URLs.

The brace notation is the one WebDataset's ``braceexpand`` implements (bash's,
with numeric and letter ranges, steps, zero padding, nested alternatives and
``\\`` escapes); it is rewritten here, about fifty lines, so reading shards
needs no package beyond fsspec.
"""

from __future__ import annotations

import itertools
import os
import re
import string
from collections.abc import Iterator, Mapping
from typing import Any

import fsspec
import numpy as np

from pipestate._validate import brief
from pipestate.data._files import to_path
from pipestate.data._remote import filesystem
from pipestate.errors import NotFoundError

_ALPHABET = string.ascii_uppercase + string.ascii_lowercase
_INT_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.-?(\d+))?$")
_CHAR_RANGE = re.compile(r"^([A-Za-z])\.\.([A-Za-z])(?:\.\.-?(\d+))?$")
_ESCAPE = re.compile(r"\\(.)")


def expand_braces(pattern: str) -> list[str]:
    """Every string the brace pattern stands for, in order (as ``braceexpand``).

    Raises:
      ValueError: unbalanced braces.
    """
    return [_ESCAPE.sub(r"\1", "".join(parts)) for parts in _pattern(pattern)]


def _pattern(pattern: str) -> Iterator[tuple[str, ...]]:
    start = pos = depth = 0
    items: list[Any] = []
    while pos < len(pattern):
        char = pattern[pos]
        if char == "\\":
            pos += 2
            continue
        if char == "{":
            if depth == 0 and pos > start:
                items.append([pattern[start:pos]])
                start = pos
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                expression = pattern[start + 1 : pos]
                expanded = _expression(expression)
                if expanded is None:  # not a range or a list: literal braces
                    items.extend([["{"], _flat(_pattern(expression)), ["}"]])
                else:
                    items.append(expanded)
                start = pos + 1
        pos += 1
    if depth != 0:
        raise ValueError(f"unbalanced braces in {pattern!r}")
    if start < pos:
        items.append([pattern[start:]])
    return (tuple(itertools.chain.from_iterable(p)) for p in itertools.product(*items))


def _flat(parts: Iterator[tuple[str, ...]]) -> list[tuple[str, ...]]:
    return list(parts)


def _expression(expression: str) -> list[Any] | None:
    match = _INT_RANGE.match(expression)
    if match:
        first, last, step_text = match.groups()
        padded = any(s.startswith(("0", "-0")) for s in (first, last) if s not in ("0", "-0"))
        width = max(len(first), len(last)) if padded else 0
        step = int(step_text or 1) or 1
        a, b = int(first), int(last)
        numbers = range(a, b + 1, step) if a < b else range(a, b - 1, -step)
        return [(f"{i:0{width}d}",) for i in numbers]
    match = _CHAR_RANGE.match(expression)
    if match:
        first, last, step_text = match.groups()
        step = int(step_text or 1) or 1
        a, b = _ALPHABET.index(first), _ALPHABET.index(last)
        if a < b:
            letters = _ALPHABET[a : b + 1 : step]
        else:
            letters = _ALPHABET[a : (b or -len(_ALPHABET)) - 1 : -step]
        return [(letter,) for letter in letters]
    return _alternatives(expression)


def _alternatives(expression: str) -> list[Any] | None:
    start = pos = depth = 0
    items: list[list[tuple[str, ...]]] = []
    while pos < len(expression):
        char = expression[pos]
        if char == "\\":
            pos += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(list(_pattern(expression[start:pos])))
            start = pos + 1
        pos += 1
    if depth != 0 or not items:
        return None
    items.append(list(_pattern(expression[start:])))
    return [alternative for item in items for alternative in item]


def shard_urls(urls: Any, op: str, storage_options: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The shard URLs ``urls`` names: a list (taken as it is), or a str brace-expanded and globbed.

    A glob is matched once, now; its matches are sorted.

    Raises:
      TypeError: ``urls`` is not a str, bytes, ``os.PathLike`` or a list / tuple of them.
      ValueError: an empty list, or unbalanced braces.
      NotFoundError: a glob matches no file.
    """
    if isinstance(urls, np.ndarray) and urls.ndim == 1:
        urls = list(urls)
    if isinstance(urls, (list, tuple)):
        if not urls:
            raise ValueError(f"{op}: urls is an empty list; pass at least one shard")
        return tuple(to_path(url, op) for url in urls)
    if not isinstance(urls, (str, bytes, os.PathLike, np.generic)):
        raise TypeError(
            f"{op}: urls must be a URL or path (str, bytes or os.PathLike; brace notation and "
            f"globs allowed) or a list or tuple of them, got {type(urls).__name__} "
            f"{brief(urls, 80)}"
        )
    pattern = to_path(urls, op)
    try:
        expanded = expand_braces(pattern)
    except ValueError as err:
        raise ValueError(f"{op}: {err}; escape a literal brace as '\\{{'") from None
    found: list[str] = []
    for url in expanded:
        fs, path = filesystem(url, storage_options)
        if not fsspec.core.has_magic(path):
            found.append(url)
            continue
        infos = fs.glob(path, detail=True)
        matches = sorted(p for p, info in infos.items() if info.get("type") != "directory")
        if not matches:
            raise NotFoundError(f"{op}: no shard matches {url!r}")
        protocol, _ = fsspec.core.split_protocol(url)
        found.extend(fs.unstrip_protocol(p) if protocol else p for p in matches)
    return tuple(found)
