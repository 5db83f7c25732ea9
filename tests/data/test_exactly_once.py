"""Property: any pipeline, interrupted anywhere any number of times, yields the
uninterrupted stream — no element lost, none repeated.

The pipelines are built from every op of the registry: each op's test module
declares its strategy (``PROPERTY_OP`` / ``PROPERTY_SOURCE``), collected by
``tests/data/_strategies.py``.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pipestate as ps
from pipestate.testing import assert_conformant, assert_elements_equal, roundtrip_state
from pipestate.testing._variants import streaming_variant

from . import _strategies


@st.composite
def pipelines(draw: st.DrawFn) -> ps.Dataset:
    ds = draw(_strategies.sources())
    for op in draw(st.lists(_strategies.ops(), max_size=4)):
        try:
            ds = op(ds)
        except (ValueError, TypeError):
            continue  # e.g. global_shuffle of an infinite dataset: not a valid pipeline
    return ds


LIMIT = 150


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ds=pipelines(), cuts=st.lists(st.integers(0, LIMIT), max_size=5))
def test_resumed_stream_equals_uninterrupted(ds: ps.Dataset, cuts: list[int]) -> None:
    reference_iterator = iter(ds)
    start_state = reference_iterator.get_state()
    reference = []
    # An invalid pipeline (e.g. batching ragged batches) fails where tf.data would;
    # the resumed run must then fail at the very same element.
    failure: type[Exception] | None = None
    try:
        for element in reference_iterator:
            reference.append(element)
            if len(reference) == LIMIT:
                break
    except (ValueError, TypeError) as err:
        failure = type(err)

    iterator = iter(ds)
    iterator.set_state(start_state)
    resumed: list[object] = []
    for cut in sorted(cuts):
        while len(resumed) < min(cut, len(reference)):
            resumed.append(next(iterator))
        saved = roundtrip_state(iterator.get_state())
        iterator = iter(ds)  # a fresh iterator, as in a new process
        iterator.set_state(saved)
    while len(resumed) < len(reference):
        resumed.append(next(iterator))
    if failure is not None:
        with pytest.raises(failure):
            next(iterator)
    assert len(resumed) == len(reference)
    for i, (a, b) in enumerate(zip(resumed, reference)):
        assert_elements_equal(a, b, f"element {i} of {ds!r}")
    if failure is None and len(reference) < LIMIT:
        assert next(iterator, None) is None, "resumed stream is longer than the uninterrupted one"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ds=pipelines())
def test_random_pipelines_pass_the_kit_on_every_path(ds: ps.Dataset) -> None:
    """The conformance kit, with its streaming and prefetch variants, on random pipelines."""
    variant = streaming_variant(ds)
    try:
        for path in (ds, variant) if variant is not None else (ds,):
            with iter(path) as iterator:
                list(itertools.islice(iterator, LIMIT))
    except (ValueError, TypeError):
        # An invalid pipeline, or one valid on one path only: a streaming skip
        # reads the elements it skips, where a random-access one reads none.
        return
    assert_conformant(ds, max_elements=40, max_positions=10)
