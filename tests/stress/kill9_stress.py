"""SIGKILL stress test of CheckpointManager saves: many more trials than the test suite runs.

Each trial starts a child that restores the latest checkpoint and saves in a
loop, kills it with SIGKILL after a random delay, and checks that the latest
checkpoint restores with valid checksums and holds the last step whose save
returned (or the step whose save had committed when the kill came). With
``--s3`` the checkpoints go to a moto S3 server on loopback through s3fs.

Not collected by pytest (the file name has no ``test_`` prefix). Run:

    python tests/stress/kill9_stress.py                  # 500 trials, local disk
    python tests/stress/kill9_stress.py --trials 2000 --seed 7
    python tests/stress/kill9_stress.py --s3 --trials 100
"""

from __future__ import annotations

import argparse
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
    Writer,
    check_clean,
    kill_trial,
    restored_step,
    summarize,
)


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
    parser.add_argument("--trials", type=int, default=500)
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
    with tempfile.TemporaryDirectory(prefix="pipestate-kill9-") as tmp:
        if args.s3:
            server, storage_options = start_s3()
            from tests.checkpoint.conftest import BUCKET

            directory = f"s3://{BUCKET}/kill9-{args.seed}"
            max_delay = args.max_delay * 4  # S3 requests are slower
        else:
            directory = str(Path(tmp) / "run")
            max_delay = args.max_delay
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        writer = Writer(env=env, preload=("s3fs",) if args.s3 else ())
        start = time.monotonic()
        outcomes = []
        try:
            for i in range(args.trials):
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
                    )
                )
                if (i + 1) % 50 == 0:
                    print(f"{i + 1} trials, restored step {outcomes[-1].restored}", flush=True)
            if not args.s3:
                pid = writer.send(
                    mode="crash",
                    k=10**9,
                    dir=directory,
                    values=args.values,
                    shard_bytes=args.shard_bytes,
                    max_to_keep=args.max_to_keep,
                )
                lines, status = writer.until_exit(pid)
                assert status == 0, lines
                check_clean(Path(directory))
            final = restored_step(directory, args.values, storage_options)
        finally:
            writer.close()
            if server is not None:
                server.stop()
    seconds = time.monotonic() - start
    print(f"{args.trials} SIGKILL trials in {seconds:.1f} s ({'s3' if args.s3 else 'local'})")
    for outcome, count in sorted(summarize(outcomes).items()):
        print(f"  {count:5d}  {outcome}")
    print(f"final restored step: {final}; every trial restored a consistent checkpoint")
    return 0


if __name__ == "__main__":
    sys.exit(main())
