"""``pipestate.torch.DataLoader``: torch's batches, StatefulDataLoader's API, exact O(1) state."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pipestate as ps  # noqa: E402
from pipestate.errors import StateMismatchError  # noqa: E402
from pipestate.torch import DataLoader  # noqa: E402

pytestmark = pytest.mark.timeout(120)


class Samples(torch.utils.data.Dataset):  # type: ignore[misc]
    """Dicts of tensors (float, bf16), ints and strings: what default_collate meets in practice."""

    def __init__(self, length: int = 23) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "x": torch.arange(3, dtype=torch.float32) + index,
            "half": torch.full((2,), index / 4, dtype=torch.bfloat16),
            "label": index % 5,
            "name": f"item-{index}",
        }


class Ragged(torch.utils.data.Dataset):  # type: ignore[misc]
    """Tensors whose length depends on the index: batches only a custom collate_fn can build."""

    def __len__(self) -> int:
        return 11

    def __getitem__(self, index: int) -> Any:
        return torch.arange(index % 4), index


def pad_collate(samples: list[Any]) -> tuple[Any, Any]:
    tensors, labels = zip(*samples)
    padded = torch.nn.utils.rnn.pad_sequence(list(tensors), batch_first=True)
    return padded, torch.tensor(labels)


class EveryThird(torch.utils.data.Sampler):  # type: ignore[misc]
    """A deterministic custom sampler without a state_dict."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __iter__(self) -> Any:
        return iter([*range(0, self.length, 3), *range(1, self.length, 3)])

    def __len__(self) -> int:
        return len(range(0, self.length, 3)) + len(range(1, self.length, 3))


class Unseeded(EveryThird):
    """A custom sampler drawing a new order on every pass, with no state to restore it."""

    def __iter__(self) -> Any:
        return iter(torch.randperm(self.length).tolist())

    def __len__(self) -> int:
        return self.length


class SeededSampler(Unseeded):
    """A custom random sampler with a state_dict(): its epoch's order restores exactly."""

    def __init__(self, length: int) -> None:
        super().__init__(length)
        self.generator = torch.Generator().manual_seed(7)

    def __iter__(self) -> Any:
        return iter(torch.randperm(self.length, generator=self.generator).tolist())

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


class RaggedBatches(torch.utils.data.Sampler):  # type: ignore[misc]
    def __iter__(self) -> Any:
        return iter([[0, 1, 2], [5], [3, 4, 6, 7], [10, 9]])

    def __len__(self) -> int:
        return 4


def assert_same(actual: Any, expected: Any, where: str = "batch") -> None:
    """Equal structure, types, dtypes and values."""
    assert type(actual) is type(expected), (where, type(actual), type(expected))
    if isinstance(expected, torch.Tensor):
        assert actual.dtype == expected.dtype, where
        assert actual.shape == expected.shape, where
        assert torch.equal(actual, expected), where
    elif isinstance(expected, dict):
        assert list(actual) == list(expected), where
        for key in expected:
            assert_same(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for i, (a, b) in enumerate(zip(actual, expected)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(actual, expected)
    else:
        assert actual == expected, where


def assert_batches(actual: list[Any], expected: list[Any]) -> None:
    assert len(actual) == len(expected)
    for i, (a, b) in enumerate(zip(actual, expected)):
        assert_same(a, b, f"batch {i}")


def labels(batches: list[Any]) -> list[list[int]]:
    return [batch["label"].tolist() if isinstance(batch, dict) else batch for batch in batches]


def names(batches: list[Any]) -> list[str]:
    return [name for batch in batches for name in batch["name"]]


# --------------------------------------------------------------------- parity
PARITY = {
    "batch-4": ({"batch_size": 4}, Samples),
    "batch-4-drop-last": ({"batch_size": 4, "drop_last": True}, Samples),
    "batch-1": ({}, Samples),
    "unbatched": ({"batch_size": None}, Samples),
    "custom-collate": ({"batch_size": 3, "collate_fn": pad_collate}, Ragged),
    "custom-sampler": ({"batch_size": 2, "sampler": EveryThird(23)}, Samples),
    "custom-batch-sampler": ({"batch_sampler": RaggedBatches()}, Samples),
    "sequential-batch-sampler": (
        {
            "batch_sampler": torch.utils.data.BatchSampler(
                torch.utils.data.SequentialSampler(range(23)), 5, True
            )
        },
        Samples,
    ),
}


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize(("kwargs", "make"), PARITY.values(), ids=PARITY.keys())
def test_batches_equal_torch_dataloader(
    kwargs: dict[str, Any], make: Any, num_workers: int
) -> None:
    dataset = make()
    expected = list(torch.utils.data.DataLoader(dataset, **kwargs))
    loader = DataLoader(dataset, num_workers=num_workers, **kwargs)
    assert len(loader) == len(expected)
    assert_batches(list(loader), expected)


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize(("kwargs", "make"), PARITY.values(), ids=PARITY.keys())
def test_batches_equal_stateful_dataloader(
    kwargs: dict[str, Any], make: Any, num_workers: int
) -> None:
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    dataset = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = list(stateful.StatefulDataLoader(dataset, **kwargs))
    assert_batches(list(DataLoader(dataset, num_workers=num_workers, **kwargs)), expected)


def squared(x: Any) -> dict[str, Any]:
    return {"x": x, "sq": x * x}


def test_a_pipestate_dataset_is_read_by_index() -> None:
    dataset = ps.Dataset.range(10).map(squared)
    expected = list(torch.utils.data.DataLoader(dataset, batch_size=3))
    assert_batches(list(DataLoader(dataset, batch_size=3)), expected)
    assert_batches(list(DataLoader(dataset, batch_size=3, num_workers=2)), expected)


# ----------------------------------------------------------------------- state
def _epoch(loader: DataLoader) -> list[Any]:
    return labels(list(loader))


@pytest.mark.parametrize("shuffle", [False, True], ids=["in-order", "shuffled"])
def test_restore_at_every_position_under_other_worker_counts(shuffle: bool) -> None:
    def make(workers: int) -> DataLoader:
        generator = torch.Generator().manual_seed(3)
        return DataLoader(
            Samples(), batch_size=4, shuffle=shuffle, generator=generator, num_workers=workers
        )

    full = list(make(0))
    for cut in range(len(full) + 1):
        saved = make(2)
        it = iter(saved)
        head = [next(it) for _ in range(cut)]
        state = json.loads(json.dumps(saved.state_dict()))  # plain values: JSON carries it
        saved.close()
        for workers in (0, 3):
            resumed = make(workers)
            resumed.load_state_dict(state)
            assert_batches(head + list(resumed), full)


def test_state_is_a_few_integers_whatever_the_position() -> None:
    loader = DataLoader(Samples(1000), batch_size=2, shuffle=True)
    it = iter(loader)
    for _ in range(300):
        next(it)
    state = loader.state_dict()
    assert state["position"]["iterator"]["index"] == 300
    assert len(json.dumps(state)) < 400


def test_each_iter_is_a_new_epoch_with_a_new_shuffle_and_resumes_across_epochs() -> None:
    def make(workers: int = 0) -> DataLoader:
        generator = torch.Generator().manual_seed(11)
        return DataLoader(
            Samples(), batch_size=5, shuffle=True, generator=generator, num_workers=workers
        )

    reference = make()
    epochs = [names(list(reference)) for _ in range(3)]
    assert epochs[0] != epochs[1] != epochs[2]
    assert all(sorted(epoch) == sorted(epochs[0]) for epoch in epochs)

    loader = make(2)
    assert names(list(loader)) == epochs[0]
    it = iter(loader)
    head = names([next(it), next(it)])
    state = loader.state_dict()
    assert state["epoch"] == 1
    resumed = make(3)
    resumed.load_state_dict(state)
    assert head + names(list(resumed)) == epochs[1]
    assert names(list(resumed)) == epochs[2]


def test_a_state_taken_at_the_end_of_an_epoch_resumes_with_the_next() -> None:
    loader = DataLoader(
        Samples(), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(1)
    )
    first = names(list(loader))
    state = loader.state_dict()
    assert state["finished"]
    second = names(list(loader))
    resumed = DataLoader(Samples(), batch_size=4, shuffle=True)
    resumed.load_state_dict(state)
    assert names(list(resumed)) == second != first


def test_set_epoch_chooses_the_shuffle_and_keeps_a_resume() -> None:
    def make() -> DataLoader:
        return DataLoader(
            Samples(), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(5)
        )

    plain = make()
    epochs = [names(list(plain)) for _ in range(4)]
    loader = make()
    loader.set_epoch(3)
    assert names(list(loader)) == epochs[3]
    loader.set_epoch(1)
    it = iter(loader)
    head = names([next(it)])
    state = loader.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    resumed.set_epoch(1)  # the usual loop: set_epoch(epoch) then iterate
    assert head + names(list(resumed)) == epochs[1]
    # A state taken at the end of epoch 1, resumed by a loop that sets epoch 1 again:
    # that epoch is done, and the next is epoch 2.
    finished = resumed.state_dict()
    again = make()
    again.load_state_dict(finished)
    again.set_epoch(1)
    assert list(again) == []
    again.set_epoch(2)
    assert names(list(again)) == epochs[2]


def test_set_epoch_to_another_epoch_after_a_load_warns_and_drops_the_position() -> None:
    loader = DataLoader(Samples(), batch_size=4)
    it = iter(loader)
    next(it)
    resumed = DataLoader(Samples(), batch_size=4)
    resumed.load_state_dict(loader.state_dict())
    with pytest.warns(UserWarning, match="dropped"):
        resumed.set_epoch(4)
    assert len(list(resumed)) == len(loader)


def test_the_shuffle_is_reproducible_from_a_generator_or_the_global_seed() -> None:
    def epochs(**kwargs: Any) -> list[list[str]]:
        loader = DataLoader(Samples(), batch_size=4, shuffle=True, **kwargs)
        return [names(list(loader)) for _ in range(2)]

    assert epochs(generator=torch.Generator().manual_seed(0)) == epochs(
        generator=torch.Generator().manual_seed(0)
    )
    assert epochs(generator=torch.Generator().manual_seed(0)) != epochs(
        generator=torch.Generator().manual_seed(1)
    )
    torch.manual_seed(4)
    first = epochs()
    torch.manual_seed(4)
    assert epochs() == first


def test_a_random_sampler_is_pipestate_s_shuffle() -> None:
    dataset = Samples()
    sampler = torch.utils.data.RandomSampler(dataset, generator=torch.Generator().manual_seed(2))
    loader = DataLoader(dataset, batch_size=4, sampler=sampler)
    it = iter(loader)
    head = names([next(it)])
    state = loader.state_dict()
    assert state["sampler"] is None
    assert state["seed"] is not None
    resumed = DataLoader(
        dataset,
        batch_size=4,
        sampler=torch.utils.data.RandomSampler(dataset),
        num_workers=2,
    )
    resumed.load_state_dict(state)
    assert sorted(head + names(list(resumed))) == sorted(names(list(DataLoader(dataset))))


@pytest.mark.parametrize(
    "make_sampler", [EveryThird, SeededSampler], ids=["deterministic", "stateful"]
)
def test_custom_samplers_restore_exactly(make_sampler: Any) -> None:
    def make(workers: int) -> DataLoader:
        return DataLoader(Samples(), batch_size=3, sampler=make_sampler(23), num_workers=workers)

    reference = make(0)
    epochs = [names(list(reference)) for _ in range(2)]
    for cut in (0, 2, len(reference)):
        loader = make(2)
        list(loader)
        it = iter(loader)
        head = names([next(it) for _ in range(cut)])
        state = loader.state_dict()
        assert state["sampler"]["crc32"] >= 0
        resumed = make(0)
        resumed.load_state_dict(state)
        assert head + names(list(resumed)) == epochs[1]


def test_a_custom_sampler_that_cannot_give_its_indices_again_is_refused() -> None:
    loader = DataLoader(Samples(), batch_size=3, sampler=Unseeded(23))
    it = iter(loader)
    next(it)
    resumed = DataLoader(Samples(), batch_size=3, sampler=Unseeded(23))
    resumed.load_state_dict(loader.state_dict())
    with pytest.raises(StateMismatchError, match="other indices"):
        iter(resumed)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"batch_size": 5}, "does not fit"),
        ({"shuffle": False}, "does not shuffle"),
        ({"sampler": EveryThird(23), "shuffle": None}, "custom sampler"),
    ],
)
def test_a_state_of_another_loader_is_refused(change: dict[str, Any], message: str) -> None:
    kwargs: dict[str, Any] = {"batch_size": 4, "shuffle": True}
    loader = DataLoader(Samples(), **kwargs)
    it = iter(loader)
    next(it)
    other = DataLoader(Samples(), **{**kwargs, **change})

    def resume() -> None:  # refused by load_state_dict or, at the latest, by iter()
        other.load_state_dict(loader.state_dict())
        iter(other)

    with pytest.raises(StateMismatchError, match=message):
        resume()


def test_a_stateful_dataloader_state_is_refused_with_an_explanation() -> None:
    foreign = {"_sampler_iter_state": {"samples_yielded": 8}, "_num_yielded": 2}
    with pytest.raises(StateMismatchError, match="StatefulDataLoader"):
        DataLoader(Samples()).load_state_dict(foreign)


# --------------------------------------------------------------------- elements
class GradAndHalf(torch.utils.data.Dataset):  # type: ignore[misc]
    def __len__(self) -> int:
        return 6

    def __getitem__(self, index: int) -> Any:
        weight = torch.full((2,), float(index), requires_grad=True)
        return weight, torch.full((3,), index, dtype=torch.bfloat16), np.float32(index)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_bf16_and_tensors_that_require_grad(num_workers: int) -> None:
    batches = list(DataLoader(GradAndHalf(), batch_size=4, num_workers=num_workers))
    expected = list(torch.utils.data.DataLoader(GradAndHalf(), batch_size=4))
    for batch, reference in zip(batches, expected):
        weight, half, number = batch
        assert half.dtype == torch.bfloat16
        assert torch.equal(half, reference[1])
        assert torch.equal(weight.detach(), reference[0].detach())
        assert torch.equal(number, reference[2])
        # In this process the collated batch is returned as is; from a worker it is detached.
        assert weight.requires_grad == (num_workers == 0)


def test_pin_memory_without_an_accelerator_warns_and_loads() -> None:
    with pytest.warns(UserWarning, match="pin_memory"):
        loader = DataLoader(Samples(), batch_size=4, pin_memory=True)
    assert len(list(loader)) == len(loader)


# -------------------------------------------------------------------- arguments
BAD_ARGUMENTS = {
    "negative-workers": ({"num_workers": -1}, ValueError, "num_workers must be >= 0"),
    "float-workers": ({"num_workers": 1.5}, TypeError, "num_workers must be an int"),
    "zero-batch": ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),
    "sampler-and-shuffle": (
        {"sampler": EveryThird(23), "shuffle": True},
        ValueError,
        "mutually exclusive with shuffle",
    ),
    "batch-sampler-and-batch-size": (
        {"batch_sampler": RaggedBatches(), "batch_size": 4},
        ValueError,
        "batch_sampler is mutually exclusive",
    ),
    "batch-sampler-and-drop-last": (
        {"batch_sampler": RaggedBatches(), "drop_last": True},
        ValueError,
        "batch_sampler is mutually exclusive",
    ),
    "batch-sampler-and-sampler": (
        {"batch_sampler": RaggedBatches(), "sampler": EveryThird(23)},
        ValueError,
        "batch_sampler is mutually exclusive",
    ),
    "drop-last-unbatched": (
        {"batch_size": None, "drop_last": True},
        ValueError,
        "needs a batch_size",
    ),
    "prefetch-without-workers": ({"prefetch_factor": 2}, ValueError, "prefetch_factor"),
    "zero-prefetch": ({"prefetch_factor": 0, "num_workers": 1}, ValueError, "prefetch_factor"),
    "persistent-without-workers": ({"persistent_workers": True}, ValueError, "persistent_workers"),
    "negative-timeout": ({"timeout": -1}, ValueError, "timeout"),
    "collate-not-callable": ({"collate_fn": 3}, TypeError, "collate_fn must be callable"),
    "init-not-callable": ({"worker_init_fn": "f"}, TypeError, "worker_init_fn must be callable"),
    "bad-generator": ({"generator": 3}, TypeError, "generator must be a torch.Generator"),
    "shuffle-not-bool": ({"shuffle": "yes"}, TypeError, "shuffle must be a bool"),
    "bad-context": (
        {"multiprocessing_context": "threads", "num_workers": 1},
        ValueError,
        "multiprocessing_context",
    ),
    "bad-snapshot": ({"snapshot_every_n_steps": 0}, ValueError, "snapshot_every_n_steps"),
}


@pytest.mark.parametrize(
    ("kwargs", "error", "message"), BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS.keys()
)
def test_bad_arguments_are_refused(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        DataLoader(Samples(), **kwargs)


def test_iterable_and_unindexable_datasets_are_refused() -> None:
    class Stream(torch.utils.data.IterableDataset):  # type: ignore[misc]
        def __iter__(self) -> Any:
            return iter(range(3))

    with pytest.raises(TypeError, match="IterableDataset"):
        DataLoader(Stream())
    with pytest.raises(TypeError, match="map-style"):
        DataLoader(iter(range(3)))
    with pytest.raises(TypeError, match="random access"):
        DataLoader(ps.Dataset.range(5).filter(lambda x: x > 1))


def test_without_torch_the_import_error_names_the_extra() -> None:
    code = "import sys; sys.modules['torch'] = None; import pipestate.torch"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "ImportError: pipestate.torch needs PyTorch" in done.stderr
    assert "pip install pipestate[torch]" in done.stderr


def test_a_distributed_sampler_resumes_exactly_with_set_epoch() -> None:
    def make(rank: int) -> DataLoader:
        sampler = torch.utils.data.DistributedSampler(
            Samples(), num_replicas=2, rank=rank, shuffle=True, seed=3
        )
        return DataLoader(Samples(), batch_size=3, sampler=sampler, num_workers=2)

    reference = make(1)
    epochs = []
    for epoch in range(2):
        reference.set_epoch(epoch)  # forwarded to DistributedSampler.set_epoch
        epochs.append(names(list(reference)))
    assert epochs[0] != epochs[1]
    loader = make(1)
    loader.set_epoch(1)
    it = iter(loader)
    head = names([next(it), next(it)])
    resumed = make(1)
    resumed.load_state_dict(loader.state_dict())
    resumed.set_epoch(1)
    assert head + names(list(resumed)) == epochs[1]
    forgot = make(1)  # no set_epoch: the sampler would give epoch 0's indices
    forgot.load_state_dict(loader.state_dict())
    with pytest.raises(StateMismatchError, match="other indices"):
        iter(forgot)


def test_a_state_taken_before_iterating_restores_with_any_sampler() -> None:
    for kwargs in ({"shuffle": True}, {"sampler": EveryThird(23)}):
        loader = DataLoader(Samples(), batch_size=3, **kwargs)
        state = loader.state_dict()
        assert state["position"] is None
        expected = names(list(loader))
        resumed = DataLoader(Samples(), batch_size=3, **kwargs)
        resumed.load_state_dict(state)
        assert names(list(resumed)) == expected


def test_the_state_goes_into_a_pipestate_checkpoint(tmp_path: Any) -> None:
    def make() -> DataLoader:
        return DataLoader(Samples(), batch_size=4, shuffle=True, num_workers=2)

    loader = make()
    it = iter(loader)
    head = names([next(it), next(it)])
    path = ps.Checkpoint(loader=loader).save(str(tmp_path / "ckpt"))
    rest = names(list(it))
    resumed = make()
    ps.Checkpoint(loader=resumed).restore(path).assert_consumed()
    assert names(list(resumed)) == rest
    assert sorted(head + rest) == sorted(names(list(DataLoader(Samples()))))
