"""pipestate demo: a pipeline read in one process continues exactly in another.

Process 1 reads a few batches of a shuffled, mapped, batched pipeline and
saves the iterator's state to a file. Process 2 is a fresh interpreter: it
rebuilds the pipeline, restores the state from the file, and reads on. The
demo checks that the two processes together saw exactly the batches of one
uninterrupted run, and how long the restore took.

Run: python examples/demo.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import pipestate as ps

BATCHES_BEFORE = 5
BATCHES_AFTER = 5


def build() -> ps.Dataset:
    """1M examples, globally shuffled each epoch, scaled, in batches of 4, for 3 epochs."""
    return (
        ps.Dataset.range(1_000_000)
        .global_shuffle(seed=2026)
        .map(lambda x: x * 10)
        .batch(4)
        .repeat(3)
    )


def first_process(state_file: Path) -> None:
    iterator = iter(build())
    for _ in range(BATCHES_BEFORE):
        print(json.dumps(next(iterator).tolist()))
    state_file.write_text(json.dumps(iterator.get_state()))


def second_process(state_file: Path) -> None:
    iterator = iter(build())
    start = time.perf_counter()
    iterator.set_state(json.loads(state_file.read_text()))
    restored = time.perf_counter()
    batches = [next(iterator).tolist()]
    first_batch = time.perf_counter()
    print(
        json.dumps(
            {"restore_seconds": restored - start, "first_batch_seconds": first_batch - restored}
        )
    )
    batches += [next(iterator).tolist() for _ in range(BATCHES_AFTER - 1)]
    for batch in batches:
        print(json.dumps(batch))


def run_child(phase: str, state_file: Path) -> list[str]:
    done = subprocess.run(
        [sys.executable, __file__, phase, str(state_file)],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.splitlines()


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        state_file = Path(tmp) / "iterator-state.json"
        before = [json.loads(line) for line in run_child("first", state_file)]
        state = json.loads(state_file.read_text())
        after_lines = run_child("second", state_file)
        timings = json.loads(after_lines[0])
        after = [json.loads(line) for line in after_lines[1:]]

    iterator = iter(build())
    reference = [next(iterator).tolist() for _ in range(BATCHES_BEFORE + BATCHES_AFTER)]
    print(f"pipeline: {build()!r}")
    print(f"process 1 read {len(before)} batches, first {before[0]}, and saved its state")
    print(f"  the state file holds {len(json.dumps(state))} bytes: {state['iterator']}")
    restore_ms = timings["restore_seconds"] * 1000
    first_ms = timings["first_batch_seconds"] * 1000
    print(
        f"process 2 restored it in {restore_ms:.2f} ms (set_state; the first batch after it "
        f"took {first_ms:.1f} ms) and read on: {after[0]} ..."
    )
    same = before + after == reference
    print(
        "the two processes together saw exactly the batches of one uninterrupted run: "
        + ("YES" if same else "NO")
    )
    seen = np.concatenate([np.array(b) for b in before + after])
    print(f"no example repeated: {'YES' if len(set(seen.tolist())) == len(seen) else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    if len(sys.argv) == 3:
        {"first": first_process, "second": second_process}[sys.argv[1]](Path(sys.argv[2]))
    else:
        sys.exit(main())
