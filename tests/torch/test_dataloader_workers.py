"""DataLoader workers: worker_init_fn, get_worker_info, threads, persistence, scripts, exit."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import pipestate.torch as pt  # noqa: E402

pytestmark = pytest.mark.timeout(120)

_initialised: list[int] = []  # in a worker: the ids worker_init_fn was called with


def remember_worker(worker_id: int) -> None:
    _initialised.append(worker_id)


class WhoAmI(torch.utils.data.Dataset):  # type: ignore[misc]
    """Each sample says which process computed it and what that process knows."""

    def __len__(self) -> int:
        return 24

    def __getitem__(self, index: int) -> dict[str, Any]:
        info = torch.utils.data.get_worker_info()
        ours = pt.get_worker_info()
        return {
            "index": index,
            "pid": os.getpid(),
            "id": info.id,
            "num_workers": info.num_workers,
            "seed_minus_id": info.seed - info.id,
            "ours": ours.id,
            "same_seed": ours.seed == info.seed == torch.initial_seed(),
            "dataset": isinstance(info.dataset, WhoAmI),
            "threads": torch.get_num_threads(),
            "initialised": _initialised[-1] if _initialised else -1,
        }


def _samples(batches: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {key: [v for batch in batches for v in batch[key].tolist()] for key in batches[0]}


def test_workers_know_who_they_are_and_run_worker_init_fn() -> None:
    loader = pt.DataLoader(WhoAmI(), batch_size=2, num_workers=2, worker_init_fn=remember_worker)
    samples = _samples(list(loader))
    assert samples["index"] == list(range(24))
    assert set(samples["id"]) == {0, 1}
    assert samples["ours"] == samples["id"]
    assert samples["initialised"] == samples["id"]
    assert set(samples["num_workers"]) == {2}
    assert len(set(samples["seed_minus_id"])) == 1  # base seed + worker id, as torch
    assert all(samples["same_seed"])
    assert all(samples["dataset"])
    assert set(samples["threads"]) == {1}
    assert len(set(samples["pid"])) == 2
    assert os.getpid() not in samples["pid"]
    assert pt.get_worker_info() is None
    assert torch.utils.data.get_worker_info() is None


def _pool_pids(loader: pt.DataLoader) -> list[int]:
    pool = loader._loader._pool  # type: ignore[union-attr]
    assert pool is not None
    return [proc.pid for proc in pool.procs]


def test_persistent_workers_serve_every_epoch_and_resume() -> None:
    loader = pt.DataLoader(
        WhoAmI(), batch_size=3, shuffle=True, num_workers=2, persistent_workers=True
    )
    first = _samples(list(loader))
    pids = _pool_pids(loader)
    assert set(first["pid"]) <= set(pids)
    second = _samples(list(loader))
    assert _pool_pids(loader) == pids
    assert set(second["pid"]) <= set(pids)
    assert first["index"] != second["index"]  # a new shuffle each epoch
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    loader.load_state_dict(state)
    rest = _samples(list(loader))
    assert _pool_pids(loader) == pids
    assert len(rest["index"]) == 21
    loader.close()
    assert loader._loader._pool is None  # type: ignore[union-attr]


def test_workers_stop_after_each_epoch_unless_persistent() -> None:
    loader = pt.DataLoader(WhoAmI(), batch_size=3, num_workers=2)
    first = set(_samples(list(loader))["pid"])
    second = set(_samples(list(loader))["pid"])
    assert not first & second


SCRIPT = textwrap.dedent(
    """
    # No `if __name__ == "__main__":` guard, and torch imported at the top.
    import sys
    import torch
    from torch.utils.data import Dataset, TensorDataset
    import pipestate.torch as pt

    class Squares(Dataset):  # defined in the script itself
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return torch.tensor([i * i])

    context = None if sys.argv[1] == "default" else sys.argv[1]
    data = Squares() if context is None else TensorDataset(torch.arange(10) ** 2)
    loader = pt.DataLoader(
        data,
        batch_size=3,
        shuffle=True,
        num_workers=2,
        multiprocessing_context=context,
        persistent_workers=True,
        generator=torch.Generator().manual_seed(0),
    )
    values = sorted(v for batch in loader for v in torch.cat(list(batch)).flatten().tolist())
    it = iter(loader)
    next(it)  # exit with the workers running and batches unread
    print(values == [i * i for i in range(10)], loader.multiprocessing_context)
    """
)


@pytest.mark.parametrize("context", ["default", "forkserver", "spawn"])  # default: fork
def test_a_script_without_a_main_guard_runs_and_exits_without_warnings(
    tmp_path: Path, context: str
) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), context],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "True", done.stdout
    assert done.stderr == ""


def test_dropping_a_loader_stops_its_workers_at_once() -> None:
    loader = pt.DataLoader(WhoAmI(), batch_size=2, num_workers=2)
    it = iter(loader)
    next(it)
    procs = list(loader._current.inner._procs)  # type: ignore[union-attr]
    assert all(proc.is_alive() for proc in procs)
    gc.disable()  # no reference cycle: reference counting alone frees them
    try:
        del it, loader
        assert not any(proc.is_alive() for proc in procs)
    finally:
        gc.enable()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork is Linux's default")
def test_the_default_start_method_is_the_process_s_as_in_torch() -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)  # a logger's thread, say
    thread.start()
    try:
        loader = pt.DataLoader(WhoAmI(), batch_size=4, num_workers=2, collate_fn=lambda s: len(s))
        assert list(loader) == [4] * 6  # a lambda: only fork can take it
    finally:
        stop.set()
        thread.join()
