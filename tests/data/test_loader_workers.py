"""``Loader`` workers: start methods without the main module, persistence, init, collate_fn."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pipestate as ps
from pipestate.data import loader as loader_module

pytestmark = pytest.mark.timeout(120)

_initialised: list[int] = []


def remember_worker(worker_id: int) -> None:
    _initialised.append(worker_id)


def fail_to_start(worker_id: int) -> None:
    raise RuntimeError(f"worker {worker_id} has no GPU")


def who(x: np.int64) -> np.ndarray:
    info = loader_module.get_worker_info()
    assert info is not None
    return np.array(
        [
            x,
            os.getpid(),
            info.id,
            info.num_workers,
            info.seed - info.id,
            _initialised[-1] if _initialised else -1,
        ]
    )


def as_objects(batch: np.ndarray) -> dict[str, Any]:
    """A collate_fn returning what shared memory carries beside arrays: lists, text, numbers."""
    values = batch.tolist()
    return {
        "ids": values,
        "text": [f"#{v}" for v in values],
        "sum": float(sum(values)),
        "arr": batch * 2,
    }


def test_worker_info_seed_and_worker_init_fn() -> None:
    loader = ps.data.Loader(
        ps.Dataset.range(40).map(who),
        num_workers=2,
        chunk_size=3,
        worker_init_fn=remember_worker,
        worker_seed=100,
    )
    rows = np.stack(list(loader))
    assert rows[:, 0].tolist() == list(range(40))
    assert set(rows[:, 2].tolist()) == {0, 1}
    assert set(rows[:, 3].tolist()) == {2}
    assert set(rows[:, 4].tolist()) == {100}  # worker_seed + id
    assert (rows[:, 5] == rows[:, 2]).all()  # worker_init_fn(id) ran in that worker
    assert len(set(rows[:, 1].tolist())) == 2
    assert loader_module.get_worker_info() is None


def test_a_failing_worker_init_fn_is_raised_at_the_consumer() -> None:
    it = iter(ps.data.Loader(ps.Dataset.range(4), num_workers=1, worker_init_fn=fail_to_start))
    with pytest.raises(RuntimeError, match="has no GPU") as caught:
        next(it)
    assert any("while starting" in note for note in getattr(caught.value, "__notes__", []))
    with pytest.raises(RuntimeError, match="has no GPU"):
        next(it)  # sticky until the state is restored
    it.close()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_collate_fn_output_keeps_lists_text_and_numbers(num_workers: int) -> None:
    ds = ps.Dataset.range(10).batch(3)
    loader = ps.data.Loader(ds, num_workers=num_workers, collate_fn=as_objects, chunk_size=2)
    out = list(loader)
    assert out[0]["ids"] == [0, 1, 2]
    assert out[0]["text"] == ["#0", "#1", "#2"]
    assert out[3]["sum"] == 9.0
    assert isinstance(out[3]["sum"], float)
    np.testing.assert_array_equal(out[3]["arr"], [18])
    assert len(out) == 4


def test_persistent_workers_serve_every_iterator_until_close() -> None:
    loader = ps.data.Loader(
        ps.Dataset.range(30).map(who), num_workers=2, chunk_size=2, persistent_workers=True
    )
    first = np.stack(list(loader))
    pool = loader._pool
    assert pool is not None
    second = np.stack(list(loader))
    assert loader._pool is pool
    assert set(second[:, 1].tolist()) <= {proc.pid for proc in pool.procs}
    np.testing.assert_array_equal(first[:, 0], second[:, 0])
    it = iter(loader)
    for _ in range(7):
        next(it)
    state = it.get_state()
    resumed = iter(loader)  # takes the workers over
    resumed.set_state(state)
    assert [int(row[0]) for row in resumed] == list(range(7, 30))
    assert loader._pool is pool
    # The older iterator lost the workers: it continues exactly on workers of its own.
    assert [int(row[0]) for row in it] == list(range(7, 30))
    loader.close()
    assert not any(proc.is_alive() for proc in pool.procs)
    assert [int(row[0]) for row in loader] == list(range(30))  # new workers after close()
    loader.close()


def test_bad_new_arguments() -> None:
    ds = ps.Dataset.range(3)
    with pytest.raises(TypeError, match="collate_fn must be callable"):
        ps.data.Loader(ds, collate_fn=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="persistent_workers must be a bool"):
        ps.data.Loader(ds, persistent_workers="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="worker_seed must be >= 0"):
        ps.data.Loader(ds, worker_seed=-1)
    with pytest.raises(TypeError, match="multiprocessing_context must be"):
        ps.data.Loader(ds, multiprocessing_context=3)


SCRIPT = textwrap.dedent(
    """
    # No main guard: workers that ran this script would start loaders themselves.
    import gc, sys
    import numpy as np
    import pipestate as ps

    context = sys.argv[1]
    ds = ps.Dataset.range(200).batch(8)  # nothing defined in this script
    garbage = iter(ps.data.Loader(ds, num_workers=1, multiprocessing_context="fork"))
    next(garbage)
    garbage.cycle = garbage  # collected by gc only: a forked worker holds a copy of it
    del garbage
    loader = ps.data.Loader(ds, num_workers=2, multiprocessing_context=context)
    total = sum(int(batch.sum()) for batch in loader)
    it = iter(loader)
    next(it)  # exit with workers running and results unread
    print(total == sum(range(200)))
    """
)


@pytest.mark.parametrize("context", ["fork", "forkserver", "spawn"])
def test_workers_never_run_the_main_script_and_exit_quietly(tmp_path: Path, context: str) -> None:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), context],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True"]
    assert done.stderr == ""


MAIN_FUNCTION_SCRIPT = textwrap.dedent(
    """
    import sys
    import pipestate as ps

    def double(x):  # defined in the script: forkserver / spawn workers must import it
        return x * 2

    if __name__ == "__main__":
        loader = ps.data.Loader(
            ps.Dataset.range(20).map(double), num_workers=2, multiprocessing_context=sys.argv[1]
        )
        print(sum(int(x) for x in loader) == 2 * sum(range(20)))
    """
)


def test_a_dataset_using_the_script_s_functions_imports_the_guarded_script(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(MAIN_FUNCTION_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), "forkserver"],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True"]
    assert done.stderr == ""


def test_the_default_context_explains_a_lambda_refused_while_threads_run() -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    try:
        loader = ps.data.Loader(ps.Dataset.range(4).map(lambda x: x), num_workers=1)
        assert loader.multiprocessing_context != "fork"
        it = iter(loader)
        with pytest.raises(TypeError, match="threads are running"):
            next(it)
        it.close()
    finally:
        stop.set()
        thread.join()
