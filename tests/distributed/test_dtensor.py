"""Sharded tensors (DTensor) in distributed checkpoints, with real gloo processes.

``_dtensor_train.py`` trains a two-layer model sharded with FSDP2 over 2 ranks
(7 rows: an uneven 4 + 3 split) with AdamW, and saves after 3 of 6 steps (the
other 3 are the reference a resumed run must match). The checkpoint is then
restored on 2 ranks with the same sharding, in one process into a plain
model, and on 3 ranks split by columns instead of rows. Every process has a
timeout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch.distributed.tensor")

from pipestate.checkpoint import latest_checkpoint, load_variable
from pipestate.checkpoint._index import body_crc
from pipestate.errors import CorruptCheckpointError

from .test_torchrun import _env, free_port

WORKER = Path(__file__).with_name("_dtensor_train.py")
TIMEOUT = 90


def run(world_size: int, ckpt: Path, out: Path, *args: str) -> dict[str, Any]:
    """One job of the worker (``world_size`` ranks started here); rank 0's record."""
    port = free_port()
    command = [sys.executable, str(WORKER), "--ckpt-dir", str(ckpt), "--out", str(out), *args]
    processes = [
        subprocess.Popen(
            [*command, "--rank", str(rank), "--world-size", str(world_size), "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(),
        )
        for rank in range(world_size)
    ]
    outputs = []
    try:
        for p in processes:
            outputs.append(p.communicate(timeout=TIMEOUT)[0])
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in processes] == [0] * world_size, "\n".join(outputs)
    record: dict[str, Any] = json.loads(out.read_text())
    return record


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A 2-rank FSDP2 job of 6 steps that saves after 3 (its steps 4-6 are the reference)."""
    tmp = tmp_path_factory.mktemp("dtensor")
    args = ("--mode", "train", "--steps", "6", "--save-at", "3")
    return tmp, {"saved": run(2, tmp / "ckpt", tmp / "train.json", *args)}


def fresh_copy(trained: tuple[Path, dict[str, Any]], name: str) -> Path:
    tmp, _ = trained
    target = tmp / name
    shutil.copytree(tmp / "ckpt", target)
    return target


def test_each_rank_writes_the_chunks_it_owns(trained: tuple[Path, dict[str, Any]]) -> None:
    tmp, records = trained
    path = records["saved"]["saved_path"]
    assert path == latest_checkpoint(str(tmp / "ckpt"))
    document = json.loads(Path(path + ".index").read_text())["checkpoint"]
    assert document["world_size"] == 2
    assert document["num_shards"] == 2
    model = document["nodes"][document["nodes"][0]["children"]["model"]]["attributes"]
    weight = model["0.weight"]["dtensor"]
    assert weight["shape"] == [7, 8]
    assert weight["dtype"] == "float32"
    assert [(c["offsets"], c["shape"]) for c in weight["chunks"]] == [
        ([0, 0], [4, 8]),
        ([4, 0], [3, 8]),
    ]
    tensors = document["tensors"]
    # Rank 0's chunk lives in its shard, rank 1's in the other: nothing was gathered.
    assert [tensors[c["of"]]["shard"] for c in weight["chunks"]] == [0, 1]
    assert all(entry["shape"] != [7, 8] for entry in tensors.values())
    # Optimizer moments are chunked the same way; Adam's step counter is a plain tensor.
    optimizer = document["nodes"][document["nodes"][0]["children"]["optimizer"]]["attributes"]
    state = {k: v["dict"] for k, v in optimizer["state"]["items"]}
    assert len(state[0]["exp_avg"]["dtensor"]["chunks"]) == 2
    assert "torch" in state[0]["step"]
    # Replicated over the ranks (on a 1-D mesh, and on the first dimension of a 2-D
    # one): only the first replica writes its chunk.
    for name in ("replicated", "hybrid"):
        holder = document["nodes"][document["nodes"][0]["children"][name]]["attributes"]
        chunks = holder["tensor"]["dtensor"]["chunks"]
        assert [(c["offsets"], c["shape"]) for c in chunks] == [([0, 0], [6, 2])]
        assert tensors[chunks[0]["of"]]["shard"] == 0
    # Read whole, a sharded value is the gathered tensor.
    whole = load_variable(path, "model/.ATTRIBUTES/0..weight")
    assert whole.shape == (7, 8)
    assert [float(x) for x in whole.reshape(-1)] == records["saved"]["saved_state"]["0.weight"]


ARANGE = [float(x) for x in range(12)]


def test_resume_on_the_same_sharding_continues_bit_for_bit(
    trained: tuple[Path, dict[str, Any]],
) -> None:
    tmp, records = trained
    ckpt = fresh_copy(trained, "resume")
    resumed = run(2, ckpt, tmp / "resume.json", "--mode", "resume", "--steps", "3")
    assert resumed["restored"]
    assert resumed["start"] == 3
    assert resumed["restored_state"] == records["saved"]["saved_state"]
    assert resumed["extras"] == {
        "replicated": ["(Replicate(),)", ARANGE],
        "hybrid": ["(Replicate(), Shard(dim=0))", ARANGE],
    }
    # The state the save took (before the run went on) is what comes back, and the
    # steps after it are the uninterrupted run's, bit for bit.
    assert resumed["losses"] == records["saved"]["losses"][3:]
    assert resumed["final_state"] == records["saved"]["final_state"]


def test_restore_in_one_process_into_a_plain_model(
    trained: tuple[Path, dict[str, Any]],
) -> None:
    tmp, records = trained
    ckpt = fresh_copy(trained, "plain")
    plain = run(1, ckpt, tmp / "plain.json", "--mode", "plain")
    assert set(plain["placements"].values()) == {"None"}  # plain tensors
    assert plain["restored_state"] == records["saved"]["saved_state"]
    assert plain["extras"] == {"replicated": ["None", ARANGE], "hybrid": ["None", ARANGE]}


def test_restore_onto_another_sharding_of_another_size_and_refuse_another_shape(
    trained: tuple[Path, dict[str, Any]],
) -> None:
    tmp, records = trained
    ckpt = fresh_copy(trained, "reshard")
    other = run(3, ckpt, tmp / "reshard.json", "--mode", "mismatch")
    assert other["placements"]["0.weight"] == "(Shard(dim=1),)"
    assert other["placements"]["0.bias"] == "(Replicate(),)"
    assert other["moment_placements"]["0.weight"] == "(Shard(dim=1),)"
    assert other["restored_state"] == records["saved"]["saved_state"]
    assert other["extras"]["hybrid"] == ["(Replicate(), Shard(dim=0))", ARANGE]
    # A model of another width first: refused with the key and both global shapes.
    assert other["error"] == (
        "cannot restore the sharded tensor at 'model/.ATTRIBUTES/0..weight': it was saved with "
        "global shape [7, 8], and the DTensor it restores into has global shape [9, 8]"
    )


def test_what_a_save_refuses(trained: tuple[Path, dict[str, Any]]) -> None:
    _, records = trained
    saved = records["saved"]
    assert "from this process alone" in saved["alone_error"]
    assert "holds 32 of its 56 elements" in saved["alone_error"]
    assert "placement P(sum)" in saved["partial_error"]
    assert "redistribute" in saved["partial_error"]


def test_a_missing_chunk_range_is_corrupt(trained: tuple[Path, dict[str, Any]]) -> None:
    ckpt = fresh_copy(trained, "corrupt")
    path = latest_checkpoint(str(ckpt))
    assert path is not None
    index = Path(path + ".index")
    document = json.loads(index.read_text())
    body = document["checkpoint"]
    model = body["nodes"][body["nodes"][0]["children"]["model"]]["attributes"]
    del model["0.weight"]["dtensor"]["chunks"][1]
    document["crc32c"] = body_crc(body)
    index.write_text(json.dumps(document))
    with pytest.raises(CorruptCheckpointError, match="cover 32 of its 56 elements"):
        load_variable(path, "model/.ATTRIBUTES/0..weight")


def test_an_async_save_holds_the_step_it_was_made_at(
    trained: tuple[Path, dict[str, Any]],
) -> None:
    """Each rank's chunks are copied before save() returns; training goes on meanwhile."""
    tmp, records = trained
    args = ("--mode", "train", "--steps", "6", "--save-at", "3", "--async-save")
    saved = run(2, tmp / "async-ckpt", tmp / "async.json", *args)
    assert saved["losses"] == records["saved"]["losses"]
    resumed = run(
        2, tmp / "async-ckpt", tmp / "async-resume.json", "--mode", "resume", "--steps", "3"
    )
    assert resumed["start"] == 3
    assert resumed["restored_state"] == records["saved"]["saved_state"]
    assert resumed["final_state"] == records["saved"]["final_state"]
