"""A training-like reader killed with SIGKILL by ``_sources.assert_resumes_after_sigkill``.

Usage: ``python _source_reader.py KIND PATH STATE_FILE``. Reads
``global_shuffle(seed=7).batch(4)`` of the source, prints each batch's ids as a
JSON line, and every third batch saves its iterator state (with the number of
batches read) to STATE_FILE atomically. When STATE_FILE exists at start, it
resumes from it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

import pipestate as ps


class ArraySource:
    """A map-style source over a ``.npy`` file of ids, read with ``__getitems__``."""

    def __init__(self, path: str) -> None:
        self._ids = np.load(path)

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, index: int) -> dict[str, object]:
        return {"id": self._ids[index], "text": f"row {index}"}

    def __getitems__(self, indices: list[int]) -> list[dict[str, object]]:
        return [self[i] for i in indices]


def source(kind: str, path: str) -> ps.Dataset:
    """The source of ``kind`` over the test data at ``path``."""
    if kind == "from_source":
        return ps.Dataset.from_source(ArraySource(path))
    if kind == "parquet":
        return ps.Dataset.from_parquet(path, columns=["id"])
    if kind == "arrow":
        return ps.Dataset.from_arrow(path, columns=["id"])
    if kind == "hf":
        return ps.Dataset.from_hf(path, columns=["id"])
    if kind == "array_record":
        return ps.Dataset.from_array_record(path).map(lambda record: np.int64(record.decode()))
    raise ValueError(f"unknown source kind {kind!r}")


def pipeline(kind: str, path: str) -> ps.Dataset:
    """What the reader reads."""
    return source(kind, path).global_shuffle(seed=7).batch(4)


def batch_ids(batch: object) -> list[int]:
    """The ids in a batch (a dict with ``"id"`` or an array of ids)."""
    values = batch["id"] if isinstance(batch, dict) else batch
    return [int(x) for x in np.asarray(values).ravel()]


def main() -> None:
    kind, path, state_file = sys.argv[1:4]
    iterator = iter(pipeline(kind, path))
    count = 0
    if Path(state_file).exists():
        saved = json.loads(Path(state_file).read_text())
        iterator.set_state(saved["state"])
        count = saved["count"]
    print(json.dumps({"start": count}), flush=True)
    for batch in iterator:
        count += 1
        print(json.dumps({"batch": count - 1, "ids": batch_ids(batch)}), flush=True)
        if count % 3 == 0:
            tmp = f"{state_file}.tmp"
            Path(tmp).write_text(json.dumps({"count": count, "state": iterator.get_state()}))
            os.replace(tmp, state_file)
            print(json.dumps({"saved": count}), flush=True)
        time.sleep(0.01)
    print(json.dumps({"end": count}), flush=True)


if __name__ == "__main__":
    main()
