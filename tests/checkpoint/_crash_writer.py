"""A checkpoint writer process for the crash tests, driven by JSON commands on stdin.

It imports pipestate once, then forks one child per command, so that many
SIGKILL trials cost a fork each rather than a Python start-up. Every command
is a JSON object with ``mode``, ``dir`` and the state's ``values`` (array
length), ``shard_bytes`` and ``max_to_keep``:

* ``run``: restore the latest checkpoint, then save forever, printing
  ``saving <step>`` before and ``saved <step> <path>`` after each save that
  returned. The driver kills the child with SIGKILL. Options: ``resave``
  saves every step twice under the number ``<step>``; ``async`` saves in
  the background (``saved <step>`` then means committed, printed once the
  next save has waited for it). A child that finds the directory locked by
  another writer prints ``locked <message>`` and exits.
* ``crash``: restore, then save once with the ``k``-th file operation (an
  ``fsync``, rename or unlink) replaced by ``os._exit``; each operation is
  announced first as ``op <n> <name> <file>``.
* ``second``: save (a step of 1000000) into a directory that another child
  is saving into, printing ``locked <message>`` when refused.
* ``fill``: save once with ``RLIMIT_FSIZE`` set to ``limit`` bytes (a full
  disk for files larger than that) and print the error as ``error <json>``.

The writer prints ``child <pid>`` after each fork and ``exit <pid> <status>``
when the child is gone (``-9`` for SIGKILL).

Usage: python _crash_writer.py [--preload MODULE ...]
       (commands on stdin, one per line; EOF ends it)
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
from typing import Any

import numpy as np

from pipestate.checkpoint import Checkpoint, CheckpointManager, CheckpointOptions, Variable
from pipestate.errors import CheckpointLockedError, CheckpointWriteError


def say(line: str) -> None:
    """One line to stdout, unbuffered (a killed child must not lose or repeat output)."""
    os.write(1, (line + "\n").encode())


def make_checkpoint(values: int) -> Checkpoint:
    """The saved state: a step, two arrays and a plain value that all derive from the step."""
    return Checkpoint(
        step=Variable(np.int64(0)),
        weights=Variable(np.zeros(values, np.float32)),
        bias=Variable(np.zeros(max(1, values // 4), np.float64)),
        note="step 0",
    )


def set_step(ckpt: Any, step: int) -> None:
    """Fill the state for ``step``."""
    ckpt.step.assign(step)
    ckpt.weights.assign(np.arange(ckpt.weights.shape[0], dtype=np.float32) + step)
    ckpt.bias.assign(np.full(ckpt.bias.shape, step * 0.5))
    ckpt.note = f"step {step}"


def _manager(command: dict[str, Any], ckpt: Checkpoint) -> CheckpointManager:
    return CheckpointManager(
        ckpt,
        command["dir"],
        max_to_keep=command["max_to_keep"],
        storage_options=command.get("storage_options"),
        enable_async=bool(command.get("async")),
    )


def _options(command: dict[str, Any]) -> CheckpointOptions:
    return CheckpointOptions(max_shard_bytes=command["shard_bytes"])


def _hook_file_operations(crash_at: int) -> None:
    """Announce every fsync, rename and unlink; exit at once before number ``crash_at``."""
    count = 0
    lock = threading.Lock()  # shards are written by several threads

    def hooked(name: str, real: Any) -> Any:
        def call(*args: Any) -> Any:
            nonlocal count
            target = {"fsync": _fd_name(args[0]), "replace": args[-1]}.get(name, args[0])
            with lock:
                count += 1
                say(f"op {count} {name} {os.path.basename(str(target))}")
                if count == crash_at:
                    os._exit(86)
            return real(*args)

        return call

    os.fsync = hooked("fsync", os.fsync)
    os.replace = hooked("replace", os.replace)
    os.unlink = hooked("unlink", os.unlink)


def _fd_name(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return f"fd{fd}"


def child(command: dict[str, Any]) -> None:
    """Run one command in a forked child."""
    ckpt = make_checkpoint(command["values"])
    mode = command["mode"]
    if mode == "fill":
        manager = _manager(command, ckpt)
        manager.restore_or_initialize()
        ckpt.big = Variable(np.ones(command["limit"], np.uint8))
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a dead process
        resource.setrlimit(resource.RLIMIT_FSIZE, (command["limit"], resource.RLIM_INFINITY))
        try:
            path = manager.save(options=_options(command))
        except CheckpointWriteError as err:
            error = {"type": type(err).__name__, "errno": err.errno, "message": str(err)}
            error["oserror"] = isinstance(err, OSError)
            say("error " + json.dumps(error))
        else:
            say(f"saved - {path}")
        return
    if mode == "second":
        # A second writer on a directory another process is saving into: it must be refused.
        manager = _manager(command, ckpt)
        set_step(ckpt, 10**6)
        for _ in range(command.get("saves", 3)):
            try:
                path = manager.save(options=_options(command))
            except CheckpointLockedError as err:
                say(f"locked {err}".replace("\n", " "))
                return
            say(f"second writer saved {path}")
        return
    manager = _manager(command, ckpt)
    manager.restore_or_initialize()
    step = int(ckpt.step.numpy())
    say(f"ready {os.getpid()} {step}")
    if mode == "crash":
        _hook_file_operations(command["k"])
    resave = bool(command.get("resave"))
    background = bool(command.get("async"))
    while True:
        step += 1
        set_step(ckpt, step)
        for _ in range(2 if resave else 1):
            say(f"saving {step}")
            try:
                path = manager.save(
                    checkpoint_number=step if resave else None, options=_options(command)
                )
            except CheckpointLockedError as err:
                say(f"locked {err}".replace("\n", " "))
                return
            if background:
                # This save waited for the previous one to commit.
                say(f"saved {step - 1} (committed)")
            else:
                say(f"saved {step} {path}")
        if mode == "crash":
            return


def main() -> None:
    # Modules to import once here rather than in every child (``--preload s3fs``).
    for name in sys.argv[sys.argv.index("--preload") + 1 :] if "--preload" in sys.argv else ():
        importlib.import_module(name)
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                child(command)
            except BaseException as err:
                say(f"failed {type(err).__name__}: {err}".replace("\n", " "))
                code = 1
            os._exit(code)
        say(f"child {pid}")
        _, status = os.waitpid(pid, 0)
        say(f"exit {pid} {os.waitstatus_to_exitcode(status)}")


if __name__ == "__main__":
    main()
