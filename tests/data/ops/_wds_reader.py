"""Reads tar shards in a process that may be killed: ``_wds_reader.py PATTERN CKPT OUT PAUSE``.

Every 3 samples it saves the iterator's state and the keys read so far into
CKPT (atomically: a temporary file, then a rename) and prints
``checkpoint <n>``, then pauses PAUSE seconds (time for the test to kill
it while it runs). Started again, it resumes from CKPT. At the end it
writes every key, in order, to OUT.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pipestate as ps


def main() -> None:
    pattern, checkpoint, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    pause = float(sys.argv[4])
    it = iter(ps.Dataset.from_webdataset(pattern, shuffle_shards=True, seed=11))
    keys: list[str] = []
    if checkpoint.exists():
        saved = json.loads(checkpoint.read_text())
        it.set_state(saved["state"])
        keys = saved["keys"]
        print(f"resumed at {len(keys)}", flush=True)
    for sample in it:
        keys.append(bytes(sample["__key__"]).decode())
        if len(keys) % 3 == 0:
            temporary = checkpoint.with_suffix(".tmp")
            temporary.write_text(json.dumps({"state": it.get_state(), "keys": keys}))
            os.replace(temporary, checkpoint)
            print(f"checkpoint {len(keys)}", flush=True)
            time.sleep(pause)
    out.write_text(json.dumps(keys))


if __name__ == "__main__":
    main()
