"""tf.data's ``index_flat_map_test.py`` (experimental) against pipestate and TensorFlow.

pipestate's ``Dataset.index_flat_map(map_func, index_map_func, output_cardinality)``
is tf.data's ``index_flat_map_op.index_flat_map(dataset, map_func, index_map_func,
output_cardinality=...)``. The pip package of TensorFlow 2.21 does not ship that
module, so the TensorFlow parameter is skipped where it is missing; the
expectations are tf.data's.

Left out of tf.data's tests:
- test_cache: ``Dataset.cache``.
- test_split_strings with ``use_tensors``: tensors and Python ints are the same
  NumPy values in pipestate.
- test_global_shuffle's ``assert_cardinality``: ``output_cardinality`` gives the length.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ._base import Backend

INPUT = ["0 1", "2 3 4 5", "6 7", "8"]
WORDS = [b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"8"]


def _index_flat_map(backend: Backend, dataset: Any, *args: Any, **kwargs: Any) -> Any:
    if backend.is_tf:
        try:
            from tensorflow.python.data.experimental.ops import (  # type: ignore[import-not-found]
                index_flat_map_op,
            )
        except ImportError:
            pytest.skip("this TensorFlow has no index_flat_map_op")
        return index_flat_map_op.index_flat_map(dataset, *args, **kwargs)
    return dataset.index_flat_map(*args, **kwargs)


def _split(backend: Backend) -> Any:
    if backend.is_tf:
        tf = backend.module
        return lambda element: tf.strings.split(element, " ")
    return lambda element: np.array(bytes(element).split(b" "))


def _metadata(data: list[str]) -> list[tuple[int, int, int]]:
    """(first output, end output, element index) of each input string."""
    metadata: list[tuple[int, int, int]] = []
    for i, text in enumerate(data):
        last = metadata[-1][1] if metadata else 0
        metadata.append((last, last + len(text.split()), i))
    return metadata


def _index_map_func(metadata: list[tuple[int, int, int]]) -> Any:
    def index_map(index: Any) -> tuple[Any, Any]:
        element_index = 0
        while element_index < len(metadata) and index >= metadata[element_index][1]:
            element_index += 1
        offset = index - metadata[element_index][0] if element_index < len(metadata) else 0
        return element_index, offset

    return index_map


def test_split_strings(backend: Backend) -> None:
    dataset = backend.Dataset.from_tensor_slices(INPUT)
    dataset = _index_flat_map(backend, dataset, _split(backend), _index_map_func(_metadata(INPUT)))
    assert backend.outputs(dataset) == WORDS


def test_global_shuffle(backend: Backend) -> None:
    dataset = backend.Dataset.from_tensor_slices(INPUT)
    dataset = _index_flat_map(
        backend,
        dataset,
        _split(backend),
        _index_map_func(_metadata(INPUT)),
        output_cardinality=9,
    )
    if backend.is_tf:
        from tensorflow.python.data.experimental.ops import global_shuffle_op

        shuffled = global_shuffle_op._global_shuffle(dataset, seed=7)
    else:
        shuffled = dataset.global_shuffle(seed=7)
    output = backend.outputs(shuffled)
    assert sorted(output) == WORDS
    assert output != WORDS


@pytest.mark.parametrize("dataset_range", [0, 10])
def test_identity_map(backend: Backend, dataset_range: int) -> None:
    dataset = _index_flat_map(
        backend, backend.Dataset.range(dataset_range), lambda element: element, lambda i: (i, 0)
    )
    backend.assert_produces(dataset, list(range(dataset_range)))
