"""tf.data's ``enumerate_test.py`` (EnumerateTest, EnumerateCheckpointTest).

Left out:
- testName: the ``name=`` argument is tf.data's graph-naming machinery.
- the ``symbolic_checkpoint`` option of the checkpoint test: a TensorFlow-only option.
"""

from __future__ import annotations

import numpy as np

from ._base import Backend, verify_fns


def test_enumerate(backend: Backend) -> None:
    components = (["a", "b"], [1, 2], [37.0, 38])
    dataset = backend.Dataset.from_tensor_slices(components).enumerate(np.int64(20))
    backend.assert_produces(
        dataset,
        [(np.int64(20), (b"a", 1, 37.0)), (np.int64(21), (b"b", 2, 38.0))],
        expected_shapes=((), ((), (), ())),
    )


def test_enumerate_restarts_with_each_pass(backend: Backend) -> None:
    dataset = backend.Dataset.range(3).enumerate(5).repeat(2)
    backend.assert_produces(dataset, [(5 + i % 3, i % 3) for i in range(6)])


@verify_fns
def test_enumerate_checkpoint(backend: Backend, verify_fn: str) -> None:
    getattr(backend, verify_fn)(lambda: backend.Dataset.range(2, 10).enumerate(), 8)
