"""CheckpointManager on failing storage: every error typed, and what save() says is what is stored.

A fault-injecting filesystem raises a non-``OSError`` exception (as s3fs lets
botocore's errors through) at each call of a save in turn; a real S3 server
(moto) behind a proxy is cut at each request of a save in turn; a hung
storage meets the ``timeout`` setting.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pipestate as ps
from pipestate.checkpoint import CheckpointManager, CheckpointOptions, Variable, latest_checkpoint
from pipestate.errors import CheckpointWriteError, StorageError, StorageTimeoutError

from ._faults import FAULTS, PROTOCOL, CuttableProxy, EndpointGone
from .conftest import BUCKET, S3Server

ROOT = Path(__file__).resolve().parents[2]


def make_checkpoint(step: int, size: int = 1000) -> ps.Checkpoint:
    return ps.Checkpoint(
        step=Variable(np.int64(step)), weights=Variable(np.full(size, step, np.float32))
    )


def restored_step(directory: str, storage_options: Any = None) -> int | None:
    """The step of the latest checkpoint, read and verified (``None`` when there is none)."""
    path = latest_checkpoint(directory, storage_options=storage_options)
    if path is None:
        return None
    ckpt = make_checkpoint(-1)
    ckpt.restore(path, storage_options=storage_options).assert_consumed()
    step = int(ckpt.step.numpy())
    np.testing.assert_array_equal(ckpt.weights.numpy(), np.full(1000, step, np.float32))
    return step


@pytest.fixture
def faulty_dir() -> Iterator[str]:
    FAULTS.disarm()
    FAULTS.release.clear()
    yield f"{PROTOCOL}://run-{uuid.uuid4().hex}"
    FAULTS.release.set()
    FAULTS.disarm()


def _save_with_fault(
    directory: str, step: int, fail_at: int, *, once: bool = False, **kwargs: Any
) -> dict[str, Any]:
    """One save of ``step`` on a fresh manager with every call from ``fail_at`` on failing."""
    ckpt = make_checkpoint(step)
    manager = CheckpointManager(ckpt, directory, max_to_keep=2, **kwargs)
    counter = int(ckpt.save_counter.numpy())
    FAULTS.arm(fail_at=fail_at, once=once)
    outcome: dict[str, Any] = {"error": None, "path": None}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            outcome["path"] = manager.save(checkpoint_number=step)
        except Exception as err:
            outcome["error"] = err
    FAULTS.disarm()
    outcome["warnings"] = [str(w.message) for w in caught]
    outcome["counter_moved"] = int(ckpt.save_counter.numpy()) != counter
    outcome["calls"] = FAULTS.calls
    manager.close()
    return outcome


@pytest.mark.parametrize("once", [True, False], ids=["one-call-fails", "storage-gone"])
@pytest.mark.parametrize("resave", [False, True], ids=["new-number", "same-number"])
def test_a_failure_at_every_storage_call_is_typed_and_save_reports_what_is_stored(
    faulty_dir: str, resave: bool, once: bool
) -> None:
    for step in (1, 2):  # the save under test also deletes the oldest
        CheckpointManager(make_checkpoint(step), faulty_dir, 2).save(checkpoint_number=step)
    # A fault-free save of the same kind tells how many calls one save makes.
    probe = f"{faulty_dir}-probe"
    for step in (1, 2):
        CheckpointManager(make_checkpoint(step), probe, 2).save(checkpoint_number=step)
    clean = _save_with_fault(probe, 2 if resave else 3, fail_at=10**9)
    assert clean["error"] is None
    assert clean["warnings"] == []
    total = clean["calls"]
    assert total > 15
    latest = 2
    outcomes = {"failed": 0, "saved": 0, "saved with a warning": 0, "outcome unknown": 0}
    for k in range(1, total + 2):
        step = latest if resave else latest + 1
        result = _save_with_fault(faulty_dir, step, fail_at=k, once=once)
        error = result["error"]
        stored = restored_step(faulty_dir)
        if error is None:
            # Success means the new checkpoint is the latest on storage.
            assert stored == step, (k, result)
            outcomes["saved with a warning" if result["warnings"] else "saved"] += 1
        else:
            # Every failure is the typed error, caused by the filesystem's own exception.
            assert isinstance(error, CheckpointWriteError), (k, repr(error))
            assert isinstance(error.__cause__, StorageError | CheckpointWriteError), k
            assert "EndpointGone" in str(error) or isinstance(error.__cause__, StorageError)
            if "could not be read back" in str(error):
                # The state file could be neither written nor read back: the error says
                # so, and the number is not handed out again.
                assert not once, k
                assert stored in (latest, step), (k, error)
                assert result["counter_moved"], k
                outcomes["outcome unknown"] += 1
            else:
                assert stored == latest, (k, error)
                # Nothing committed: the number is free again (save_counter rolled back).
                assert not result["counter_moved"], k
                outcomes["failed"] += 1
        latest = stored if stored is not None else latest
        # The storage works again: the next save succeeds and leaves the kept set.
        follow = _save_with_fault(faulty_dir, latest + 1, fail_at=10**9)
        assert follow["error"] is None, (k, follow)
        latest += 1
        assert restored_step(faulty_dir) == latest
    assert outcomes["failed"], outcomes
    assert outcomes["saved with a warning"], outcomes
    print(f"{total + 1} fault points: {outcomes}")


def test_a_storage_error_is_wrapped_with_the_operation_and_the_cause(faulty_dir: str) -> None:
    manager = CheckpointManager(make_checkpoint(1), faulty_dir, 2)
    FAULTS.arm(fail_at=1)
    with pytest.raises(CheckpointWriteError) as info:
        manager.save()
    FAULTS.disarm()
    cause = info.value.__cause__
    assert isinstance(cause, StorageError)
    assert isinstance(cause, OSError)
    assert isinstance(cause.__cause__, EndpointGone)
    assert "faulty storage failed: EndpointGone" in str(cause)


def test_a_hung_storage_call_raises_a_timeout_naming_the_operation(faulty_dir: str) -> None:
    manager = CheckpointManager(make_checkpoint(1), faulty_dir, 2, timeout=0.2)
    manager.save()
    ckpt = make_checkpoint(2)
    manager = CheckpointManager(ckpt, faulty_dir, 2, timeout=0.2)
    FAULTS.arm(hang_at=3)
    with pytest.raises(CheckpointWriteError) as info:
        manager.save()
    FAULTS.release.set()
    FAULTS.disarm()
    assert isinstance(info.value.__cause__, StorageTimeoutError)
    assert "did not finish within the storage timeout of 0.2 s" in str(info.value)
    assert int(ckpt.save_counter.numpy()) == 0  # rolled back: nothing was committed
    assert restored_step(faulty_dir) == 1


def test_timeout_is_checked() -> None:
    ckpt = make_checkpoint(0)
    with pytest.raises(ValueError, match="timeout must be a positive"):
        CheckpointManager(ckpt, "memory://x", 1, timeout=0)
    with pytest.raises(TypeError, match="timeout must be a number"):
        CheckpointManager(ckpt, "memory://x", 1, timeout="1")  # type: ignore[arg-type]


_HUNG_ASYNC_SAVE = """
import sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
import pipestate as ps
from tests.checkpoint._faults import FAULTS
ckpt = ps.Checkpoint(w=ps.Variable(np.zeros(10)))
manager = ps.CheckpointManager(ckpt, "faulty://hung", 2, enable_async=True, timeout=0.3)
manager.save()
manager.wait_until_finished()
FAULTS.arm(hang_at=3)  # a call of the background write; never released
manager.save()
print("save returned", flush=True)
"""


def test_an_async_save_on_a_hung_storage_does_not_block_the_exit() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-c", _HUNG_ASYNC_SAVE, str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "save returned" in done.stdout
    assert "an async checkpoint save failed as the program ended" in done.stderr
    assert "did not finish within the storage timeout" in done.stderr


# -- a real S3 server behind a proxy that is cut at each request in turn --------------


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[CuttableProxy]:
    port = int(s3_server.endpoint_url.rsplit(":", 1)[1])
    proxy = CuttableProxy(port)
    yield proxy
    proxy.close()


def _through(proxy: CuttableProxy, s3_server: S3Server) -> dict[str, Any]:
    """Options that reach the server through the proxy, failing fast once it is cut."""
    options = json.loads(json.dumps(s3_server.storage_options))
    options["client_kwargs"]["endpoint_url"] = proxy.endpoint_url
    options["config_kwargs"] = {
        "retries": {"max_attempts": 1, "mode": "standard"},
        "connect_timeout": 2,
        "read_timeout": 2,
    }
    options["skip_instance_cache"] = True
    options["default_block_size"] = 5 << 20  # shards above this are multipart uploads
    return options


def _uploads_in_progress(s3_server: S3Server) -> list[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1")
    return [u["Key"] for u in client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])]


def test_s3_cut_at_requests_across_a_save(
    proxy: CuttableProxy, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cut the connection to S3 at requests spread over one save: shards, index, state, deletes."""
    import s3fs

    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)  # fail fast once cut
    directory = f"s3://{BUCKET}/cut-{uuid.uuid4().hex}"
    direct = s3_server.storage_options
    via = _through(proxy, s3_server)
    big = 1_600_000  # 6.4 MB of float32: a multipart upload of 2 parts
    options = CheckpointOptions(max_shard_bytes=1 << 30)

    def ckpt_for(step: int) -> ps.Checkpoint:
        return ps.Checkpoint(
            step=Variable(np.int64(step)), weights=Variable(np.full(big, step, np.float32))
        )

    def stored() -> int | None:
        path = latest_checkpoint(directory, storage_options=direct)
        if path is None:
            return None
        ckpt = ckpt_for(-1)
        ckpt.restore(path, storage_options=direct).assert_consumed()
        step = int(ckpt.step.numpy())
        assert float(ckpt.weights.numpy()[-1]) == step
        return step

    counted: list[int] = []

    def save(step: int, cut: int | None = None) -> Exception | None:
        manager = CheckpointManager(ckpt_for(step), directory, 2, storage_options=via, timeout=30)
        proxy.cut_at(cut)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                manager.save(checkpoint_number=step, options=options)
        except Exception as err:
            return err
        finally:
            counted.append(proxy.requests)
            proxy.restore()
            manager.close()
        return None

    for step in (1, 2, 3):
        assert save(step) is None
    requests = counted[-1]  # of the last save, which also deleted the oldest
    latest, failures, successes = 3, 0, 0
    for k in sorted({max(1, round(requests * f)) for f in (0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 1)}):
        step = latest + 1
        error = save(step, cut=k)
        now = stored()
        if error is None:
            assert now == step, (k, now)
            successes += 1
        else:
            assert isinstance(error, CheckpointWriteError), (k, repr(error))
            assert now == latest, (k, error)
            failures += 1
        latest = now if now is not None else latest
    # An upload whose abort could not reach the store is aborted by the next save.
    assert save(latest + 1) is None
    assert stored() == latest + 1
    assert _uploads_in_progress(s3_server) == []
    assert failures >= 2, (failures, successes)
    print(f"cut at 7 of the {requests} requests of a save: {failures} failed, {successes} saved")
