"""The ``pipestate`` command: look inside checkpoints.

Usage::

    pipestate inspect PATH        the object tree with dtypes, shapes and sizes
    pipestate ls DIRECTORY        the checkpoints in a directory, the latest marked *
    pipestate verify PATH         read every value and check every checksum
    pipestate diff PATH_A PATH_B  objects and values that differ
    pipestate export PATH --torch OUT [--key KEY]
                                  one object's state dict as a plain safetensors
                                  file for ``model.load_state_dict`` (needs torch)

Exit status: 0 on success, 1 when ``verify`` finds damage or ``diff`` finds
differences, 2 when a checkpoint cannot be found or read.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipestate.checkpoint._inspect import (
    describe_tree,
    diff_checkpoints,
    list_checkpoints,
    verify_checkpoint,
)
from pipestate.errors import CheckpointError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipestate", description="Look inside pipestate checkpoints."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    inspect = commands.add_parser("inspect", help="print the object tree of a checkpoint")
    inspect.add_argument("path", help="checkpoint prefix (e.g. ckpt/model-3) or safetensors file")
    ls = commands.add_parser("ls", help="list the checkpoints in a directory")
    ls.add_argument("directory", help="directory or URL holding checkpoints")
    verify = commands.add_parser("verify", help="check every checksum of a checkpoint")
    verify.add_argument("path", help="checkpoint prefix or safetensors file")
    diff = commands.add_parser("diff", help="compare two checkpoints")
    diff.add_argument("path_a", help="first checkpoint")
    diff.add_argument("path_b", help="second checkpoint")
    export = commands.add_parser(
        "export", help="write one object's state dict as a plain safetensors file"
    )
    export.add_argument("path", help="checkpoint prefix (e.g. ckpt/ckpt-3)")
    export.add_argument(
        "--torch",
        required=True,
        metavar="OUT",
        help="the safetensors file to write, loadable with safetensors.torch.load_file",
    )
    export.add_argument(
        "--key",
        default=None,
        help="path of the object in the checkpoint (e.g. model); by default the only one "
        "holding tensors",
    )
    return parser


def _export(args: argparse.Namespace) -> int:
    try:
        from pipestate.torch._export import export_state_dict
    except ImportError as err:
        print(f"pipestate export: error: --torch needs torch installed ({err})", file=sys.stderr)
        return 2
    names = export_state_dict(args.path, args.torch, key=args.key)
    print(f"{args.torch}: {len(names)} tensor(s) written")
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.command == "inspect":
        print(describe_tree(args.path))
        return 0
    if args.command == "ls":
        lines = list_checkpoints(args.directory)
        print("\n".join(lines) if lines else f"no checkpoints in {args.directory!r}")
        return 0
    if args.command == "verify":
        checked, problems = verify_checkpoint(args.path)
        if problems:
            for problem in problems:
                print(f"CORRUPT: {problem}")
            print(f"{args.path}: {len(problems)} problem(s), {checked} value(s) intact")
            return 1
        print(f"{args.path}: OK, {checked} value(s) verified")
        return 0
    if args.command == "export":
        return _export(args)
    lines = diff_checkpoints(args.path_a, args.path_b)
    if lines:
        print("\n".join(lines))
        return 1
    print("checkpoints are identical")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pipestate`` command on ``argv`` (default ``sys.argv[1:]``); return the exit status.

    Example:
        >>> main(["inspect", "ckpt/model-3"])  # doctest: +SKIP
    """
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (CheckpointError, OSError, ValueError, TypeError) as err:
        print(f"pipestate {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
