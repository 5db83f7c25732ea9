"""The ``pipestate`` command: look inside checkpoints.

Usage::

    pipestate inspect PATH [--state NAME]
                                  the object tree with dtypes, shapes and sizes, and
                                  each input-pipeline state op by op (--state: one
                                  state as JSON)
    pipestate ls DIRECTORY        the checkpoints in a directory, the latest marked *
    pipestate verify PATH         read every value and check every checksum
    pipestate diff PATH_A PATH_B  objects and values that differ
    pipestate export PATH --torch OUT [--key KEY]
                                  one object's state dict as a plain safetensors
                                  file for ``model.load_state_dict`` (needs torch)
    pipestate verify-pipeline MODULE:FUNCTION [options]
                                  prove that a pipeline resumes exactly: restore it
                                  at many break points in fresh processes
    pipestate profile MODULE:FUNCTION [-n N] [--exact] [--plot OUT]
                                  time every op of a pipeline; name the bottleneck

Exit status: 0 on success, 1 when ``verify`` finds damage, ``diff`` finds
differences or ``verify-pipeline`` finds a divergence, 2 when a checkpoint
cannot be found or read, or for a usage error. Long commands show progress
on stderr when it is a terminal (``--progress`` / ``--no-progress``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pipestate.checkpoint._inspect import (
    describe_state,
    describe_tree,
    diff_checkpoints,
    list_checkpoints,
    verify_checkpoint,
)
from pipestate.errors import CheckpointError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipestate",
        description="Look inside pipestate checkpoints; verify and profile input pipelines.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    inspect = commands.add_parser("inspect", help="print the object tree of a checkpoint")
    inspect.add_argument("path", help="checkpoint prefix (e.g. ckpt/model-3) or safetensors file")
    inspect.add_argument(
        "--state",
        metavar="NAME",
        default=None,
        help="print the input-pipeline state saved under object path NAME (e.g. data) as JSON",
    )
    ls = commands.add_parser("ls", help="list the checkpoints in a directory")
    ls.add_argument("directory", help="directory or URL holding checkpoints")
    verify = commands.add_parser("verify", help="check every checksum of a checkpoint")
    verify.add_argument("path", help="checkpoint prefix or safetensors file")
    _progress_flag(verify)
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
    _add_pipeline_commands(commands)
    return parser


def _progress_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress on stderr (default: when stderr is a terminal)",
    )


def _add_pipeline_commands(commands: Any) -> None:
    target = "MODULE:FUNCTION (or FILE.py:FUNCTION): a function of no arguments returning a Dataset"
    check = commands.add_parser(
        "verify-pipeline",
        help="prove that a pipeline resumes exactly, restoring it in fresh processes",
    )
    check.add_argument("target", help=target)
    check.add_argument("-n", "--num-elements", type=int, default=200, help="reference length")
    check.add_argument(
        "--break-points", type=int, default=6, help="random break points, beyond the chosen ones"
    )
    check.add_argument("--seed", type=int, default=0, help="seed of the random break points")
    check.add_argument(
        "--processes", type=int, default=2, help="fresh processes sharing the break points"
    )
    check.add_argument(
        "--in-process", action="store_true", help="restore in this process (faster, weaker)"
    )
    check.add_argument(
        "--num-workers",
        default=None,
        metavar="N[,N...]",
        help="also restore into Loader(num_workers=N) for each N (random-access pipelines)",
    )
    check.add_argument(
        "--prefetch-factor", type=int, default=None, help="the Loader's prefetch_factor"
    )
    check.add_argument(
        "--no-rng-check",
        action="store_true",
        help="skip the runs under two global seeds that find global-RNG use",
    )
    check.add_argument(
        "--timeout", type=float, default=600.0, help="seconds a checking process may run"
    )
    _progress_flag(check)
    prof = commands.add_parser(
        "profile", help="time every op of a pipeline and name the bottleneck"
    )
    prof.add_argument("target", help=target)
    prof.add_argument("-n", "--num-elements", type=int, default=1000, help="elements to read")
    prof.add_argument(
        "--exact",
        action="store_true",
        help="time every call, also of ops cheaper than timing them (slower; no estimates)",
    )
    prof.add_argument(
        "--plot",
        metavar="OUT",
        default=None,
        help="also draw the op graph coloured by cost (.svg, .png; needs matplotlib)",
    )


def _show_progress(args: argparse.Namespace) -> bool:
    return sys.stderr.isatty() if args.progress is None else bool(args.progress)


def _load_target(spec: str) -> Any:
    # As `python -m` does: the current directory's modules can be named.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    from pipestate.testing._verify import load_function

    return load_function(spec)


def _user_code(target: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, where an error of the user's pipeline becomes a usage error."""
    try:
        return fn(*args, **kwargs)
    except (CheckpointError, OSError, ValueError, TypeError):
        raise
    except Exception as err:
        raise ValueError(f"the pipeline of {target} raised {type(err).__name__}: {err}") from err


def _build_target(target: str) -> Any:
    """The dataset ``MODULE:FUNCTION`` builds (its errors are usage errors)."""
    from pipestate.testing._verify import build_dataset

    fn = _load_target(target)
    return _user_code(target, build_dataset, fn, target)


def _verify_pipeline(args: argparse.Namespace) -> int:
    from pipestate.testing._verify import verify

    settings: list[dict[str, Any]] = []
    if args.num_workers is not None:
        try:
            counts = [int(n) for n in args.num_workers.split(",")]
        except ValueError:
            raise ValueError(
                f"--num-workers takes comma-separated integers (e.g. 0,2), got {args.num_workers!r}"
            ) from None
        extra = {} if args.prefetch_factor is None else {"prefetch_factor": args.prefetch_factor}
        settings = [{"num_workers": n, **extra} for n in counts]
    elif args.prefetch_factor is not None:
        raise ValueError("--prefetch-factor applies to the Loader: give --num-workers too")
    _build_target(args.target)
    report = _user_code(
        args.target,
        verify,
        args.target,
        num_elements=args.num_elements,
        break_points=args.break_points,
        seed=args.seed,
        fresh_process=not args.in_process,
        processes=args.processes,
        loader_settings=settings,
        check_global_rng=not args.no_rng_check,
        timeout=args.timeout,
        progress=_show_progress(args),
    )
    print(report.format())
    return 0 if report.holds else 1


def _profile(args: argparse.Namespace) -> int:
    from pipestate.data._profile import profile

    dataset = _build_target(args.target)
    report = _user_code(args.target, profile, dataset, args.num_elements, sampling=not args.exact)
    print(report.format())
    if args.plot is not None:
        report.plot(args.plot)
        print(f"op graph written to {args.plot}")
    return 0


def _export(args: argparse.Namespace) -> int:
    try:
        from pipestate.torch._export import export_state_dict
    except ImportError as err:
        print(f"pipestate export: error: --torch needs torch installed ({err})", file=sys.stderr)
        return 2
    parent = os.path.dirname(os.path.abspath(args.torch))
    if "://" not in args.torch and not os.path.isdir(parent):
        raise FileNotFoundError(
            f"cannot write {args.torch!r}: the directory {parent!r} does not exist"
        )
    names = export_state_dict(args.path, args.torch, key=args.key)
    print(f"{args.torch}: {len(names)} tensor(s) written")
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.command == "inspect":
        print(
            describe_tree(args.path)
            if args.state is None
            else describe_state(args.path, args.state)
        )
        return 0
    if args.command == "ls":
        lines = list_checkpoints(args.directory)
        print("\n".join(lines) if lines else f"no checkpoints in {args.directory!r}")
        return 0
    if args.command == "verify":
        checked, problems = verify_checkpoint(args.path, progress=_show_progress(args))
        if problems:
            for problem in problems:
                print(f"CORRUPT: {problem}")
            print(f"{args.path}: {len(problems)} problem(s), {checked} value(s) intact")
            return 1
        print(f"{args.path}: OK, {checked} value(s) verified")
        return 0
    if args.command == "export":
        return _export(args)
    if args.command == "verify-pipeline":
        return _verify_pipeline(args)
    if args.command == "profile":
        return _profile(args)
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
