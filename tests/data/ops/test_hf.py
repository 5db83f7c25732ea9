"""``Dataset.from_hf``: a Hugging Face ``datasets.Dataset`` read from its Arrow table."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

datasets = pytest.importorskip("datasets")

import pipestate as ps  # noqa: E402
from pipestate.errors import NotFoundError, StateMismatchError  # noqa: E402
from pipestate.testing import assert_conformant, assert_elements_equal  # noqa: E402

from ._sources import assert_elastic, assert_resumes_after_sigkill  # noqa: E402


def hf_dataset(n: int = 23) -> Any:
    return datasets.Dataset.from_dict(
        {
            "id": list(range(n)),
            "text": [f"example {i}" for i in range(n)],
            "label": [i % 3 for i in range(n)],
            "tokens": [[i, i + 1] for i in range(n)],
        }
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("hf") / "saved"
    hf_dataset().save_to_disk(str(path), max_shard_size="1KB")
    return str(path)


def ids(ds: ps.Dataset) -> list[int]:
    return [int(x) for e in ds for x in np.asarray(e["id"]).ravel()]


def test_rows_match_the_datasets_rows() -> None:
    hf = hf_dataset()
    ds = ps.Dataset.from_hf(hf)
    assert len(ds) == len(hf)
    for i in (0, 7, 22):
        row = hf[i]
        assert_elements_equal(
            ds[i],
            {
                "id": np.int64(row["id"]),
                "text": np.bytes_(row["text"].encode()),
                "label": np.int64(row["label"]),
                "tokens": np.array(row["tokens"], np.int64),
            },
        )


def test_indices_mapping_of_shuffle_and_select() -> None:
    hf = hf_dataset().shuffle(seed=4).select(range(3, 15))
    ds = ps.Dataset.from_hf(hf, columns=["id", "text"])
    assert ids(ds) == hf["id"]
    assert [bytes(e["text"]).decode() for e in ds] == hf["text"]


def test_save_to_disk_directory_is_memory_mapped(saved: str) -> None:
    ds = ps.Dataset.from_hf(saved)
    assert ids(ds) == list(range(23))
    loaded = datasets.load_from_disk(saved)
    assert len(loaded.cache_files) > 1  # several Arrow files, read in place
    assert "files=" in repr(ds)
    assert ps.Dataset.from_hf(loaded).fingerprint == ds.fingerprint


@pytest.mark.parametrize(
    "pipeline",
    [
        pytest.param(lambda hf: ps.Dataset.from_hf(hf), id="plain"),
        pytest.param(
            lambda hf: ps.Dataset.from_hf(hf).global_shuffle(seed=1).batch(4), id="shuffle-batch"
        ),
        pytest.param(
            lambda hf: ps.Dataset.from_hf(hf, ["id", "label"]).global_shuffle(seed=5).batch(8),
            id="numeric-shuffle-batch",
        ),
        pytest.param(
            lambda hf: ps.Dataset.from_hf(hf.shuffle(seed=2)).map(lambda e: e["label"]).batch(5),
            id="hf-shuffled-map-batch",
        ),
    ],
)
def test_conformance(pipeline: Any) -> None:
    assert_conformant(pipeline(hf_dataset()))


def test_conformance_on_disk(saved: str) -> None:
    assert_conformant(ps.Dataset.from_hf(saved).global_shuffle(seed=3).batch(5))


def test_elastic_resharding() -> None:
    assert_elastic(ps.Dataset.from_hf(hf_dataset(), columns=["id"]))


def test_pickled_dataset(saved: str) -> None:
    ds = ps.Dataset.from_hf(datasets.load_from_disk(saved).shuffle(seed=1))
    copy = pickle.loads(pickle.dumps(ds))
    assert ids(copy) == ids(ds)


def test_changed_dataset_is_refused_at_restore() -> None:
    it = iter(ps.Dataset.from_hf(hf_dataset(23)))
    next(it)
    state = it.get_state()
    with pytest.raises(StateMismatchError, match="hf"):
        iter(ps.Dataset.from_hf(hf_dataset(24))).set_state(state)


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="save_to_disk"):
        ps.Dataset.from_hf(str(tmp_path / "missing"))
    splits = datasets.DatasetDict({"train": hf_dataset(3), "test": hf_dataset(2)})
    with pytest.raises(TypeError, match=r"DatasetDict with splits \['test', 'train'\]; pick one"):
        ps.Dataset.from_hf(splits)
    with pytest.raises(TypeError, match="IterableDataset has no random access"):
        ps.Dataset.from_hf(hf_dataset(3).to_iterable_dataset())
    with pytest.raises(TypeError, match=r"expected a datasets.Dataset"):
        ps.Dataset.from_hf({"id": [1]})
    with pytest.raises(ValueError, match=r"no column 'nope' in the dataset"):
        ps.Dataset.from_hf(hf_dataset(3), columns=["nope"])


def test_empty_dataset() -> None:
    ds = ps.Dataset.from_hf(hf_dataset(0))
    assert len(ds) == 0
    assert list(ds) == []


def test_resumes_after_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "saved"
    datasets.Dataset.from_dict({"id": list(range(60))}).save_to_disk(str(path))
    assert_resumes_after_sigkill("hf", str(path), tmp_path / "state.json")


PROPERTY_SOURCE = st.tuples(st.integers(0, 20), st.integers(0, 3)).map(
    lambda args: ps.Dataset.from_hf(
        datasets.Dataset.from_dict({"x": [i * 5 for i in range(args[0])]}).shuffle(seed=args[1])
    ).map(lambda row: row["x"])
)
