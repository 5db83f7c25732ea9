from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.errors import DataLossError, InvalidArgumentError, NotFoundError
from pipestate.testing import assert_conformant, assert_elements_equal

D = ps.Dataset
TensorSpec = ps.data.TensorSpec
_names = itertools.count()


def memory_dir(label: str) -> str:
    return f"memory://load-tests/{label}-{next(_names)}"


def ints(ds: Any) -> list[int]:
    return [int(x) for x in ds]


def pairs(x: Any) -> Any:
    return {"id": x, "row": np.arange(int(x) % 4, dtype=np.float32), "tag": np.bytes_(b"t%d" % x)}


def saved(n: int, **kwargs: Any) -> str:
    path = memory_dir("saved")
    D.range(n).map(pairs).save(path, **kwargs)
    return path


def test_round_trip_keeps_order_structure_and_cardinality(tmp_path: Path) -> None:
    source = D.range(10).map(pairs)
    source.save(str(tmp_path / "ds"))
    loaded = D.load(str(tmp_path / "ds"))
    assert loaded.cardinality() == len(loaded) == 10
    for a, e in zip(loaded, source):
        assert_elements_equal(a, e)
    assert_elements_equal(loaded[7], source[7])
    assert sorted(os.listdir(tmp_path / "ds"))[-1] == "manifest.json"


@pytest.mark.parametrize("compression", [None, "GZIP"])
def test_memory_url_and_compression(compression: str | None) -> None:
    path = saved(12, compression=compression)
    loaded = D.load(path)
    assert ints(x["id"] for x in loaded) == list(range(12))
    assert ints(x["id"] for x in D.load(path, compression=compression)) == list(range(12))
    other = "GZIP" if compression is None else None
    if other is not None:
        with pytest.raises(ValueError, match=r"load: compression='GZIP', but .* was saved with"):
            D.load(path, compression=other)


def test_load_is_random_access_and_global_shuffleable() -> None:
    loaded = D.load(saved(20))
    shuffled = ints(x["id"] for x in loaded.global_shuffle(seed=3))
    assert sorted(shuffled) == list(range(20))
    assert shuffled != list(range(20))
    it = iter(loaded.global_shuffle(seed=3))
    next(it)
    assert it.get_state()["iterator"] == {"index": 1, "seed": None}


def test_shard_func_and_reader_func() -> None:
    path = memory_dir("sharded")
    D.range(10).save(path, shard_func=lambda x: x % 3)
    assert ints(D.load(path)) == list(range(10))  # the order saved, whatever the shards
    by_shard = D.load(path, reader_func=lambda shards: shards.flat_map(lambda s: s))
    assert ints(by_shard) == [0, 3, 6, 9, 1, 4, 7, 2, 5, 8]
    interleaved = D.load(path, reader_func=lambda s: s.interleave(lambda d: d, cycle_length=3))
    assert sorted(ints(interleaved)) == list(range(10))
    assert_conformant(by_shard, variants=())


def test_element_spec_is_saved_and_checked() -> None:
    path = saved(6)
    spec = D.load(path)._element_spec()
    assert spec == {
        "id": TensorSpec((), np.int64),
        "row": TensorSpec((None,), np.float32),
        "tag": TensorSpec((), "string"),
    }
    given = {
        "id": TensorSpec((), np.int64),
        "row": TensorSpec((None,)),
        "tag": TensorSpec((), "string"),
    }
    assert D.load(path, element_spec=given)._element_spec() == given
    with pytest.raises(InvalidArgumentError, match=r"load: element_spec .* does not match"):
        D.load(path, element_spec={"id": TensorSpec((), np.float64)})
    with pytest.raises(TypeError, match=r"load: element_spec must be a TensorSpec"):
        D.load(path, element_spec=3)


def test_missing_or_unfinished_save_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"load: no saved dataset at .*manifest\.json"):
        D.load(str(tmp_path / "nothing"))
    D.range(5).save(str(tmp_path / "ds"))
    (tmp_path / "ds" / "manifest.json").unlink()
    with pytest.raises(NotFoundError, match=r"the save did not finish"):
        D.load(str(tmp_path / "ds"))


def _data_file(directory: Path) -> Path:
    return next(p for p in directory.iterdir() if p.name.startswith("data-"))


def test_damaged_files_raise_data_loss_errors(tmp_path: Path) -> None:
    directory = tmp_path / "ds"
    D.range(30).map(pairs).save(str(directory))
    data = _data_file(directory)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    data.write_bytes(bytes(raw))
    with pytest.raises(DataLossError, match=r"data-[0-9a-f]+-00000\.records.*byte offset \d+"):
        list(D.load(str(directory)))
    data.write_bytes(bytes(raw[:100]))
    with pytest.raises(DataLossError, match=r"is truncated: bytes \d+ to \d+ were expected"):
        list(D.load(str(directory)))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(format="other"), r"has no 'format'"),
        (lambda m: m.update(version=99), r"version 99"),
        (lambda m: m.update(count=-1), r"'count' must be a non-negative int"),
        (lambda m: m["parts"][0].update(file="../../etc/passwd"), r"malformed part"),
        (lambda m: m.update(compression="pickle"), r"unknown compression"),
        (lambda m: m.update(count=m["count"] + 1), r"the manifest says"),
        (lambda m: m["index"].update(crc32c=1), r"does not match its checksum"),
        (lambda m: m.update(spec=[["T", ["L"]], [["|O", []]]]), r"malformed element spec"),
        (lambda m: m.update(shards=0), r"shard number the manifest does not have"),
    ],
)
def test_hostile_manifests_raise_data_loss_errors(
    tmp_path: Path, change: Any, message: str
) -> None:
    directory = tmp_path / "ds"
    D.range(5).save(str(directory))
    manifest_path = directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    change(manifest)
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(DataLossError, match=message):
        D.load(str(directory))


def test_hostile_record_payloads_raise_data_loss_errors() -> None:
    from pipestate.data import _element_codec

    good = _element_codec.encode((np.arange(3), np.bytes_(b"x")), "test")[0]
    for payload, message in [
        (b"\x01\x00", r"shorter than its structure length"),
        (good[:-2], r"runs past the end"),
        (good + b"zz", r"2 bytes follow the last leaf"),
        (good.replace(b"<i8", b"|O8"), r"unsupported dtype"),
        (b"\x09\x00\x00\x00" + b'["X",[1]]', r"unknown element structure node"),
        (b"\x19\x00\x00\x00" + b'["N","class",["a"],["L"]]', r"unknown element structure node"),
        (
            len(b"[" * 100_000).to_bytes(4, "little") + b"[" * 100_000,
            r"structure is not valid JSON",
        ),
    ]:
        with pytest.raises(DataLossError, match=message):
            _element_codec.decode(payload, None, "somewhere")
    with pytest.raises(DataLossError, match=r"claims 18446744073709551615 bytes"):
        _element_codec.decode(b"\xff" * 8 + b"\x1f\x8b\x08\x00", "GZIP", "somewhere")
    bomb = _element_codec.compress(b"\0" * 100_000, "GZIP")
    lying = (10).to_bytes(8, "little") + bomb[8:]  # inflates past the length it claims
    with pytest.raises(DataLossError, match=r"does not inflate to its 10 bytes"):
        _element_codec.decode(lying, "GZIP", "somewhere")


def test_save_replaces_an_earlier_save(tmp_path: Path) -> None:
    path = str(tmp_path / "ds")
    D.range(5).save(path)
    D.range(3).map(lambda x: x + 100).save(path)
    assert ints(D.load(path)) == [100, 101, 102]
    assert len(os.listdir(path)) == 3


def test_arguments_are_checked(tmp_path: Path) -> None:
    path = str(tmp_path / "ds")
    with pytest.raises(ValueError, match=r"save: compression 'SNAPPY' is not available"):
        D.range(3).save(path, compression="SNAPPY")
    with pytest.raises(ValueError, match=r"save: compression must be one of"):
        D.range(3).save(path, compression="ZIP")
    with pytest.raises(TypeError, match=r"save: shard_func must be callable or None"):
        D.range(3).save(path, shard_func=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"save: path must be a str or os.PathLike, got int"):
        D.range(3).save(5)
    with pytest.raises(TypeError, match=r"checkpoint_args takes .* unknown keys \['max_to_keep'\]"):
        D.range(3).save(path, checkpoint_args={"max_to_keep": 2})
    with pytest.raises(ValueError, match=r"checkpoint_interval must be >= 1"):
        D.range(3).save(path, checkpoint_args={"checkpoint_interval": 0})
    with pytest.raises(ValueError, match=r"save: the dataset is infinite"):
        D.range(3).repeat().save(path)
    with pytest.raises(TypeError, match=r"shard_func .* must return a scalar integer, got float"):
        D.range(3).save(path, shard_func=lambda x: 1.5)
    with pytest.raises(ValueError, match=r"returned shard -1; shards are numbered 0 to"):
        D.range(3).save(path, shard_func=lambda x: -1)
    D.range(3).save(path)
    with pytest.raises(TypeError, match=r"load: reader_func .* must return a Dataset, got int"):
        D.load(path, reader_func=lambda shards: 3)


def test_s3_round_trip(s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec

    from tests._s3 import BUCKET

    # save / load take tf.data's arguments: the endpoint comes from fsspec's configuration.
    monkeypatch.setitem(fsspec.config.conf, "s3", s3_server.storage_options)
    url = f"s3://{BUCKET}/saved-{next(_names)}"
    D.range(7).map(pairs).save(url, compression="GZIP")
    assert ints(x["id"] for x in D.load(url)) == list(range(7))
    _interrupted_then_resumed(f"s3://{BUCKET}/resumed-{next(_names)}")


def _interrupted_then_resumed(path: str) -> None:
    """A save with checkpoint_args stopped at element 9, then run again: every element once."""
    fail_at = [9]

    def maybe_fail(x: Any) -> Any:
        if int(x) == fail_at[0]:
            raise KeyboardInterrupt
        return x * 3

    maybe_fail.__qualname__ = "maybe_fail"
    with pytest.raises(KeyboardInterrupt):
        D.range(20).map(maybe_fail).save(path, checkpoint_args={"checkpoint_interval": 4})
    fail_at[0] = -1
    D.range(20).map(maybe_fail).save(path, checkpoint_args={"checkpoint_interval": 4})
    loaded = D.load(path)
    assert ints(loaded) == list(range(0, 60, 3))
    # The closed data files of the first run were kept, not written again.
    assert len(loaded._stored.parts) == 5  # type: ignore[attr-defined]


def test_an_interrupted_save_to_an_object_store_resumes_from_its_closed_files() -> None:
    _interrupted_then_resumed(memory_dir("resumed"))


# ------------------------------------------------------------ resumable saves
_SAVER = textwrap.dedent(
    """
    import sys, time
    import pipestate as ps
    def slow(x):
        if int(x) == 150:
            print("ready", flush=True)
        if int(x) >= 150:
            time.sleep(0.003)
        return x * 2
    ps.Dataset.range(600).map(slow).save(sys.argv[1], checkpoint_args={"checkpoint_interval": 40})
    """
)


def slow(x: Any) -> Any:
    return x * 2


def test_sigkill_during_a_save_then_a_resumed_save_is_complete_and_exact(tmp_path: Path) -> None:
    path = tmp_path / "ds"
    script = tmp_path / "saver.py"
    script.write_text(_SAVER)
    env = {**os.environ, "PYTHONPATH": str(Path(ps.__file__).parent.parent)}
    child = subprocess.Popen(
        [sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    time.sleep(0.1)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    with pytest.raises(NotFoundError):
        D.load(str(path))
    progress = json.loads((path / "progress.json").read_text())
    assert progress["count"] >= 120
    calls: list[int] = []

    def counted(x: Any) -> Any:
        calls.append(int(x))
        return x * 2

    counted.__qualname__ = "slow"  # the same pipeline
    D.range(600).map(counted).save(str(path), checkpoint_args={"checkpoint_interval": 40})
    assert min(calls) >= progress["count"]  # what was saved was not computed again
    assert ints(D.load(str(path))) == list(range(0, 1200, 2))
    assert not (path / "progress.json").exists()


def test_progress_records_in_another_directory(tmp_path: Path) -> None:
    path, records = tmp_path / "ds", tmp_path / "records"
    D.range(7).save(
        str(path), checkpoint_args={"checkpoint_interval": 3, "directory": str(records)}
    )
    assert ints(D.load(str(path))) == list(range(7))
    assert os.listdir(records) == []  # the record is removed once the save is complete


def test_resume_with_another_pipeline_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "ds"
    (path).mkdir()
    (path / "progress.json").write_text(
        json.dumps(
            {
                "path": str(path) + "/",
                "fingerprint": "x",
                "compression": None,
                "shard_func": "",
                "file": "0" * 16,
                "bytes": 1,
                "count": 1,
                "state": {},
            }
        )
    )
    D.range(4).save(str(path), checkpoint_args={"checkpoint_interval": 2})
    assert ints(D.load(str(path))) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: D.load(saved(9)), id="plain"),
        pytest.param(lambda: D.load(saved(0)), id="empty"),
        pytest.param(
            lambda: D.load(saved(9, compression="GZIP")).map(lambda d: d["id"]).batch(4),
            id="gzip-batch",
        ),
        pytest.param(lambda: D.load(saved(12)).global_shuffle(seed=2), id="shuffled"),
        pytest.param(lambda: D.load(saved(6)).repeat(2), id="repeat"),
    ],
)
def test_conformance(build: Any) -> None:
    assert_conformant(build(), max_elements=30)


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.


def _saved_source(n: int, shards: int) -> ps.Dataset:
    path = memory_dir("property")
    D.range(n).map(lambda x: (x, x * 2)).save(path, shard_func=lambda x, y: x % shards)
    return D.load(path)


PROPERTY_SOURCE = st.builds(_saved_source, st.integers(0, 12), st.integers(1, 3))


def test_deeply_nested_manifest_is_a_data_loss_error(tmp_path: Path) -> None:
    directory = tmp_path / "ds"
    D.range(2).save(str(directory))
    (directory / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataLossError, match=r"manifest\.json' is not valid JSON"):
        D.load(str(directory))


def test_an_interrupted_save_of_a_shuffle_buffer_resumes_exactly(tmp_path: Path) -> None:
    fail_at = [25]

    def maybe_fail(x: Any) -> Any:
        if int(x) == fail_at[0]:
            raise KeyboardInterrupt  # as an interrupted run
        return np.full(3, x)

    def pipeline() -> ps.Dataset:
        # A buffer shuffle over a streaming input: its state holds the buffered arrays.
        return D.range(40).map(maybe_fail).filter(lambda x: True).shuffle(8, seed=1)

    fail_at[0] = -1
    expected = [int(x[0]) for x in pipeline()]
    fail_at[0] = 25
    path = str(tmp_path / "ds")
    with pytest.raises(KeyboardInterrupt):
        pipeline().save(path, checkpoint_args={"checkpoint_interval": 4})
    progress = json.loads((tmp_path / "ds" / "progress.json").read_text())
    assert progress["count"] > 0
    assert "__ndarray__" in json.dumps(progress["state"])
    fail_at[0] = -1
    pipeline().save(path, checkpoint_args={"checkpoint_interval": 4})
    assert [int(x[0]) for x in D.load(path)] == expected


def test_a_record_left_by_a_finished_save_is_not_resumed(tmp_path: Path) -> None:
    path = tmp_path / "ds"
    fail_at = [9]  # past the map's first read-ahead block of 8

    def maybe_fail(x: Any) -> Any:
        if int(x) == fail_at[0]:
            raise KeyboardInterrupt
        return x + 100

    with pytest.raises(KeyboardInterrupt):
        D.range(10).map(maybe_fail).save(str(path), checkpoint_args={"checkpoint_interval": 2})
    left = (path / "progress.json").read_text()
    fail_at[0] = -1
    D.range(10).map(maybe_fail).save(str(path), checkpoint_args={"checkpoint_interval": 2})
    assert ints(D.load(str(path))) == list(range(100, 110))
    # As a crash after the manifest, before the record's removal: the record is stale.
    # A new save must not continue it (cutting the finished file under its manifest):
    # it starts over, removing the manifest first.
    (path / "progress.json").write_text(left)
    fail_at[0] = 9
    with pytest.raises(KeyboardInterrupt):
        D.range(10).map(maybe_fail).save(str(path), checkpoint_args={"checkpoint_interval": 2})
    with pytest.raises(NotFoundError):
        D.load(str(path))  # nothing loadable, never a cut one
    fail_at[0] = -1
    D.range(10).map(maybe_fail).save(str(path), checkpoint_args={"checkpoint_interval": 2})
    assert ints(D.load(str(path))) == list(range(100, 110))


def test_alike_records_read_as_one_block_equal_the_saved_elements() -> None:
    from collections import namedtuple

    Pair = namedtuple("Pair", ["a", "b"])

    def element(x: Any) -> Any:
        return {
            "pair": Pair(np.full((2, 3), x, np.float32), x * 2),
            "tag": np.bytes_(b"%03d" % x),
            "flag": x % 2 == 0,
        }

    source = D.range(50).map(element)
    path = memory_dir("alike")
    source.save(path, shard_func=lambda e: e["pair"].b % 3)  # shards differ, layouts don't
    loaded = D.load(path)
    stored = loaded._stored  # type: ignore[attr-defined]
    block = stored.get_list(np.arange(50))
    assert stored._decode_uniform(stored._read(0, 0, int(stored.ends[49])), 50) is not None
    for got, want in zip(block, source):
        assert type(got["pair"]).__name__ == "Pair"
        assert_elements_equal(tuple(got["pair"]), tuple(want["pair"]))
        assert_elements_equal(got["tag"], want["tag"])
        assert_elements_equal(got["flag"], want["flag"])
    assert_elements_equal(stored.get(7)["tag"], np.bytes_(b"007"))


def test_a_damaged_record_among_alike_ones_is_raised_at_its_element(tmp_path: Path) -> None:
    directory = tmp_path / "ds"
    D.from_tensor_slices(np.arange(160, dtype=np.float32).reshape(40, 4)).save(str(directory))
    loaded = D.load(str(directory))
    offset = int(loaded._stored.offsets[5])  # type: ignore[attr-defined]
    data = _data_file(directory)
    raw = bytearray(data.read_bytes())
    raw[offset + 40] ^= 0x01
    data.write_bytes(bytes(raw))
    it = iter(D.load(str(directory)))
    assert [float(next(it)[0]) for _ in range(5)] == [0.0, 4.0, 8.0, 12.0, 16.0]
    with pytest.raises(DataLossError, match=rf"byte offset {offset}: corrupted record"):
        next(it)
    assert float(next(it)[0]) == 24.0  # the element after it, as everywhere


def double(x: Any) -> Any:
    return x * 2


def test_a_loaded_dataset_feeds_loader_workers(tmp_path: Path) -> None:
    # Workers reopen the files themselves: open descriptors are not sent to them.
    D.from_tensor_slices(np.arange(40.0).reshape(20, 2)).save(str(tmp_path / "ds"))
    ds = D.load(str(tmp_path / "ds")).map(double)
    loader = ps.data.Loader(ds, num_workers=2, multiprocessing_context="fork")
    assert [float(x[0]) for x in loader] == [4.0 * i for i in range(20)]
