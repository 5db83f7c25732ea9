"""An in-memory dataset of given elements: the windows of ``window`` and ``group_by_window``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipestate.data import _structure
from pipestate.data._structure import Element
from pipestate.data.dataset import Dataset


class ElementsDataset(Dataset):
    """The given elements, in order: a window of a pipeline, as a random-access dataset.

    ``window`` and ``group_by_window`` hand their windows to user code as
    these. Its only setting is the number of elements, not their values, so a
    window rebuilt from the same input positions on restore matches the one a
    state was saved with.
    A saved buffer (``flat_map`` over a streaming ``window``) saves its elements.
    """

    _op_name = "elements"

    def __init__(self, elements: Sequence[Element]) -> None:
        super().__init__()
        self._elements = list(elements)

    @property
    def _vectorised(self) -> bool:
        return False  # elements may differ in shape: read them one by one

    def _cardinality(self) -> int:
        return len(self._elements)

    def _params(self) -> dict[str, Any]:
        # The count alone: a window rebuilt on restore (re-read by position, or
        # from a saved buffer) is the same window whatever its values' form.
        return {"count": len(self._elements)}

    def _get(self, epoch: int, position: int) -> Element:
        return self._elements[position]


def window_of(elements: Sequence[Element]) -> Any:
    """The window of ``elements`` (same structure, at least one): a dataset per component.

    As tf.data's ``window``: a tuple or dict element gives a tuple or dict of
    datasets, each of that component's values.
    """
    return _structure.map_structure(lambda *leaves: ElementsDataset(leaves), *elements)
