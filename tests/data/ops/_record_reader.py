"""A training-like reader of indexed record files, killed with SIGKILL by ``test_record.py``.

Usage: ``python _record_reader.py CHECKPOINT_DIR PAUSE_AT FILE...``. Reads
``RecordDataset(files).global_shuffle(seed=13).batch(5)``, prints each
batch's records as a JSON line, and every second batch saves the iterator
and the number of batches read with ``ps.Checkpoint`` and prints
``{"saved": n}``; after the save at batch PAUSE_AT it waits a minute (to be
killed there). When CHECKPOINT_DIR holds a checkpoint at start, it restores
the latest and prints ``{"start": n}``; at the end it prints ``{"end": n}``.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

import pipestate as ps


def pipeline(files: list[str]) -> ps.Dataset:
    """What the reader reads."""
    return ps.data.RecordDataset(files).global_shuffle(seed=13).batch(5)


def records(batch: object) -> list[str]:
    """A batch's records, as text."""
    return [bytes(record).decode() for record in np.asarray(batch).ravel()]


def main() -> None:
    directory, pause_at, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    iterator = iter(pipeline(files))
    count = ps.Variable(np.zeros((), np.int64))
    checkpoint = ps.Checkpoint(iterator=iterator, batches=count)
    latest = ps.latest_checkpoint(directory)
    if latest is not None:
        checkpoint.restore(latest).assert_consumed()
    print(json.dumps({"start": int(count.numpy())}), flush=True)
    for batch in iterator:
        count.assign_add(1)
        print(json.dumps({"records": records(batch)}), flush=True)
        if int(count.numpy()) % 2 == 0:
            checkpoint.save(f"{directory}/ckpt")
            print(json.dumps({"saved": int(count.numpy())}), flush=True)
            if int(count.numpy()) == pause_at:
                time.sleep(60)
    print(json.dumps({"end": int(count.numpy())}), flush=True)


if __name__ == "__main__":
    main()
