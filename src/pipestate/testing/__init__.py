"""The conformance kit: checks every checkpointable pipeline must pass.

Use it in the tests of any op or custom dataset::

    from pipestate.testing import assert_conformant

    def test_my_op():
        assert_conformant(ps.Dataset.range(20).apply_my_op())

Each check walks a pipeline with one iterator, saving the state before every
element, then restores fresh iterators from those states and asserts that
the continuation equals the uninterrupted run — element for element, dtype
for dtype — and that the state keeps its structure at every position. States
pass through JSON, or through a real ``pipestate.Checkpoint`` when they hold
arrays (``roundtrip_state``), as another process would read them. Each check
also runs the pipeline through its ops' streaming iterators and under
``prefetch`` (``variants=("streaming", "prefetch")``), whose elements must equal
the pipeline's own.

``verify(dataset_fn)`` (also ``pipestate.data.verify`` and ``pipestate
verify-pipeline``) is the user-facing proof for a whole pipeline of one's own:
it restores real checkpoints in fresh processes and reports the first divergence.
"""

from __future__ import annotations

from pipestate.testing._conformance import (
    assert_chained_resumes,
    assert_conformant,
    assert_elements_equal,
    assert_epoch_boundaries,
    assert_exhausted_restores_exhausted,
    assert_restorable_at_every_position,
    roundtrip_state,
    walk,
)
from pipestate.testing._global_rng import assert_independent_of_global_rng, find_global_rng_use
from pipestate.testing._verify import BreakPoint, Divergence, VerifyReport, verify

__all__ = [
    "BreakPoint",
    "Divergence",
    "VerifyReport",
    "assert_chained_resumes",
    "assert_conformant",
    "assert_elements_equal",
    "assert_epoch_boundaries",
    "assert_exhausted_restores_exhausted",
    "assert_independent_of_global_rng",
    "assert_restorable_at_every_position",
    "find_global_rng_use",
    "roundtrip_state",
    "verify",
    "walk",
]
