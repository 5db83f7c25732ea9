"""``Dataset.sample_from_datasets``: a blocked weighted mixture, random access over
random-access inputs, exhausted inputs dropping out, schedules, workers and world sizes."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

import pipestate as ps
from pipestate.data._mixture import BLOCK
from pipestate.errors import InvalidArgumentError, StateMismatchError
from pipestate.testing import assert_conformant, assert_restorable_at_every_position
from pipestate.testing._variants import streaming_variant

D = ps.Dataset
pytestmark = pytest.mark.timeout(120)


def ints(ds: Any) -> list[int]:
    return [int(x) for x in ds]


def tagged(k: int, n: int | None = None) -> ps.Dataset:
    """Source ``k``: ``k * 1000 + i`` for ``i < n`` (``None``: forever)."""
    ds = D.range(k * 1000, k * 1000 + (n if n is not None else 1000))
    return ds if n is not None else ds.repeat()


def source_of(x: int) -> int:
    return x // 1000


def is_even(x: np.int64) -> bool:
    return bool(x % 2 == 0)


def negate(x: np.int64) -> np.int64:
    negated: np.int64 = -x
    return negated


def grow_second(count: int) -> list[float]:
    """A curriculum: input 1's weight grows with each block."""
    return [1.0, 1.0 + count // BLOCK]


# ------------------------------------------------------------------ elements
def test_every_element_of_finite_inputs_once_in_each_input_s_order() -> None:
    ds = D.sample_from_datasets([tagged(0, 50), tagged(1, 7), tagged(2, 300)], [0.5, 0.2, 0.3], 4)
    out = ints(ds)
    assert len(ds) == len(out) == 357
    for k, n in enumerate([50, 7, 300]):
        assert [x for x in out if source_of(x) == k] == list(range(k * 1000, k * 1000 + n))


def test_counts_follow_the_weights_at_every_block_boundary() -> None:
    weights = [0.1, 0.25, 0.05, 0.6]
    ds = D.sample_from_datasets([tagged(k) for k in range(4)], weights, seed=2)
    it = iter(ds)
    counts = np.zeros(4)
    for block in range(1, 9):
        for _ in range(BLOCK):
            counts[source_of(int(next(it)))] += 1
        # Within ceil(log2(4)) = 2 elements of t * weight: proportions are exact, not sampled.
        assert np.abs(counts - block * BLOCK * np.array(weights)).max() <= 2


def test_order_within_a_block_is_shuffled_and_depends_on_the_seed() -> None:
    inputs = [tagged(0), tagged(1)]
    first = ints(D.sample_from_datasets(inputs, seed=1).take(64))
    assert first == ints(D.sample_from_datasets(inputs, seed=1).take(64))
    assert first != ints(D.sample_from_datasets(inputs, seed=2).take(64))
    labels = [source_of(x) for x in first]
    assert labels != sorted(labels)
    assert 10 < sum(labels) < 54


def test_one_hot_weights_read_one_input() -> None:
    ds = D.sample_from_datasets([tagged(0, 5), tagged(1, 9)], [0.0, 1.0], seed=0)
    assert ints(ds) == list(range(1000, 1009))
    assert len(ds) == 9


def test_an_exhausted_input_drops_out_and_the_others_renormalise() -> None:
    ds = D.sample_from_datasets([tagged(0, 20), tagged(1), tagged(2)], [0.8, 0.1, 0.1], seed=5)
    out = ints(ds.take(30 + 2 * BLOCK))
    assert sorted(x for x in out if source_of(x) == 0) == list(range(20))
    # A new phase starts at input 0's 21st selection, its blocks counted from there.
    start = ds._phases(0)[1].start  # type: ignore[attr-defined]
    assert 20 <= start < 30
    assert source_of(out[start - 1]) in (0, 1, 2)
    tail = Counter(source_of(x) for x in out[start : start + 2 * BLOCK])
    assert tail == {1: BLOCK, 2: BLOCK}  # 1 and 2 share evenly from then on
    assert ds.cardinality() == ps.data.INFINITE_CARDINALITY


def test_a_tiny_weight_is_read_after_the_others_run_out() -> None:
    ds = D.sample_from_datasets([tagged(0, 5), tagged(1, 5)], [1.0, 1e-300], seed=1)
    assert ints(ds) == [0, 1, 2, 3, 4, 1000, 1001, 1002, 1003, 1004]


def test_stop_on_empty_dataset_ends_at_the_first_selection_of_an_exhausted_input() -> None:
    ds = D.sample_from_datasets([tagged(0, 10), tagged(1)], seed=3, stop_on_empty_dataset=True)
    out = ints(ds)
    assert len(ds) == len(out)
    assert [x for x in out if source_of(x) == 0] == list(range(10))
    # The mixture ends just before input 0's eleventh selection: the unstopped mixture
    # with the same seed selects input 0 next.
    unstopped = ints(D.sample_from_datasets([tagged(0, 10), tagged(1)], seed=3).take(len(out) + 1))
    assert unstopped[: len(out)] == out
    assert source_of(unstopped[len(out)]) == 1
    assert out[-1] != 9 or len(out) == 10


def test_cardinality() -> None:
    finite = [tagged(0, 3), tagged(1, 5)]
    assert D.sample_from_datasets(finite).cardinality() == 8
    assert D.sample_from_datasets(finite, [1, 0]).cardinality() == 3
    stop = D.sample_from_datasets(finite, seed=1, stop_on_empty_dataset=True)
    assert stop.cardinality() == len(ints(stop))
    seedless = D.sample_from_datasets(finite, stop_on_empty_dataset=True)
    assert seedless.cardinality() == ps.data.UNKNOWN_CARDINALITY
    assert D.sample_from_datasets([tagged(0), tagged(1, 5)]).cardinality() == -1
    streaming = D.sample_from_datasets([tagged(0, 5).filter(is_even), tagged(1, 5)])
    assert streaming.cardinality() == ps.data.UNKNOWN_CARDINALITY


def test_random_access_equals_iteration_and_reaches_far_in_o1() -> None:
    ds = D.sample_from_datasets([tagged(0), tagged(1).map(negate), tagged(2)], [1, 2, 3], seed=9)
    out = ints(ds.take(3000))
    assert [int(ds[i]) for i in (0, 1, 1023, 1024, 2999)] == [
        out[i] for i in (0, 1, 1023, 1024, 2999)
    ]
    it = iter(ds)
    state = it.get_state()
    assert state["iterator"] == {"index": 0, "seed": None}
    state["iterator"]["index"] = 10**12
    it.set_state(state)
    assert int(next(it)) == int(ds[10**12])


def test_rerandomize_each_iteration() -> None:
    inputs = [tagged(0, 40), tagged(1, 40)]
    same = ints(D.sample_from_datasets(inputs, seed=1).repeat(2))
    assert same[:80] == same[80:]
    other = ints(D.sample_from_datasets(inputs, seed=1, rerandomize_each_iteration=True).repeat(2))
    assert other[:80] != other[80:]
    assert sorted(other[:80]) == sorted(other[80:])


def test_seedless_draws_an_order_and_saves_it() -> None:
    # As tf.data: without rerandomize_each_iteration one order is drawn for the dataset...
    kept = D.sample_from_datasets([tagged(0), tagged(1)])
    assert ints(kept.take(64)) == ints(kept.take(64))
    # ...and with it, one per iterator.
    ds = D.sample_from_datasets([tagged(0), tagged(1)], rerandomize_each_iteration=True)
    a, b = iter(ds), iter(ds)
    assert [int(next(a)) for _ in range(64)] != [int(next(b)) for _ in range(64)]
    restored = iter(ds)
    restored.set_state(json.loads(json.dumps(a.get_state())))
    assert [int(next(restored)) for _ in range(20)] == [int(next(a)) for _ in range(20)]
    with pytest.raises(ValueError, match="seed=None"):
        ds[0]


def test_dict_elements_and_batches() -> None:
    a = D.from_tensor_slices({"x": np.arange(10), "y": np.zeros(10)})
    b = D.from_tensor_slices({"x": np.arange(100, 110), "y": np.ones(10)})
    batches = list(D.sample_from_datasets([a, b], seed=0).batch(4))
    xs = np.concatenate([batch["x"] for batch in batches])
    assert sorted(xs.tolist()) == list(range(10)) + list(range(100, 110))
    for batch in batches:
        np.testing.assert_array_equal(batch["y"], (batch["x"] >= 100).astype(float))


def fail_on_1003(x: np.int64) -> np.int64:
    if x == 1003:
        raise ValueError("bad element 1003")
    return x


def test_an_input_s_error_surfaces_at_its_output_and_the_rest_follows() -> None:
    good = ints(D.sample_from_datasets([tagged(0, 20), tagged(1, 20)], seed=4))
    ds = D.sample_from_datasets([tagged(0, 20), tagged(1, 20).map(fail_on_1003)], seed=4)
    streamed = streaming_variant(ds)
    assert streamed is not None
    for path in (ds, streamed):
        it = iter(path)
        at = good.index(1003)
        assert [int(next(it)) for _ in range(at)] == good[:at]
        with pytest.raises(ValueError, match="bad element 1003"):
            next(it)
        assert ints(it) == good[at + 1 :]


def test_large_elements_are_read_per_request_not_per_block() -> None:
    images = np.arange(12 * 64 * 64, dtype=np.float64).reshape(12, 64, 64)
    ds = D.sample_from_datasets(
        [D.from_tensor_slices(images), D.from_tensor_slices(-images)], seed=2
    )
    assert not ds._small_elements()  # type: ignore[attr-defined]  # a block would be 32 MiB
    out = list(ds.batch(5))
    firsts = sorted(float(image[0, 0]) for batch in out for image in batch)
    assert firsts == sorted([i * 4096.0 for i in range(12)] + [-i * 4096.0 for i in range(12)])
    assert_conformant(ds, max_elements=30)


# ------------------------------------------------------------------ schedules
def test_a_schedule_sets_each_block_s_counts() -> None:
    ds = D.sample_from_datasets([tagged(0), tagged(1)], grow_second, seed=1)
    it = iter(ds)
    for block in range(4):
        counts = Counter(source_of(int(next(it))) for _ in range(BLOCK))
        expected = BLOCK * (1 + block) / (2 + block)
        assert abs(counts[1] - expected) <= 1


def wandering(count: int) -> list[float]:
    """Weights that change every block, some of them zero at times."""
    rng = np.random.default_rng(count)
    weights = rng.random(5) * (rng.random(5) > 0.3)
    weights[count // BLOCK % 5] += 0.1
    return [float(w) for w in weights]


def test_a_schedule_tracks_its_running_ideal_counts() -> None:
    ds = D.sample_from_datasets([tagged(k) for k in range(5)], wandering, seed=3)
    it = iter(ds)
    ideal = np.zeros(5)
    counts = np.zeros(5)
    for block in range(8):
        weights = np.array(wandering(block * BLOCK))
        ideal += BLOCK * weights / weights.sum()
        in_block = np.zeros(5)
        for _ in range(BLOCK):
            in_block[source_of(int(next(it)))] += 1
        counts += in_block
        assert np.abs(counts - ideal).max() <= 3  # ceil(log2(5)) elements
        assert (in_block[weights == 0] == 0).all()  # a zero weight gives nothing in its block


def test_a_schedule_resumes_exactly_and_stays_random_access() -> None:
    ds = D.sample_from_datasets([tagged(0), tagged(1)], grow_second, seed=1)
    out = ints(ds.take(3 * BLOCK))
    it = iter(ds)
    state = it.get_state()
    state["iterator"]["index"] = 2 * BLOCK + 5
    it.set_state(state)
    assert [int(next(it)) for _ in range(10)] == out[2 * BLOCK + 5 : 2 * BLOCK + 15]
    assert_restorable_at_every_position(ds.take(40), max_elements=40)


def test_a_schedule_over_finite_inputs_stops_where_an_input_runs_out() -> None:
    def second_only_later(count: int) -> list[float]:
        return [1.0, 0.0 if count < BLOCK else 1.0]

    ds = D.sample_from_datasets(
        [tagged(0), tagged(1, 5)], second_only_later, seed=2, stop_on_empty_dataset=True
    )
    assert ds.cardinality() == ps.data.UNKNOWN_CARDINALITY  # found by reading
    out = ints(ds)
    assert [x for x in out if source_of(x) == 1] == list(range(1000, 1005))
    assert all(source_of(x) == 0 for x in out[:BLOCK])
    assert_conformant(ds, max_elements=BLOCK + 40, max_positions=20)


def test_schedule_errors() -> None:
    with pytest.raises(ValueError, match=r"schedule needs infinite inputs, but inputs \[1\]"):
        D.sample_from_datasets([tagged(0), tagged(1, 3)], grow_second)
    with pytest.raises(ValueError, match=r"weights\(0\) must hold one weight per dataset \(2\)"):
        D.sample_from_datasets([tagged(0), tagged(1)], lambda t: [1.0])
    late = D.sample_from_datasets([tagged(0), tagged(1)], lambda t: [1.0, -1.0 if t else 1.0])
    with pytest.raises(ValueError, match=r"weights\(1024\) must be finite, non-negative"):
        list(late.take(BLOCK + 1))
    ended = D.sample_from_datasets([tagged(0), tagged(1, 5).filter(is_even)], grow_second, seed=1)
    with pytest.raises(InvalidArgumentError, match="input 1 ended, but a weights schedule"):
        list(ended.take(100))


# ------------------------------------------------------------------ conformance
@pytest.mark.parametrize(
    "ds",
    [
        pytest.param(
            D.sample_from_datasets([tagged(0, 6), tagged(1, 3), tagged(2, 9)], [2, 1, 1], seed=1),
            id="finite",
        ),
        pytest.param(
            D.sample_from_datasets(
                [tagged(0, 6), tagged(1, 3)], seed=2, stop_on_empty_dataset=True
            ),
            id="stop",
        ),
        pytest.param(
            D.sample_from_datasets(
                [tagged(0, 6), tagged(1, 0)], seed=2, stop_on_empty_dataset=True
            ),
            id="stop-at-an-empty-input",
        ),
        pytest.param(
            D.sample_from_datasets([tagged(0, 5), tagged(1, 5)], stop_on_empty_dataset=True),
            id="stop-seedless",
        ),
        pytest.param(D.sample_from_datasets([tagged(0, 8), tagged(1)]).take(25), id="seedless"),
        pytest.param(
            D.sample_from_datasets([tagged(0, 4).filter(is_even), tagged(1, 6)], seed=3),
            id="streaming-input",
        ),
        pytest.param(
            D.sample_from_datasets([tagged(0, 4), tagged(1, 4)], [1, 0], seed=3), id="zero-weight"
        ),
        pytest.param(
            D.sample_from_datasets(
                [tagged(0, 5), tagged(1, 5)], seed=4, rerandomize_each_iteration=True
            ).repeat(3),
            id="rerandomized-repeat",
        ),
        pytest.param(
            D.sample_from_datasets([tagged(0, 7), tagged(1, 7)], seed=5).batch(3), id="then-batch"
        ),
        pytest.param(
            D.sample_from_datasets([tagged(0), tagged(1)], grow_second, seed=6).take(20),
            id="schedule",
        ),
    ],
)
def test_conformance(ds: ps.Dataset) -> None:
    assert_conformant(ds, max_elements=40)


def test_streaming_path_equals_random_access_path() -> None:
    ds = D.sample_from_datasets(
        [tagged(0, 30), tagged(1, 500), tagged(2, 2000)], [0.5, 0.3, 0.2], seed=8
    )
    streamed = streaming_variant(ds)
    assert streamed is not None
    assert not streamed._random_access
    assert ints(streamed) == ints(ds)


def test_streaming_state_is_small_and_read_strictly() -> None:
    ds = D.sample_from_datasets([tagged(0, 3).filter(is_even), tagged(1, 4)], seed=1)
    it = iter(ds)
    out = [int(next(it)) for _ in range(4)]
    state = it.get_state()
    inner = state["iterator"]
    assert set(inner) == {"index", "phase", "phase_start", "active", "ended", "parents", "seed"}
    bad = json.loads(json.dumps(state))
    bad["iterator"]["active"] = [1, 0]
    with pytest.raises(StateMismatchError, match=r"state\['active'\] must be a sorted list"):
        it.set_state(bad)
    bad["iterator"]["active"] = [0, 1]
    bad["iterator"]["phase"] = 9
    with pytest.raises(StateMismatchError, match=r"state\['phase'\]=9 is out of range"):
        it.set_state(bad)
    rest = ints(it)
    assert sorted(out + rest) == [0, 2, 1000, 1001, 1002, 1003]


# ------------------------------------------------------------------ workers and world sizes
def test_same_elements_under_loader_workers_and_threads() -> None:
    ds = D.sample_from_datasets([tagged(0, 300), tagged(1, 200).map(negate)], [3, 1], seed=7)
    expected = ints(ds)
    assert ints(ds.prefetch(4)) == expected
    for workers in (0, 2):
        loader = ps.data.Loader(ds, num_workers=workers, chunk_size=16)
        it = iter(loader)
        first = [int(next(it)) for _ in range(123)]
        state = it.get_state()
        it.close()
        resumed = iter(ps.data.Loader(ds, num_workers=2 - workers, chunk_size=7))
        resumed.set_state(state)
        assert first + ints(resumed) == expected
        resumed.close()


def test_a_schedule_mixture_read_by_spawned_workers() -> None:
    ds = D.sample_from_datasets([tagged(0), tagged(1)], grow_second, seed=3).take(2 * BLOCK + 50)
    expected = ints(ds)  # the dataset's schedule table (and its lock) exist now
    loader = ps.data.Loader(ds, num_workers=2, chunk_size=256, multiprocessing_context="spawn")
    with iter(loader) as it:
        assert [int(x) for x in it] == expected


def test_resumes_under_another_world_size() -> None:
    mixture = D.sample_from_datasets([tagged(0, 400), tagged(1, 600)], [0.3, 0.7], seed=11)
    everything = ints(mixture)

    def job(world: int, rank: int) -> ps.Dataset:
        return mixture.shard(world, rank).batch(12 // world)

    consumed: list[int] = []
    state = None
    for world, steps in ((4, 5), (3, 7), (2, 4), (6, 3)):
        iterators = [iter(job(world, rank)) for rank in range(world)]
        for it in iterators:
            if state is not None:
                it.set_state(state)
        for _ in range(steps):
            for it in iterators:
                consumed.extend(np.asarray(next(it)).tolist())
        state = json.loads(json.dumps(iterators[0].get_state()))
    assert sorted(consumed) == sorted(everything[: len(consumed)])
    assert len(consumed) == 12 * (5 + 7 + 4 + 3)


# ------------------------------------------------------------------ arguments
@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((), {"datasets": []}, ValueError, "datasets must not be empty"),
        ((), {"datasets": D.range(3)}, TypeError, "datasets must be a non-empty list"),
        ((), {"datasets": [D.range(3), [1]]}, TypeError, r"datasets\[1\] must be a Dataset"),
        ((D.range(3),), {"weights": [1, 2]}, ValueError, r"one weight per dataset \(1\)"),
        ((D.range(3), D.range(2)), {"weights": [1, -1]}, ValueError, "non-negative"),
        ((D.range(3), D.range(2)), {"weights": [0, 0]}, ValueError, "not all zero"),
        ((D.range(3), D.range(2)), {"weights": [1, float("nan")]}, ValueError, "finite"),
        ((D.range(3), D.range(2)), {"weights": ["a", 1]}, TypeError, "sequence of 2 numbers"),
        ((D.range(3),), {"weights": D.range(1)}, TypeError, "weights as a Dataset"),
        ((D.range(3),), {"seed": 1.5}, TypeError, "seed must be an integer"),
        ((D.range(3),), {"stop_on_empty_dataset": 1}, TypeError, "stop_on_empty_dataset must"),
        ((D.range(3),), {"rerandomize_each_iteration": "y"}, TypeError, "rerandomize_each"),
        ((D.range(3),), {"name": ""}, TypeError, "name must be a non-empty string"),
        (
            (D.range(3), D.from_tensors(np.zeros(2))),
            {},
            TypeError,
            "sample_from_datasets",
        ),
    ],
)
def test_bad_arguments(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    datasets = kwargs.pop("datasets", list(args))
    with pytest.raises(error, match=match):
        D.sample_from_datasets(datasets, **kwargs)


def test_name_is_in_the_repr_not_the_fingerprint() -> None:
    plain = D.sample_from_datasets([tagged(0, 3), tagged(1, 3)], seed=1)
    named = D.sample_from_datasets([tagged(0, 3), tagged(1, 3)], seed=1, name="mix")
    assert "name='mix'" in repr(named)
    assert named.fingerprint == plain.fingerprint


# ------------------------------------------------ the property tests' strategy
# Collected by tests/data/_strategies.py for tests/data/test_exactly_once.py.
PROPERTY_OP = st.tuples(st.floats(0.05, 0.95), st.integers(0, 2**20), st.booleans()).map(
    lambda a: (
        lambda ds: D.sample_from_datasets(
            [ds, ds.take(3)], [a[0], 1 - a[0]], seed=a[1], stop_on_empty_dataset=a[2]
        )
    )
)
