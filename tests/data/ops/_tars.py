"""Writing tar shards for the WebDataset tests, with the standard library's ``tarfile``."""

from __future__ import annotations

import io
import itertools
import tarfile
from collections.abc import Sequence
from typing import Any

import fsspec

Member = tuple[str, bytes | None]
"""A tar member: its name and data (``None``: a directory)."""


def sample_members(samples: Sequence[tuple[str, dict[str, bytes]]]) -> list[Member]:
    """The members of ``samples`` (key, fields), each field as ``<key>.<field>``."""
    return [(f"{key}.{field}", data) for key, fields in samples for field, data in fields.items()]


def tar_bytes(members: Sequence[Member], tar_format: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar archive of ``members`` in ``tar_format``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_tar(
    url: str,
    members: Sequence[Member],
    tar_format: int = tarfile.PAX_FORMAT,
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Writes a tar of ``members`` to ``url`` (a path or an fsspec URL); returns ``url``."""
    with fsspec.open(url, "wb", **(storage_options or {})) as f:
        f.write(tar_bytes(members, tar_format))
    return url


def make_samples(shard: int, count: int, fields: Sequence[str] = ("txt", "cls")) -> list[Any]:
    """``count`` samples of shard ``shard`` with the given fields (data varies by field)."""
    return [
        (
            f"s{shard:03d}/{i:04d}",
            {
                field: f"{field}:{shard}:{i}:".encode() * (1 + (i + j) % 3)
                for j, field in enumerate(fields)
            },
        )
        for i in range(count)
    ]


def write_shards(
    directory: str, counts: Sequence[int], storage_options: dict[str, Any] | None = None
) -> list[str]:
    """Shards ``shard-000.tar`` ... of ``counts[i]`` samples each, in ``directory``."""
    return [
        write_tar(
            f"{directory}/shard-{i:03d}.tar",
            sample_members(make_samples(i, n)),
            storage_options=storage_options,
        )
        for i, n in enumerate(counts)
    ]


def expected_samples(urls: Sequence[str], counts: Sequence[int]) -> list[dict[str, bytes]]:
    """The samples ``write_shards`` wrote, as plain dicts of bytes, in shard order."""
    return [
        {"__key__": key.encode(), "__url__": url.encode(), **fields}
        for i, (url, n) in enumerate(zip(urls, counts))
        for key, fields in make_samples(i, n)
    ]


def plain(sample: dict[str, Any]) -> dict[str, bytes]:
    """A sample's values as bytes (``np.bytes_`` and ``str`` alike), without ``__local_path__``."""
    return {
        k: v.encode() if isinstance(v, str) else bytes(v)
        for k, v in sample.items()
        if k != "__local_path__"
    }


_unique = itertools.count()


def unique_name() -> int:
    """A number never returned before in this process (fresh memory:// directories)."""
    return next(_unique)
