"""The pipeline verifier: proves that a user's own pipeline resumes exactly, in fresh processes.

``verify(dataset_fn)`` builds the dataset from a zero-argument function,
reads it uninterrupted (the reference), saves real checkpoints of the
iterator at chosen break points, and restores each one in a process that
did not write it, comparing every element that follows with the reference.
That other process runs :func:`child_main` on a job file (``_CHILD``).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipestate._progress import Progress
from pipestate._validate import brief, check_bool, check_count, check_seconds
from pipestate.checkpoint import Checkpoint, CheckpointOptions
from pipestate.data._saveable import make_saveable_from_iterator
from pipestate.data.dataset import INFINITE_CARDINALITY, Dataset
from pipestate.data.iterator import DatasetIterator, State
from pipestate.data.loader import Loader
from pipestate.testing._verify_points import (
    choose_break_points,
    digest,
    first_difference,
    function_ops,
    op_at,
    show,
    state_entries,
    state_levels,
)
from pipestate.testing._verify_report import BreakPoint, Divergence, VerifyReport

__all__ = ["BreakPoint", "Divergence", "VerifyReport", "load_function", "verify"]

_LOADER_KEYS = ("num_workers", "prefetch_factor", "chunk_size", "multiprocessing_context")
_CHILD = (
    "import sys; from pipestate.testing._verify import child_main; "
    "sys.exit(child_main(sys.argv[1]))"
)
"""The checking process's program (``-c``: the module is imported once, under its own name)."""
_RESULT = "\x1epipestate-verify "
"""The prefix of a result line a checking process prints (user code may print too)."""
_SEEDS = (12345, 67890)
"""The global seeds of the two reference runs compared to find use of the global RNG."""
_ENTROPY = 0x5EED_0F_7E57
"""The seed every reference run gives ``seed=None`` ops, so that runs can be compared
(a restored iterator takes the saved seed from its state anyway)."""


# ---------------------------------------------------------- the function
def load_function(spec: str) -> Callable[[], Any]:
    """The function named by ``"module:function"`` or ``"path/to/file.py:function"``.

    ``function`` may be a dotted path inside the module (``"pkg.mod:Factory.build"``).

    Raises:
      ValueError: a ``spec`` without ``:``, or a module or function that can't be found.
      TypeError: the object named is not callable.
    """
    if not isinstance(spec, str) or spec.count(":") != 1 or spec.startswith(":"):
        raise ValueError(
            f"expected MODULE:FUNCTION (e.g. 'my_project.data:make_dataset') or "
            f"FILE.py:FUNCTION, got {brief(spec, 120)}"
        )
    where, name = spec.split(":")
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise ValueError(f"{spec}: no file {where!r}")
            module_name = f"_pipestate_verify_{path.stem}"
            if module_name in sys.modules:
                module: Any = sys.modules[module_name]
            else:
                loader_spec = importlib.util.spec_from_file_location(module_name, path)
                if loader_spec is None or loader_spec.loader is None:
                    raise ValueError(f"{spec}: can't load {where!r} as a Python module")
                module = importlib.util.module_from_spec(loader_spec)
                sys.modules[module_name] = module
                loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except ImportError as err:
        raise ValueError(
            f"{spec}: can't import {where!r} ({err}); run from the directory that holds it "
            "or put it on PYTHONPATH"
        ) from err
    value: Any = module
    for part in name.split("."):
        if not hasattr(value, part):
            raise ValueError(f"{spec}: {where!r} has no attribute {name!r}")
        value = getattr(value, part)
    if not callable(value):
        raise TypeError(f"{spec} must name a function returning a Dataset, got {brief(value, 80)}")
    return value  # type: ignore[no-any-return]


def _spec_of(fn: Callable[[], Any]) -> str:
    """The ``module:function`` another process imports ``fn`` by."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise ValueError(
            f"verify: {brief(fn, 80)} can't be imported by another process (a lambda or a "
            "local function); define it at module level, pass 'module:function', or use "
            "fresh_process=False"
        )
    if module == "__main__":
        main_file = getattr(sys.modules["__main__"], "__file__", None)
        if not main_file:
            raise ValueError(
                f"verify: {qualname} is defined in an interactive session; define it in a "
                "module and pass 'module:function', or use fresh_process=False"
            )
        return f"{main_file}:{qualname}"
    return f"{module}:{qualname}"


def build_dataset(fn: Callable[[], Any], target: str) -> Dataset:
    """``fn()``, checked to be a Dataset (``target`` names ``fn`` in the error)."""
    dataset = fn()
    if not isinstance(dataset, Dataset):
        raise TypeError(
            f"{target} must return a pipestate Dataset, got {type(dataset).__name__} "
            f"{brief(dataset, 80)}"
        )
    return dataset


# ------------------------------------------------------------ runs
class _GlobalSeeds:
    """Seeds ``random``, NumPy's global generator and torch's (if imported); restores them after."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._saved: list[tuple[Callable[[Any], Any], Any]] = []

    def __enter__(self) -> None:
        self._saved = [
            (random.setstate, random.getstate()),
            (np.random.set_state, np.random.get_state()),
        ]
        random.seed(self._seed)
        np.random.seed(self._seed)
        torch = sys.modules.get("torch")
        if torch is not None:
            self._saved.append((torch.set_rng_state, torch.get_rng_state()))
            torch.manual_seed(self._seed)

    def __exit__(self, *exc_info: object) -> None:
        for restore, state in self._saved:
            restore(state)


def _read(iterator: Iterator[Any], count: int) -> Iterator[Any]:
    for _ in range(count):
        try:
            yield next(iterator)
        except StopIteration:
            return


def _digests(fn: Callable[[], Any], target: str, count: int, seed: int) -> list[str]:
    """The digests of the first ``count`` elements of a fresh iterator, under a global seed."""
    with _GlobalSeeds(seed):
        it = _iterate(build_dataset(fn, target))
        try:
            return [digest(element) for element in _read(it, count)]
        finally:
            it.close()


def _iterate(dataset: Dataset) -> DatasetIterator:
    """A fresh iterator whose ``seed=None`` ops get the same seeds in every reference run."""
    return dataset._make_iterator(_ENTROPY if dataset._seedless_ops() else None)


def _state(iterator: DatasetIterator) -> State:
    return iterator.get_state(external_state_policy="ignore")


def _checkpoint_bytes(prefix: str) -> int:
    directory, name = os.path.split(prefix)
    return sum(
        os.path.getsize(os.path.join(directory, f))
        for f in os.listdir(directory)
        if f == f"{name}.index" or f.startswith(f"{name}.data-")
    )


@dataclasses.dataclass
class _Reference:
    digests: list[str]
    shown: dict[int, str]
    states: dict[int, dict[str, str]]
    checkpoints: dict[int, str]
    state_bytes: dict[int, int]
    save_seconds: dict[int, float]


def _reference(
    dataset: Dataset, count: int, points: Sequence[int], ended: bool, directory: str, bar: Progress
) -> _Reference:
    """Reads ``count`` elements, saving a real checkpoint of the iterator at each break point.

    The break point after the end is saved once the iterator has raised
    ``StopIteration``: an exhausted iterator must restore exhausted.
    """
    first = min(points)
    ref = _Reference([], {}, {}, {}, {}, {})
    it = _iterate(dataset)
    saveable = make_saveable_from_iterator(it, "ignore")
    options = CheckpointOptions(fsync=False)

    def save(position: int) -> None:
        ref.states[position] = state_entries(_state(it))
        if position not in points:
            return
        prefix = os.path.join(directory, f"at-{position}")
        started = time.perf_counter()
        Checkpoint(data=saveable).write(prefix, options=options)
        ref.save_seconds[position] = time.perf_counter() - started
        ref.state_bytes[position] = _checkpoint_bytes(prefix)
        if position not in ref.checkpoints:
            bar.update()
        ref.checkpoints[position] = prefix

    try:
        for position in range(count):
            if position >= first:
                save(position)
            try:
                element = next(it)
            except StopIteration:
                break
            ref.digests.append(digest(element))
            if position >= first:
                ref.shown[position] = show(element)
        end = len(ref.digests)
        if ended:
            # Exhaust the iterator (a no-op when it just raised StopIteration); an
            # element here means this run is longer than the first, which the caller sees.
            ref.digests.extend(digest(element) for element in _read(it, 1))
        save(end)
    finally:
        it.close()
    return ref


# -------------------------------------------------- the checking process
def _restored_iterator(dataset: Dataset, setting: Mapping[str, Any]) -> DatasetIterator:
    if not setting:
        return iter(dataset)
    return iter(Loader(dataset, **setting))


def check_break_point(
    fn: Callable[[], Any], target: str, job: Mapping[str, Any], reference: Mapping[str, Any]
) -> dict[str, Any]:
    """Restores one break point from its checkpoint and compares the elements after it.

    Runs in the checking process (or in this one, in-process mode). Returns
    a JSON-able result: elements matched, restore time, and at the first
    difference the element's index, its value and the first differing state entry.
    """
    position: int = job["position"]
    digests: list[str] = reference["digests"]
    states: Mapping[str, dict[str, str]] = reference["states"]
    ended: bool = reference["ended"]
    result: dict[str, Any] = {"position": position, "setting": job["label"], "elements": 0}
    it: DatasetIterator | None = None
    try:
        it = _restored_iterator(build_dataset(fn, target), job["setting"])
        started = time.perf_counter()
        Checkpoint(data=make_saveable_from_iterator(it, "ignore")).read(
            job["checkpoint"]
        ).assert_consumed()
        result["restore_seconds"] = time.perf_counter() - started
        if reference["unordered"]:
            _compare_unordered(it, digests[position:], result)
            return result
        for index in range(position, len(digests) + (1 if ended else 0)):
            entries = state_entries(_state(it))
            expected_state = states.get(str(index))
            differs = (
                first_difference(expected_state, entries) if expected_state is not None else None
            )
            try:
                element = next(it)
            except StopIteration:
                if index == len(digests):
                    break  # the reference ended here too
                result.update(element=index, actual="end of data", state_path=differs)
                return result
            if index == len(digests):  # the reference ended before this element
                result.update(element=index, actual=show(element), state_path=differs)
                return result
            if digest(element) != digests[index]:
                result.update(element=index, actual=show(element), state_path=differs)
                return result
            result["elements"] += 1
    except Exception:
        result["error"] = traceback.format_exc(limit=12)
    finally:
        if it is not None:
            it.close()
    return result


def _compare_unordered(it: DatasetIterator, expected: list[str], result: dict[str, Any]) -> None:
    """A run with ``deterministic=False``: the rest of the data, in any order, exactly once."""
    got = [digest(element) for element in it]
    if sorted(got) == sorted(expected):
        result["elements"] = len(got)
        return
    missing = len(set(expected) - set(got))
    result.update(
        element=result["position"],
        actual=f"{len(got)} elements, {missing} of the reference's missing (in any order)",
        state_path=None,
    )


def child_main(job_path: str) -> int:
    """The checking process: runs the break points of a job file, printing one result each."""
    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    target = job["target"]
    fn = load_function(target)
    with open(job["reference"], encoding="utf-8") as f:
        reference = json.load(f)
    for point in job["points"]:
        result = check_break_point(fn, target, point, reference)
        sys.stdout.write(_RESULT + json.dumps(result) + "\n")
        sys.stdout.flush()
    return 0


def _run_process(
    job_path: str, timeout: float | None, on_result: Callable[[dict[str, Any]], None]
) -> str | None:
    """Runs one checking process; returns an error text when it failed as a whole."""
    env = dict(os.environ)
    # The child imports the target as this process did, with string hashing
    # randomised as in any new process (set order must not matter).
    env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
    env["PYTHONHASHSEED"] = "random"
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as errors:
        process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, job_path],
            stdout=subprocess.PIPE,
            stderr=errors,
            env=env,
            text=True,
            errors="replace",
        )
        # A process that hangs prints nothing: a timer stops it, ending the reads below.
        timer = None if timeout is None else threading.Timer(timeout, process.kill)
        if timer is not None:
            timer.daemon = True
            timer.start()
        assert process.stdout is not None
        try:
            for line in process.stdout:
                if line.startswith(_RESULT):
                    on_result(json.loads(line[len(_RESULT) :]))
            code = process.wait()
        finally:
            if timer is not None:
                timer.cancel()
        if timer is not None and timer.finished.is_set() and code != 0:
            return f"the checking process ran past timeout={timeout} s and was stopped"
        if code != 0:
            errors.seek(0)
            tail = errors.read()[-3000:]
            return f"the checking process exited with status {code}:\n{tail}"
    return None


# ----------------------------------------------------------- the verifier
def _check_settings(dataset: Dataset, settings: Any) -> list[dict[str, Any]]:
    if isinstance(settings, Mapping) or not isinstance(settings, Sequence):
        raise TypeError(
            f"verify: loader_settings must be a list of dicts of Loader arguments "
            f"(e.g. [{{'num_workers': 2}}]), got {brief(settings, 120)}"
        )
    out: list[dict[str, Any]] = []
    for setting in settings:
        if not isinstance(setting, Mapping) or not all(isinstance(k, str) for k in setting):
            raise TypeError(
                f"verify: each loader setting must be a dict of Loader arguments, got "
                f"{brief(setting, 120)}"
            )
        unknown = sorted(set(setting) - set(_LOADER_KEYS))
        if unknown:
            raise ValueError(
                f"verify: unknown Loader setting(s) {unknown}; use {list(_LOADER_KEYS)}"
            )
        if dataset._random_access:
            Loader(dataset, **setting).close()  # the Loader's own argument checks
        out.append(dict(setting))
    return out


def _unordered(dataset: Dataset) -> bool:
    """Whether an op delivers elements in whatever order they are ready (deterministic=False)."""
    stack = [dataset]
    while stack:
        node = stack.pop()
        background = node._background()
        if background is not None and background.reorder:
            return True
        stack.extend(node._parents)
    return False


def _order(digests: list[str], unordered: bool) -> list[str]:
    return sorted(digests) if unordered else digests


def _count(name: str, value: Any, minimum: int) -> int:
    number = check_count(f"verify: {name}", value, minimum=minimum, allow_none=False)
    assert number is not None  # allow_none=False
    return number


def _label(setting: Mapping[str, Any]) -> str:
    if not setting:
        return "iter(dataset)"
    return "Loader(" + ", ".join(f"{k}={v!r}" for k, v in sorted(setting.items())) + ")"


def _explain(
    position: int, state_path: str | None, actual: str, suspects: Sequence[str], process: bool
) -> str:
    where = "in another process" if process else "after a restore"
    if state_path is not None:
        return (
            "The saved position itself differs from the reference's before this element: the "
            "op named above restores to another place than the one it saved. If it is one of "
            "pipestate's ops, please report it with this pipeline."
        )
    if actual == "end of data":
        cause = "the resumed run ended before the reference did"
    else:
        cause = "the states agree but the element differs"
    suspects_text = ", ".join(suspects) if suspects else "the sources"
    if position == 0:
        return (
            f"Even a fresh start {where} differs from the reference ({cause}): the pipeline "
            "depends on something that changes from process to process — set or dict order "
            "of strings (hash randomisation), os.listdir order, time, unseeded randomness. "
            f"Sort file lists and derive randomness from a seed. Suspects: {suspects_text}."
        )
    return (
        f"{cause.capitalize()}: an op's output depends on state pipestate does not save — a "
        "function with a hidden counter or cache, randomness drawn from a global or unseeded "
        "generator, a generator that can't replay its elements. Make the function pure "
        "(derive randomness from the element, e.g. ps.Dataset.enumerate() and a seed), or "
        f"declare it with stateful=True. Suspects: {suspects_text}."
    )


def verify(
    dataset_fn: Callable[[], Dataset] | str,
    *,
    num_elements: int = 200,
    break_points: int = 6,
    seed: int = 0,
    fresh_process: bool = True,
    processes: int = 2,
    loader_settings: Sequence[Mapping[str, Any]] = (),
    check_global_rng: bool = True,
    timeout: float | None = 600.0,
    progress: bool = False,
) -> VerifyReport:
    """Proves that ``dataset_fn()``'s pipeline resumes exactly, or shows where it does not.

    Builds the dataset, reads ``num_elements`` elements uninterrupted (the
    reference), and saves a real checkpoint (``pipestate.Checkpoint``) of the
    iterator at each break point: the start, the first element, repeat
    boundaries, inside and at the end of shuffle buffers, the last element,
    after the end, and ``break_points`` random positions. Each checkpoint is
    read back in a fresh process (``python -m``, string hashing randomised)
    that imports ``dataset_fn`` and compares every following element with
    the reference, exactly: structure, dtypes, shapes and values. Two more
    reference runs under different global seeds (``random``, NumPy's global
    generator, torch's when imported) find functions that use the global
    RNG, and state that survives between runs in one process.

    Args:
      dataset_fn: a zero-argument function returning the Dataset, or its
        name ``"module:function"`` / ``"file.py:function"``. In fresh-process
        mode a function must be importable (defined at module level).
      num_elements: elements of the reference run (fewer if the data ends).
      break_points: random break points, beyond the chosen ones.
      seed: seeds the choice of random break points.
      fresh_process: restore in fresh processes; ``False`` restores in this
        process (faster; misses state that differs between processes).
      processes: how many fresh processes share the break points (each
        process's first break point is restored in a pristine interpreter).
      loader_settings: also restore each break point into
        ``Loader(dataset, **setting)`` for each setting (e.g.
        ``[{"num_workers": 2}, {"num_workers": 0, "prefetch_factor": 4}]``);
        only for random-access pipelines (a note says when they are skipped).
      check_global_rng: run the reference under two global seeds.
      timeout: seconds a checking process may run, or ``None``.
      progress: show progress on stderr (tqdm when installed).

    Returns:
      A :class:`VerifyReport`; ``report.holds`` is true when it resumes exactly.

    Raises:
      TypeError: bad argument types, or ``dataset_fn`` does not return a Dataset.
      ValueError: out-of-range arguments, a name that can't be imported, or a
        function another process can't import in fresh-process mode.

    Example:
      >>> report = ps.data.verify("my_project.data:make_dataset")  # doctest: +SKIP
      >>> assert report.holds, report
    """
    count = _count("num_elements", num_elements, 1)
    random_count = _count("break_points", break_points, 0)
    workers = _count("processes", processes, 1)
    choice_seed = _count("seed", seed, 0)
    fresh = bool(check_bool("fresh_process", fresh_process, op="verify"))
    check_rng = bool(check_bool("check_global_rng", check_global_rng, op="verify"))
    show_progress = bool(check_bool("progress", progress, op="verify"))
    limit = check_seconds("verify: timeout", timeout)
    if isinstance(dataset_fn, str):
        target = dataset_fn
        fn = load_function(target)
    elif callable(dataset_fn):
        fn = dataset_fn
        target = _spec_of(fn) if fresh else getattr(fn, "__qualname__", repr(fn))
    else:
        raise TypeError(
            f"verify: dataset_fn must be a function returning a Dataset or 'module:function', "
            f"got {type(dataset_fn).__name__} {brief(dataset_fn, 80)}"
        )
    dataset = build_dataset(fn, target)
    settings = [{}, *_check_settings(dataset, loader_settings)]
    notes: list[str] = []
    if len(settings) > 1 and not dataset._random_access:
        notes.append(
            "loader_settings skipped: Loader reads random-access pipelines only, and this one "
            "has a streaming op"
        )
        settings = [{}]
    if dataset.cardinality() == INFINITE_CARDINALITY:
        notes.append(f"the pipeline is infinite: the first {count} elements are checked")
    unordered = _unordered(dataset)

    with Progress(None, f"verifying {target}", unit="steps", enabled=show_progress) as bar:
        # One element more than asked: whether the data ends right after num_elements.
        first_run = _digests(fn, target, count + 1, _SEEDS[0])
        ended = len(first_run) <= count
        first_run = first_run[:count]
        elements = len(first_run)
        if unordered:
            if not ended:
                raise ValueError(
                    f"verify: {target} has a map(deterministic=False), whose order varies: it is "
                    f"checked as the rest of the data in any order, which needs the whole data; "
                    f"it has more than num_elements={count} elements: raise num_elements"
                )
            notes.append(
                "deterministic=False: each resumed run is compared with the rest of the "
                "reference in any order"
            )
        points = choose_break_points(dataset, elements, ended, random_count, choice_seed)
        jobs_total = len(points) * len(settings)
        bar.set_total(len(points) + jobs_total + (1 if check_rng else 0))
        bar.note("reference run")
        with tempfile.TemporaryDirectory(prefix="pipestate-verify-") as directory:
            with _GlobalSeeds(_SEEDS[0]):
                ref = _reference(
                    build_dataset(fn, target), count, list(points), ended, directory, bar
                )
            findings: list[str] = []
            if _order(ref.digests, unordered) != _order(first_run, unordered):
                findings.append(
                    "two runs in one process, under the same global seeds, gave different "
                    "elements: they depend on something besides the pipeline's definition and "
                    "position (unseeded randomness, a module-level counter or cache, a generator "
                    "shared between iterators, time)"
                )
            if check_rng:
                bar.note("global RNG check")
                other = _digests(fn, target, count, _SEEDS[1])
                bar.update()
                if _order(other, unordered) != _order(first_run, unordered) and not findings:
                    torch_note = ", torch" if "torch" in sys.modules else ""
                    findings.append(
                        "the elements change with the global random seed (random, "
                        f"numpy.random{torch_note}): a function draws from a global generator, "
                        "which no checkpoint restores. Derive randomness from the element and a "
                        "seed (np.random.default_rng([seed, index]) in a map over enumerate()), "
                        f"or use the seeded ops (shuffle, global_shuffle). Suspects: "
                        f"{', '.join(function_ops(dataset)) or 'the sources'}"
                    )
            reference = {
                "digests": ref.digests,
                "states": {str(p): s for p, s in ref.states.items()},
                "ended": ended,
                "unordered": unordered,
            }
            jobs: list[dict[str, Any]] = [
                {
                    "position": position,
                    "checkpoint": ref.checkpoints[position],
                    "setting": setting,
                    "label": _label(setting),
                }
                for position in points
                for setting in settings
            ]
            results: list[dict[str, Any]] = []

            def collect(result: dict[str, Any]) -> None:
                results.append(result)
                bar.note(f"break point {result['position']}")
                bar.update()

            groups = [jobs[i::workers] for i in range(workers)] if fresh else [jobs]
            groups = [group for group in groups if group]
            process_of: dict[tuple[int, str], int] = {}
            if fresh:
                reference_path = os.path.join(directory, "reference.json")
                with open(reference_path, "w", encoding="utf-8") as f:
                    json.dump(reference, f)
                for number, group in enumerate(groups):
                    for job in group:
                        process_of[int(job["position"]), str(job["label"])] = number
                    job_path = os.path.join(directory, f"job-{number}.json")
                    with open(job_path, "w", encoding="utf-8") as f:
                        json.dump(
                            {"target": target, "reference": reference_path, "points": group}, f
                        )
                    failure = _run_process(job_path, limit, collect)
                    if failure is not None:
                        done = {(r["position"], r["setting"]) for r in results}
                        results.extend(
                            {"position": j["position"], "setting": j["label"], "error": failure}
                            for j in group
                            if (j["position"], j["label"]) not in done
                        )
            else:
                for job in jobs:
                    collect(check_break_point(fn, target, job, reference))

    return _report(
        target, dataset, elements, ended, points, ref, results, findings, notes, process_of, fresh
    )


def _report(
    target: str,
    dataset: Dataset,
    elements: int,
    ended: bool,
    points: Mapping[int, str],
    ref: _Reference,
    results: list[dict[str, Any]],
    findings: list[str],
    notes: list[str],
    process_of: Mapping[tuple[int, str], int],
    fresh: bool,
) -> VerifyReport:
    levels = state_levels(dataset)
    suspects = function_ops(dataset)
    records: list[BreakPoint] = []
    divergence: Divergence | None = None
    for result in sorted(results, key=lambda r: (r["position"], r["setting"])):
        position = result["position"]
        bp = BreakPoint(
            position=position,
            reason=points[position],
            setting=result["setting"],
            process=process_of.get((position, result["setting"]), 0),
            elements=result.get("elements", 0),
            restore_seconds=result.get("restore_seconds", 0.0),
            diverged="element" in result,
            error=result.get("error"),
        )
        records.append(bp)
        if bp.diverged and (divergence is None or position < divergence.position):
            index = result["element"]
            path = result.get("state_path")
            expected = "end of data" if index >= len(ref.digests) else ref.shown[index]
            divergence = Divergence(
                position=position,
                reason=bp.reason,
                setting=bp.setting,
                element=index,
                expected=expected,
                actual=result["actual"],
                op=None if path is None else op_at(path, levels),
                explanation=_explain(position, path, result["actual"], suspects, fresh),
            )
    return VerifyReport(
        target=target,
        pipeline=repr(dataset),
        elements=elements,
        ended=ended,
        break_points=records,
        divergence=divergence,
        findings=findings,
        declared_external_state=list(dataset._external_ops()),
        state_bytes=[ref.state_bytes[p] for p in sorted(ref.state_bytes)],
        save_seconds=[ref.save_seconds[p] for p in sorted(ref.save_seconds)],
        notes=notes,
        fresh_processes=len({bp.process for bp in records}) if fresh else 0,
    )
