"""The pipeline verifier: it catches each classic way a pipeline fails to resume, in fresh
processes, and passes correct pipelines of every registered op."""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pipestate as ps
from pipestate.testing import VerifyReport, verify
from pipestate.testing._verify import load_function
from pipestate.testing._verify_points import choose_break_points
from tests.data import _strategies
from tests.testing._pipelines import HANG_UNLESS_PID

PIPELINES = "tests.testing._pipelines"


def _check(name: str, **kwargs: object) -> VerifyReport:
    return verify(f"{PIPELINES}:{name}", num_elements=40, break_points=3, **kwargs)  # type: ignore[arg-type]


def test_a_correct_streaming_pipeline_holds_in_fresh_processes() -> None:
    report = _check("good_shuffle")
    assert report.holds, report
    assert report.ended
    assert report.elements == 6
    assert report.fresh_processes == 2
    positions = {bp.position: bp.reason for bp in report.break_points}
    assert positions[0] == "start"
    assert positions[6] == "after the end"
    assert positions[3] == "inside a shuffle buffer's first fill"
    assert all(bp.restore_seconds > 0 and bp.error is None for bp in report.break_points)
    assert len(report.state_bytes) == len(positions)
    assert min(report.state_bytes) > 0
    assert len(report.save_seconds) == len(positions)
    assert "OK: every resumed run equals the reference" in report.format()


def test_a_seedless_random_access_pipeline_holds_under_loader_workers() -> None:
    report = _check("good_repeat", loader_settings=[{"num_workers": 2}])
    assert report.holds, report
    assert {bp.setting for bp in report.break_points} == {
        "iter(dataset)",
        "Loader(num_workers=2)",
    }
    reasons = {bp.position: bp.reason for bp in report.break_points}
    assert reasons[9] == reasons[18] == "at a repeat boundary"
    assert reasons[27] == "after the end"


def test_a_hidden_counter_diverges_after_the_first_element() -> None:
    report = _check("broken_counter")
    assert not report.holds
    d = report.divergence
    assert d is not None
    assert (d.position, d.element, d.op) == (1, 1, None)
    assert d.expected == "int64[] np.int64(3)"  # 1 + the second call
    assert d.actual == "int64[] np.int64(2)"  # 1 + the first call of the fresh process
    assert "the states agree but the element differs" in d.explanation.lower()
    assert "map(map_func='broken_counter.<locals>.add_calls')" in d.explanation
    start = next(bp for bp in report.break_points if bp.position == 0)
    assert not start.diverged  # a fresh start is right: only resumes are wrong
    assert "DIVERGES at break point 1" in report.format()


def test_a_generator_that_cannot_replay_is_caught() -> None:
    report = _check("broken_generator")
    assert not report.holds
    assert report.divergence is not None
    assert report.divergence.position == 0
    assert any("unseeded randomness" in finding for finding in report.findings)
    assert report.declared_external_state == [
        "from_generator(generator='broken_generator.<locals>.generate', output_signature=None,"
        " args=[]) (a Python generator)"
    ]


def test_a_global_rng_augmentation_is_caught() -> None:
    report = _check("broken_global_rng")
    assert not report.holds
    (finding,) = report.findings
    assert finding.startswith("the elements change with the global random seed")
    assert "map(map_func='broken_global_rng.<locals>.<lambda>')" in finding
    assert report.divergence is not None
    assert report.divergence.position == 0


def test_an_order_that_changes_between_processes_is_caught() -> None:
    report = _check("broken_order")
    assert not report.holds
    assert report.findings == []  # one process always sees one order
    d = report.divergence
    assert d is not None
    assert d.position == 0
    assert "Even a fresh start in another process differs" in d.explanation
    assert "hash randomisation" in d.explanation


def test_in_process_mode_catches_a_hidden_counter_too() -> None:
    report = _check("broken_counter", fresh_process=False)
    assert report.fresh_processes == 0
    assert report.divergence is not None
    assert report.divergence.position == 1


def test_a_state_that_restores_elsewhere_names_the_op() -> None:
    # A shuffle whose buffer is not restored: the saved state differs from the
    # reference's right after the restore, and the verifier names the op.
    from pipestate.data.ops.shuffle import ShuffleDataset

    class ForgetfulShuffle(ShuffleDataset):
        def _make_iterator(self, entropy: int | None, epoch: int = 0) -> ps.data.DatasetIterator:
            it = super()._make_iterator(entropy, epoch)
            restore = it._set_state

            def forget(state: dict) -> None:  # type: ignore[type-arg]
                restore({**state, "produced": 0})

            it._set_state = forget  # type: ignore[method-assign]
            return it

    def build() -> ps.Dataset:
        return ForgetfulShuffle(ps.Dataset.range(20), 4, 1, True)

    report = verify(build, fresh_process=False, num_elements=20, break_points=2)
    d = report.divergence
    assert d is not None
    assert d.op == "shuffle(buffer_size=4, seed=1, reshuffle_each_iteration=True), entry " + repr(
        "iterator/produced"
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"num_elements": 0}, ValueError, "verify: num_elements must be >= 1, got 0"),
        ({"break_points": -1}, ValueError, "verify: break_points must be >= 0, got -1"),
        ({"processes": "2"}, TypeError, "verify: processes must be an int, got '2'"),
        ({"timeout": 0}, ValueError, "verify: timeout must be a positive, finite number"),
        ({"progress": "yes"}, TypeError, "verify: progress must be a bool, got 'yes'"),
        ({"loader_settings": {"num_workers": 2}}, TypeError, "must be a list of dicts"),
        ({"loader_settings": [{"workers": 2}]}, ValueError, "setting(s) ['workers']"),
        ({"loader_settings": [{"num_workers": -5}]}, ValueError, "num_workers"),
    ],
    ids=["elements", "break-points", "processes", "timeout", "progress", "dict", "key", "value"],
)
def test_bad_arguments_are_refused(kwargs: dict, error: type, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(error) as info:
        verify(f"{PIPELINES}:good_repeat", **kwargs)
    assert message in str(info.value)


def test_bad_targets_are_refused() -> None:
    with pytest.raises(ValueError, match="expected MODULE:FUNCTION"):
        verify("tests.testing._pipelines")
    with pytest.raises(ValueError, match="can't import 'no_such_module'"):
        verify("no_such_module:make")
    with pytest.raises(ValueError, match="has no attribute 'nope'"):
        verify(f"{PIPELINES}:nope")
    with pytest.raises(TypeError, match="must return a pipestate Dataset, got list"):
        verify(f"{PIPELINES}:not_a_dataset")
    with pytest.raises(ValueError, match="a lambda or a local function"):
        verify(lambda: ps.Dataset.range(3))
    with pytest.raises(TypeError, match="dataset_fn must be a function"):
        verify(42)  # type: ignore[arg-type]


def test_load_function_reads_a_file_path(tmp_path: object) -> None:
    from pathlib import Path

    script = Path(str(tmp_path)) / "pipeline_script.py"
    script.write_text("import pipestate as ps\ndef make():\n    return ps.Dataset.range(4)\n")
    fn = load_function(f"{script}:make")
    assert list(fn()) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="no file"):
        load_function(f"{script}.missing.py:make")


def test_break_points_include_every_repeat_boundary_through_a_batch() -> None:
    ds = ps.Dataset.range(6).repeat(4).batch(2)  # a pass every 3 batches
    points = choose_break_points(ds, 12, True, 0, 0)
    assert {3, 6, 9} <= points.keys()
    assert points[12] == "after the end"
    assert points[0] == "start"


def test_loader_settings_are_skipped_with_a_note_for_streaming_pipelines() -> None:
    report = verify(
        lambda: ps.Dataset.range(8).filter(lambda x: x % 2 == 0),
        fresh_process=False,
        loader_settings=[{"num_workers": 2}],
    )
    assert report.holds, report
    assert report.notes == [
        "loader_settings skipped: Loader reads random-access pipelines only, and this one has a "
        "streaming op"
    ]


def _registry_cases() -> list[tuple[str, st.SearchStrategy[ps.Dataset]]]:
    sources = _strategies.sources()
    cases = []
    for name, strategies in _strategies.declared(_strategies.OP_ATTRIBUTE).items():
        for k, strategy in enumerate(strategies):
            cases.append((f"{name}-{k}", st.tuples(sources, strategy).map(lambda p: p[1](p[0]))))
    for name, strategies in _strategies.declared(_strategies.SOURCE_ATTRIBUTE).items():
        for k, strategy in enumerate(strategies):
            cases.append((f"source-{name}-{k}", strategy))
    return cases


CASES = _registry_cases()


@pytest.mark.parametrize("case", [s for _, s in CASES], ids=[n for n, _ in CASES])
@settings(
    max_examples=1,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
def test_every_registered_op_passes_in_a_correct_pipeline(
    case: st.SearchStrategy[ps.Dataset], data: st.DataObject
) -> None:
    try:
        ds = data.draw(case)
        # A pipeline that fails while reading is no case for the verifier.
        list(itertools.islice(iter(ds), 300))
    except (ValueError, TypeError):
        return
    report = verify(lambda: ds, fresh_process=False, num_elements=300, break_points=2)
    assert report.holds, report


def test_a_checking_process_that_hangs_is_stopped_at_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(HANG_UNLESS_PID, str(os.getpid()))
    report = verify(
        f"{PIPELINES}:hangs_when_restored",
        num_elements=5,
        break_points=0,
        processes=1,
        check_global_rng=False,
        timeout=3,
    )
    assert not report.holds
    errors = {bp.error for bp in report.break_points}
    assert errors == {"the checking process ran past timeout=3.0 s and was stopped"}
    assert "ERROR at break point 0 (iter(dataset)):" in report.format()
