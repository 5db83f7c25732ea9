"""Finding ops whose outputs depend on the global random generators (``np.random``, ``random``).

A function that draws from the global generators makes a pipeline that no
checkpoint can resume exactly: the generators' state is not the pipeline's.
``random_map`` gives a function its own generator instead.
"""

from __future__ import annotations

import random

import numpy as np

from pipestate.data._structure import Element, elements_equal
from pipestate.data.dataset import Dataset

_SEEDS = (12345, 67890)
_ENTROPY = 0x5EED_0F_7E57  # the same drawn seed in both runs, for ops with seed=None


def _run(dataset: Dataset, seed: int, max_elements: int) -> list[Element]:
    """Up to ``max_elements`` elements, with both global generators seeded by ``seed``."""
    np.random.seed(seed)
    random.seed(seed)
    iterator = dataset._make_iterator(_ENTROPY if dataset.draws_seed else None)
    out: list[Element] = []
    try:
        while len(out) < max_elements:
            try:
                out.append(next(iterator))
            except StopIteration:
                break
    finally:
        iterator.close()
    return out


def _ops(dataset: Dataset, seen: set[int], found: list[Dataset]) -> list[Dataset]:
    """The pipeline's ops, inputs first, each once."""
    if id(dataset) not in seen:
        seen.add(id(dataset))
        for parent in dataset._parents:
            _ops(parent, seen, found)
        found.append(dataset)
    return found


def find_global_rng_use(dataset: Dataset, max_elements: int = 64) -> list[str]:
    """The ops of ``dataset`` whose outputs change with the global random generators' seeds.

    Runs every op's pipeline (its inputs and itself) twice, with ``np.random``
    and ``random`` seeded differently, and returns a repr of each op whose
    first ``max_elements`` outputs differ between the runs while its inputs'
    do not: the op that reads the global generators (a ``map`` function
    calling ``np.random.rand``). Ops with ``seed=None`` get the same drawn
    seed in both runs. The global generators' states are put back afterwards.

    Args:
      dataset: the pipeline to check.
      max_elements: elements compared per op.

    Returns:
      The reprs of the ops found, inputs first (empty: none depends on them).

    Raises:
      TypeError: ``dataset`` is not a Dataset, or ``max_elements`` not a positive int.

    Example:
      >>> import numpy as np, pipestate as ps
      >>> from pipestate.testing import find_global_rng_use
      >>> ds = ps.Dataset.range(8).map(lambda x: x + np.random.randint(9))
      >>> find_global_rng_use(ds)
      ["map(map_func='<lambda>')"]
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(
            f"find_global_rng_use expects a pipestate Dataset, got {type(dataset).__name__}"
        )
    if isinstance(max_elements, bool) or not isinstance(max_elements, int) or max_elements < 1:
        raise TypeError(
            f"find_global_rng_use: max_elements must be a positive int, got {max_elements!r}"
        )
    saved_numpy, saved_random = np.random.get_state(), random.getstate()
    try:
        differs: dict[int, bool] = {}
        culprits: list[str] = []
        for op in _ops(dataset, set(), []):
            first, second = (_run(op, seed, max_elements) for seed in _SEEDS)
            differs[id(op)] = len(first) != len(second) or not all(
                elements_equal(a, b) for a, b in zip(first, second)
            )
            if differs[id(op)] and not any(differs[id(p)] for p in op._parents):
                culprits.append(op._op_repr())
        return culprits
    finally:
        np.random.set_state(saved_numpy)
        random.setstate(saved_random)


def assert_independent_of_global_rng(dataset: Dataset, max_elements: int = 64) -> None:
    """Asserts that no op of ``dataset`` reads the global random generators.

    Raises:
      AssertionError: naming the ops :func:`find_global_rng_use` finds, and the fix.
    """
    culprits = find_global_rng_use(dataset, max_elements)
    if culprits:
        raise AssertionError(
            f"The outputs of {', '.join(culprits)} depend on the global random generators "
            "(np.random, random), which no checkpoint restores: a resumed run would differ. "
            "Draw from the generator random_map(map_func, seed=...) passes to the function, "
            "or seed a generator from the element."
        )
