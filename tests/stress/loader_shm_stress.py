"""SIGKILL stress test of the Loader's shared memory: many more worker kills than the suite runs.

A child process reads a ``Loader`` while its workers are killed with SIGKILL:
with the ``fork`` context, in turn while creating a block, after writing one
and at a random moment; with ``forkserver``, at random moments. After every
death the child checks that no block of the iterator is left in ``/dev/shm``
and, at the end, that the elements read across all restores are exactly the
dataset's. This script then checks the child's stderr for resource-tracker
warnings ("leaked shared_memory") and ``/dev/shm`` for leftovers once the
child has exited, and prints the counts.

Not collected by pytest (the file name has no ``test_`` prefix). Linux only.
Run:

    python tests/stress/loader_shm_stress.py                  # 210 + 45 kills
    python tests/stress/loader_shm_stress.py --kills 600 --forkserver-kills 100 --seed 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def child(kills: int, forkserver_kills: int, seed: int) -> None:
    import pytest
    from tests.data.test_loader_shm import KillPlan, kill_loop

    results = {}
    with tempfile.TemporaryDirectory() as directory, pytest.MonkeyPatch.context() as patch:
        plan = KillPlan(Path(directory))
        plan.install(patch)
        began = time.monotonic()
        results["fork"] = kill_loop(kills, seed, plan=plan)
        results["fork"]["seconds"] = round(time.monotonic() - began, 1)
    began = time.monotonic()
    results["forkserver"] = kill_loop(forkserver_kills, seed + 1, context="forkserver")
    results["forkserver"]["seconds"] = round(time.monotonic() - began, 1)
    print(json.dumps(results), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=210, help="kills with the fork context")
    parser.add_argument("--forkserver-kills", type=int, default=45, help="kills with forkserver")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.kills, args.forkserver_kills, args.seed)
        return 0

    from pipestate.data import _shm

    command = [sys.executable, __file__, "--child", f"--kills={args.kills}"]
    command += [f"--forkserver-kills={args.forkserver_kills}", f"--seed={args.seed}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        print(done.stdout, done.stderr, sep="\n")
        print(f"FAILED: the child exited with {done.returncode}")
        return 1
    results = json.loads(done.stdout.strip().splitlines()[-1])
    time.sleep(0.5)  # let the resource tracker exit
    warnings = [line for line in done.stderr.splitlines() if "leaked" in line]
    tracker = [line for line in done.stderr.splitlines() if "resource_tracker" in line]
    total = 0
    print(
        f"{'context':<11} {'kills':>6} {'creating':>9} {'created':>8} {'anywhere':>9} "
        f"{'left/death':>10} {'left/close':>10} {'left/exit':>9} {'elements':>9} {'s':>6}"
    )
    for context, counts in results.items():
        kills = sum(counts.get(point, 0) for point in ("creating", "created", "anywhere"))
        total += kills
        left_at_exit = len(_shm.leftovers(counts["prefix"]))
        print(
            f"{context:<11} {kills:>6} {counts.get('creating', 0):>9} "
            f"{counts.get('created', 0):>8} {counts.get('anywhere', 0):>9} "
            f"{counts['blocks left after a death']:>10} {counts['blocks left after close']:>10} "
            f"{left_at_exit:>9} {counts['elements']:>9} {counts['seconds']:>6}"
        )
        if left_at_exit:
            tracker.append(f"{left_at_exit} blocks under {counts['prefix']} after exit")
    print(
        f"{total} worker kills; 'leaked' warnings: {len(warnings)}; "
        f"other resource-tracker lines: {len(tracker) - len(warnings)}"
    )
    for line in warnings + tracker:
        print("  ", line)
    return 1 if warnings or tracker else 0


if __name__ == "__main__":
    sys.exit(main())
