"""SIGKILL stress test of CheckpointManager saves: many more trials than the test suite runs.

Each trial starts a child that restores the latest checkpoint and saves in a
loop, kills it with SIGKILL after a random delay, and checks that the latest
checkpoint restores with valid checksums and holds the last step whose save
returned (or the step whose save had committed when the kill came).

Scenarios (``--scenario``, several allowed; default all):

* ``plain``: a new number per save.
* ``resave``: every step saved twice under the same number (replacing a
  checkpoint that exists).
* ``async``: saves in the background.
* ``two-writers``: while the child saves, a second process tries to save into
  the same directory; it must be refused with ``CheckpointLockedError``
  naming the child.

With ``--s3`` the checkpoints go to a moto S3 server on loopback through s3fs.
A sentinel directory next to the run is checked byte for byte at the end
(no file outside the directory is touched). Failed trials are counted, not
raised, and the script exits non-zero when there is any.

Not collected by pytest (the file name has no ``test_`` prefix). Run:

    python tests/stress/kill9_stress.py                  # 125 trials per scenario, local disk
    python tests/stress/kill9_stress.py --trials 500 --scenario resave --seed 7
    python tests/stress/kill9_stress.py --s3 --trials 50
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.checkpoint._crash import (  # noqa: E402
    Outcome,
    Writer,
    check_clean,
    kill_trial,
    restored_step,
)

SCENARIOS = ("plain", "resave", "async", "two-writers")


def digest(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` with the hash of its bytes."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def start_s3() -> tuple[Any, dict[str, Any]]:
    """A moto S3 server on a free loopback port with a bucket, and the options to reach it."""
    import logging
    import socket

    import boto3
    from moto.server import ThreadedMotoServer
    from tests.checkpoint.conftest import AWS_ENV, BUCKET

    os.environ.update(AWS_ENV)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }
    return server, options


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=125, help="trials per scenario")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=0.25, help="seconds before the kill")
    parser.add_argument("--values", type=int, default=200_000, help="float32 values saved")
    parser.add_argument("--shard-bytes", type=int, default=500_000)
    parser.add_argument("--max-to-keep", type=int, default=3)
    parser.add_argument("--s3", action="store_true", help="save to a moto S3 server via s3fs")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    server = None
    storage_options = None
    failures = 0
    with tempfile.TemporaryDirectory(prefix="pipestate-kill9-") as tmp:
        sentinel = Path(tmp) / "outside"
        sentinel.mkdir()
        (sentinel / "ckpt-1.index").write_bytes(b"not the manager's")
        (sentinel / "checkpoint").write_bytes(b'model_checkpoint_path: "ckpt-1"\n')
        before_outside = digest(sentinel)
        if args.s3:
            server, storage_options = start_s3()
            from tests.checkpoint.conftest import BUCKET

            base = f"s3://{BUCKET}/kill9-{args.seed}"
            max_delay = args.max_delay * 4  # S3 requests are slower
        else:
            base = str(Path(tmp) / "run")
            max_delay = args.max_delay
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        preload = ("s3fs",) if args.s3 else ()
        writer = Writer(env=env, preload=preload)
        second = Writer(env=env, preload=preload)
        start = time.monotonic()
        table = []
        try:
            for scenario in args.scenario or SCENARIOS:
                directory = f"{base}-{scenario}"
                outcomes: list[Outcome] = []
                errors: list[str] = []
                began = time.monotonic()
                for i in range(args.trials):
                    try:
                        outcomes.append(
                            kill_trial(
                                writer,
                                directory,
                                rng,
                                values=args.values,
                                shard_bytes=args.shard_bytes,
                                max_to_keep=args.max_to_keep,
                                max_delay=max_delay,
                                storage_options=storage_options,
                                resave=scenario == "resave",
                                background=scenario == "async",
                                second=second if scenario == "two-writers" else None,
                            )
                        )
                    except Exception as err:  # counted and reported, whatever it is
                        errors.append(f"{type(err).__name__}: {err}"[:300])
                        print(f"{scenario} trial {i}: FAILED {errors[-1]}", flush=True)
                    if (i + 1) % 50 == 0:
                        print(f"{scenario}: {i + 1} trials", flush=True)
                # One save to the end removes every leftover of the interrupted ones. It
                # numbers its checkpoint as the scenario does: a checkpoint committed but
                # not yet recorded when its writer was killed is replaced by the next save
                # of its number, and a save numbered otherwise would leave it in place.
                pid = writer.send(
                    mode="crash",
                    k=10**9,
                    resave=scenario == "resave",
                    dir=directory,
                    values=args.values,
                    shard_bytes=args.shard_bytes,
                    max_to_keep=args.max_to_keep,
                    storage_options=storage_options,
                )
                lines, status = writer.until_exit(pid)
                if status != 0:
                    errors.append(f"the clean save failed: {lines[-3:]}")
                    print(f"{scenario}: FAILED {errors[-1]}", flush=True)
                elif not args.s3:
                    try:
                        check_clean(Path(directory))
                    except AssertionError as err:
                        errors.append(str(err)[:300])
                        print(f"{scenario}: FAILED {errors[-1]}", flush=True)
                final = restored_step(
                    directory, args.values, storage_options, numbered_by_counter=None
                )
                failures += len(errors)
                table.append(
                    (scenario, args.trials, outcomes, errors, final, time.monotonic() - began)
                )
        finally:
            writer.close()
            second.close()
            if server is not None:
                server.stop()
        touched = digest(sentinel) != before_outside
    seconds = time.monotonic() - start
    where = "s3 (moto)" if args.s3 else "local disk"
    print(f"\nSIGKILL trials on {where}, seed {args.seed}, {seconds:.0f} s")
    print(
        "| scenario | trials | restored the last returned save | restored the save in flight "
        "| lost latest / inconsistent | final step |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    total = 0
    for scenario, trials, outcomes, errors, final, _ in table:
        last = sum(o.restored == o.last_returned for o in outcomes)
        total += trials
        print(
            f"| {scenario} | {trials} | {last} | {len(outcomes) - last} | {len(errors)} | {final} |"
        )
    print(
        f"{total} trials; failed trials: {failures}; files touched outside the directory: "
        f"{int(touched)}"
    )
    return 1 if failures or touched else 0


if __name__ == "__main__":
    sys.exit(main())
