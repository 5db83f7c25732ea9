"""``Dataset.from_source``: objects with ``__len__`` and ``__getitem__`` as random-access data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.errors import StateMismatchError
from pipestate.testing import assert_conformant, assert_elements_equal

from ._source_reader import ArraySource
from ._sources import assert_elastic, assert_resumes_after_sigkill


class Rows:
    """A map-style source of dict rows that counts how it is read."""

    def __init__(self, n: int, batched: bool = True, fail_at: int | None = None) -> None:
        self.n = n
        self.fail_at = fail_at
        self.single_reads = 0
        self.batched_reads: list[list[int]] = []
        if not batched:
            self.__getitems__ = None  # type: ignore[assignment]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        assert type(index) is int
        if index == self.fail_at:
            raise KeyError(f"row {index} is broken")
        self.single_reads += 1
        return {"id": index, "text": f"t{index}", "vector": [index, index + 1]}

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        self.batched_reads.append(list(indices))
        if self.fail_at in indices:
            raise KeyError(f"row {self.fail_at} is broken")
        return [{"id": i, "text": f"t{i}", "vector": [i, i + 1]} for i in indices]


def _ids(ds: ps.Dataset) -> list[int]:
    return [int(x) for e in ds for x in np.asarray(e["id"]).ravel()]


def test_items_become_elements() -> None:
    ds = ps.Dataset.from_source(Rows(5))
    assert len(ds) == 5
    first = ds[0]
    assert_elements_equal(
        first, {"id": np.int64(0), "text": np.bytes_(b"t0"), "vector": np.array([0, 1])}
    )
    assert _ids(ds) == [0, 1, 2, 3, 4]
    assert list(ps.Dataset.from_source([b"a", "b"])) == [np.bytes_(b"a"), np.bytes_(b"b")]


def test_torch_map_style_dataset() -> None:
    torch = pytest.importorskip("torch")

    class Images(torch.utils.data.Dataset):  # type: ignore[misc]
        def __len__(self) -> int:
            return 6

        def __getitem__(self, index: int) -> tuple[Any, int]:
            return torch.full((2, 2), float(index)), index

    ds = ps.Dataset.from_source(Images())
    image, label = ds[3]
    assert type(image) is np.ndarray
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image, np.full((2, 2), 3.0, np.float32))
    assert label == np.int64(3)
    images, labels = next(iter(ds.batch(4)))
    assert images.shape == (4, 2, 2)
    assert labels.tolist() == [0, 1, 2, 3]
    assert_conformant(ds.global_shuffle(seed=1).batch(4))


def test_torch_tensor_that_requires_grad_is_refused() -> None:
    torch = pytest.importorskip("torch")
    ds = ps.Dataset.from_source([torch.ones(2, requires_grad=True)])
    with pytest.raises(TypeError, match=r"requires grad.*detach\(\).*source\[0\]"):
        next(iter(ds))


def test_hugging_face_dataset_plugs_in() -> None:
    datasets = pytest.importorskip("datasets")
    hf = datasets.Dataset.from_dict({"id": list(range(8)), "text": [f"t{i}" for i in range(8)]})
    ds = ps.Dataset.from_source(hf.shuffle(seed=0))
    assert _ids(ds) == hf.shuffle(seed=0)["id"]
    batch = next(iter(ds.batch(3)))
    assert batch["text"].dtype.kind == "S"
    assert_conformant(ds.global_shuffle(seed=2).batch(3))


def test_batches_and_blocks_are_read_with_getitems() -> None:
    source = Rows(12)
    batches = list(ps.Dataset.from_source(source).batch(4))
    assert [b["id"].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert source.single_reads == 0
    assert sorted(i for read in source.batched_reads for i in read) == list(range(12))
    assert source[3]["id"] == 3
    assert ps.Dataset.from_source(source)[3]["id"] == np.int64(3)


def test_without_getitems_items_are_read_one_by_one() -> None:
    source = Rows(6, batched=False)
    assert _ids(ps.Dataset.from_source(source).batch(4)) == list(range(6))
    assert source.single_reads == 6


@pytest.mark.parametrize(
    "pipeline",
    [
        pytest.param(lambda s: s, id="plain"),
        pytest.param(lambda s: s.global_shuffle(seed=3).batch(4), id="shuffle-batch"),
        pytest.param(lambda s: s.map(lambda e: e["id"] * 2).batch(3), id="map-batch"),
        pytest.param(lambda s: s.shard(3, 1).repeat(2), id="shard-repeat"),
        pytest.param(lambda s: s.global_shuffle().take(7), id="seedless-shuffle"),
    ],
)
@pytest.mark.parametrize("batched", [True, False], ids=["getitems", "getitem"])
def test_conformance(pipeline: Any, batched: bool) -> None:
    assert_conformant(pipeline(ps.Dataset.from_source(Rows(17, batched))))


def test_state_is_one_index_through_shuffle_and_batch() -> None:
    it = iter(ps.Dataset.from_source(Rows(40)).global_shuffle(seed=1).map(lambda e: e).batch(8))
    next(it)
    next(it)
    assert it.get_state()["iterator"] == {"index": 2, "seed": None}


def test_elastic_resharding() -> None:
    assert_elastic(ps.Dataset.from_source(Rows(30)))


def test_failing_item_surfaces_at_its_index_and_is_never_skipped() -> None:
    ds = ps.Dataset.from_source(Rows(10, fail_at=6))
    it = iter(ds)
    got = [int(next(it)["id"]) for _ in range(6)]
    assert got == [0, 1, 2, 3, 4, 5]  # the items before the failing one come first
    state = it.get_state()
    with pytest.raises(KeyError, match="row 6 is broken") as info:
        next(it)
    assert any("source[6]" in note for note in getattr(info.value, "__notes__", []))
    resumed = iter(ds)
    resumed.set_state(state)
    with pytest.raises(KeyError, match="row 6 is broken"):
        next(resumed)
    with pytest.raises(KeyError, match="row 6 is broken"):
        list(ds.batch(4))  # the batch holding it fails; no shorter epoch


def test_length_change_is_refused_at_restore() -> None:
    it = iter(ps.Dataset.from_source(Rows(10)))
    next(it)
    state = it.get_state()
    with pytest.raises(StateMismatchError, match="from_source"):
        iter(ps.Dataset.from_source(Rows(11))).set_state(state)


class NoLength:
    def __getitem__(self, index: int) -> int:
        return index


class NoGetitem:
    def __len__(self) -> int:
        return 3


class BadLength:
    def __init__(self, length: object) -> None:
        self.length = length

    def __len__(self) -> Any:
        return self.length

    def __getitem__(self, index: int) -> int:
        return index


@pytest.mark.parametrize(
    ("source", "match"),
    [
        (NoLength(), "NoLength has no __len__"),
        (NoGetitem(), "NoGetitem has no __getitem__"),
        (iter([1, 2]), "has no __len__ and no __getitem__"),
        (BadLength(-1), "len\\(source\\) failed"),
        (BadLength(2.5), "len\\(source\\) failed"),
        (ps.Dataset.range(3), "already a pipestate Dataset"),
    ],
    ids=["no-len", "no-getitem", "iterator", "negative-len", "float-len", "dataset"],
)
def test_bad_sources(source: object, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        ps.Dataset.from_source(source)


def test_name_labels_the_op() -> None:
    ds = ps.Dataset.from_source(Rows(3), name="rows")
    assert ds.name == "rows"
    assert "name='rows'" in repr(ds)
    assert ds.fingerprint == ps.Dataset.from_source(Rows(3)).fingerprint
    with pytest.raises(TypeError, match="name must be a non-empty string"):
        ps.Dataset.from_source(Rows(3), name="")


def test_empty_source() -> None:
    ds = ps.Dataset.from_source([])
    assert len(ds) == 0
    assert list(ds) == []
    assert_conformant(ds)


def test_resumes_after_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "ids.npy"
    np.save(path, np.arange(60, dtype=np.int64))
    assert len(ps.Dataset.from_source(ArraySource(str(path)))) == 60
    assert_resumes_after_sigkill("from_source", str(path), tmp_path / "state.json")


PROPERTY_SOURCE = st.tuples(st.integers(0, 25), st.booleans()).map(
    lambda args: ps.Dataset.from_source(Rows(args[0], batched=args[1])).map(lambda e: e["id"])
)
