"""Per-op profiles: the right bottleneck and suggestion, the same elements and states as
``iter(ds)``, and nothing left behind in the profiled dataset."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pipestate as ps
from pipestate.data._profile import ProfileReport
from pipestate.data.iterator import IndexIterator
from pipestate.testing import assert_elements_equal

SLEEP = 0.005  # far above any op's own cost, even on a busy machine


def _slow(x: Any) -> Any:
    time.sleep(SLEEP)
    return x


def _slow_source() -> Any:
    for i in range(200):
        time.sleep(SLEEP)
        yield np.int64(i)


def _ops(report: ProfileReport) -> dict[str, Any]:
    return {op.op.split("(")[0]: op for op in report.ops}


def _spin(seconds: float) -> Any:
    """A map function that keeps the CPU busy for ``seconds`` (a known cost, unlike sleep)."""

    def spin(x: Any) -> Any:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
        return x

    spin.__name__ = f"spin_{round(seconds * 1e6)}us"
    return spin


def _is_even(x: Any) -> bool:
    return bool(x % 2 == 0)


def _read(ds: ps.Dataset, count: int, sampling: bool) -> ProfileReport:
    it = ps.data.profiled(ds, sampling=sampling)
    for _ in range(count):
        next(it)
    report = it.stats()
    it.close()
    return report


def test_a_slow_map_is_the_bottleneck_and_parallel_map_is_suggested() -> None:
    report = ps.Dataset.range(100).map(_slow).map(lambda x: x + 1).batch(2).profile(10)
    assert report.bottleneck == "map(map_func='_slow')"
    assert "num_parallel_calls=ps.data.AUTOTUNE" in report.suggestion
    assert "batch() before map()" in report.suggestion
    assert report.elements == 10
    ops = _ops(report)
    assert ops["range"].elements >= 20
    assert ops["batch"].elements >= 10  # and what it read ahead
    assert report.ops[1].self_seconds >= 20 * SLEEP  # the slow map, 20 calls
    assert report.ops[1].total_seconds >= report.ops[1].self_seconds
    assert report.ops[-1].inputs == [2]
    assert "bottleneck: map(map_func='_slow')" in report.format()


def test_a_slow_source_is_the_bottleneck() -> None:
    ds = (
        ps.Dataset.from_generator(_slow_source)
        .map(lambda x: x * 2)
        .with_options(ps.data.Options(external_state_policy="ignore"))
    )
    report = ds.profile(num_elements=20)
    assert report.bottleneck.startswith("from_generator(generator='_slow_source'")
    assert "the source is the slowest stage" in report.suggestion
    assert ".prefetch(ps.data.AUTOTUNE)" in report.suggestion


def test_a_consumer_bound_pipeline_suggests_prefetch() -> None:
    report = ps.Dataset.range(100).map(lambda x: x + 1).profile(20, consume=_slow)
    assert report.bottleneck == "consumer"
    assert "Add .prefetch(ps.data.AUTOTUNE)" in report.suggestion
    assert report.consumer_seconds >= 20 * SLEEP
    assert report.next_seconds < report.consumer_seconds


def test_a_prefetch_starved_by_a_slow_parallel_map_is_reported() -> None:
    ds = ps.Dataset.range(200).shuffle(8, seed=1).map(_slow, num_parallel_calls=2).prefetch(2)
    report = ds.profile(num_elements=40)
    assert report.bottleneck == "map(map_func='_slow', num_parallel_calls=2)"
    assert "Loader(ds, num_workers=...)" in report.suggestion
    ops = _ops(report)
    assert ops["map"].threads == 2
    assert ops["prefetch"].waited_seconds > 0
    assert {"pipestate-map-0", "pipestate-map-1"} <= report.worker_threads.keys()
    assert not any(op.estimated for op in report.ops)  # with threads, every call is timed


def test_cheap_streaming_ops_are_timed_in_samples_and_counted_exactly() -> None:
    ds = ps.Dataset.range(40_000).map(lambda x: x + 1).filter(_is_even).shuffle(100, seed=3)
    ds = ds.batch(8)
    sampled, exact = _read(ds, 600, sampling=True), _read(ds, 600, sampling=False)
    # Counts are exact even in the middle of a run of untimed calls. (The random-access
    # range and map are read in blocks whose size follows their timing: how far they read
    # ahead of the filter varies from run to run, so from the filter on.)
    first = [op.op.split("(")[0] for op in exact.ops].index("filter")
    assert [op.elements for op in sampled.ops[first:]] == [op.elements for op in exact.ops[first:]]
    assert [op.calls for op in sampled.ops[first:]] == [op.calls for op in exact.ops[first:]]
    for report in (sampled, exact):
        read = [op.elements for op in report.ops[:first]]
        assert read == [read[0]] * first
        assert read[0] >= report.ops[first].calls
    assert _ops(sampled)["batch"].elements == 600
    estimated = [op for op in sampled.ops if op.estimated]
    assert {op.op.split("(")[0] for op in estimated} >= {"filter", "shuffle"}
    assert all(op.timed_calls < op.calls / 4 for op in estimated)
    assert all(not op.estimated and op.timed_calls == op.calls for op in exact.ops)
    text = sampled.format()
    assert "~ estimated: " in text
    assert f"{sum(op.timed_calls for op in estimated):,} of their" in text
    assert "~" not in exact.format()
    # An op's cumulative time includes its own and (here, read by it only) its input's.
    for report in (sampled, exact):
        for op in report.ops:
            assert op.total_seconds >= op.self_seconds
            for i in op.inputs:
                assert op.total_seconds >= 0.5 * report.ops[i].total_seconds, report


def test_sampled_estimates_agree_with_timing_every_call() -> None:
    cheap, costly = 10e-6, 40e-6  # two maps with a known cost each; the cheaper one is sampled
    ds = ps.Dataset.range(100_000).filter(_is_even).map(_spin(cheap)).map(_spin(costly))
    sampled, exact = _read(ds, 2000, sampling=True), _read(ds, 2000, sampling=False)
    first, second = sampled.ops[2], sampled.ops[3]
    assert first.estimated
    assert first.timed_calls < first.calls / 2
    assert not any(op.estimated for op in exact.ops)
    for report in (sampled, exact):
        first, second = report.ops[2], report.ops[3]
        assert 2.0 < second.self_seconds / first.self_seconds < 8.0  # 4x the cost
        assert 0.8 < first.self_seconds / (first.elements * cheap) < 3.0
        assert report.bottleneck == second.op
    assert [op.elements for op in sampled.ops] == [op.elements for op in exact.ops]
    # The maps' estimates against their times with every call timed (the filter's time,
    # under a millisecond here, is within the noise of a busy machine: not compared).
    for mine, theirs in zip(sampled.ops[2:], exact.ops[2:], strict=True):
        assert 0.6 < mine.self_seconds / theirs.self_seconds < 1.6, (mine, theirs)
        assert 0.6 < mine.total_seconds / theirs.total_seconds < 1.6, (mine, theirs)


def test_a_profiled_iterator_yields_and_saves_what_iter_does() -> None:
    ds = ps.Dataset.range(30).shuffle(5, seed=2).map(lambda x: x * 3).batch(4)
    plain = list(ds)
    it = ps.data.profiled(ds)
    head = [next(it) for _ in range(3)]
    state = it.get_state()
    resumed = iter(ds)
    resumed.set_state(state)
    for got, want in zip(head + list(resumed), plain, strict=True):
        assert_elements_equal(got, want)
    again = ps.data.profiled(ds)
    again.set_state(iter(ds).get_state())
    assert_elements_equal(next(again), plain[0])
    assert it.stats().elements == 3
    it.close()
    again.close()


def test_profiling_leaves_the_dataset_uninstrumented() -> None:
    ds = ps.Dataset.range(10).map(lambda x: x + 1)
    classes = [type(ds), type(ds._parents[0])]
    ds.profile(5)
    assert [type(ds), type(ds._parents[0])] == classes
    assert type(iter(ds)) is IndexIterator


def test_bad_arguments_are_refused() -> None:
    ds = ps.Dataset.range(3)
    with pytest.raises(ValueError, match="profile: num_elements must be >= 1, got 0"):
        ds.profile(0)
    with pytest.raises(TypeError, match="profile: num_elements must be an int or None, got 'x'"):
        ds.profile("x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="profile: consume must be callable or None, got int 3"):
        ds.profile(3, consume=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="profiled: dataset must be a pipestate Dataset or Loader"):
        ps.data.profiled([1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="profiled: sampling must be True or False, got str 'no'"):
        ds.profile(3, sampling="no")  # type: ignore[arg-type]


def test_to_the_end_and_an_empty_profile() -> None:
    report = ps.Dataset.range(7).profile(None)
    assert report.elements == 7
    empty = ps.data.profiled(ps.Dataset.range(3)).stats()
    assert (empty.elements, empty.bottleneck) == (0, "unknown")


def test_plot_draws_the_op_graph(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    report = ps.Dataset.zip(ps.Dataset.range(20), ps.Dataset.range(20).map(_slow)).profile(5)
    out = tmp_path / "profile.svg"
    report.plot(str(out))
    text = out.read_text()
    assert text.startswith("<?xml")
    assert "bottleneck: map(map_func=&#39;_slow&#39;)" in text or "bottleneck: map" in text


def test_plot_needs_a_file_name() -> None:
    report = ps.Dataset.range(3).profile(3)
    with pytest.raises(TypeError, match="plot: path must be a file name, got int 3"):
        report.plot(3)  # type: ignore[arg-type]


def test_a_loader_with_workers_is_one_stage_timed_by_the_waits() -> None:
    ds = ps.Dataset.range(60).map(_slow)
    it = ps.data.profiled(ps.data.Loader(ds, num_workers=2))
    got = [next(it) for _ in range(20)]
    report = it.stats()
    state = it.get_state()
    it.close()
    assert got == list(range(20))
    assert state["iterator"] == {"index": 20, "seed": None}
    assert report.bottleneck == "Loader(num_workers=2)"
    assert "Raise num_workers" in report.suggestion
    assert report.ops[-1].waited_seconds > 0
    assert report.ops[-1].threads == 2
