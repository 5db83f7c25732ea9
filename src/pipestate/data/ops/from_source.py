"""``Dataset.from_source``: the items of any random-access data source (``len`` and ``[i]``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipestate._validate import brief
from pipestate.data import _structure
from pipestate.data.dataset import Dataset


def _qualified(kind: type) -> str:
    # The qualified name without the module, which depends on how a script was
    # started (``__main__`` or its import path), as user functions are identified.
    return kind.__qualname__


class FromSourceDataset(Dataset):
    """``source[0] ... source[len(source) - 1]``, converted to elements.

    ``source`` is anything with ``__len__`` and ``__getitem__`` taking an int:
    a torch map-style ``Dataset``, a ``datasets.Dataset``, a Grain
    ``RandomAccessDataSource``, a list. When it has ``__getitems__(indices)``
    (torch's and Grain's batched read), blocks of items and batches are read
    with one call. Items are converted as source data is (``docs/ops.md``):
    torch tensors and PIL images become NumPy arrays, dicts stay dicts, lists
    become arrays, ``str`` becomes bytes.

    The iterator state is one index. The source's type and length are part of
    the dataset's settings, so a state saved over a source of another length
    is refused on restore (``StateMismatchError``). An item that raises is
    never skipped: the error surfaces at that item, with a note naming the
    index, and the items before it are delivered first.

    Raises:
      TypeError: ``source`` lacks ``__len__`` or ``__getitem__``, is a pipestate
        ``Dataset``, or its ``len`` is not a non-negative integer.
    """

    _op_name = "from_source"

    def __init__(self, source: Any) -> None:
        super().__init__()
        if isinstance(source, Dataset):
            raise TypeError(
                "from_source: source is already a pipestate Dataset; use it directly, got "
                f"{brief(source, 120)}"
            )
        kind = type(source)
        missing = [m for m in ("__len__", "__getitem__") if not callable(getattr(kind, m, None))]
        if missing:
            raise TypeError(
                f"from_source: source must be a random-access data source with __len__ and "
                f"__getitem__ (a torch map-style Dataset, a datasets.Dataset, a list); "
                f"{kind.__name__} has no {' and no '.join(missing)}. Use from_generator for "
                "an iterable without random access."
            )
        try:
            length = len(source)
        except (TypeError, ValueError) as err:  # a negative or non-integer __len__
            raise TypeError(
                f"from_source: len(source) failed for {kind.__name__}: {err}; the source must "
                "know its length"
            ) from err
        self._source = source
        self._length = int(length)
        getitems = getattr(source, "__getitems__", None)
        self._getitems = getitems if callable(getitems) else None
        self._kind = _qualified(kind)

    @property
    def _vectorised(self) -> bool:
        # Items come from user code that may raise or differ in shape: read them
        # as lists, so a failing item surfaces after the items before it.
        return False

    def _cardinality(self) -> int:
        return self._length

    def _params(self) -> dict[str, Any]:
        return {"source": self._kind, "length": self._length}

    def _note(self, err: BaseException, index: int) -> BaseException:
        note = f"(raised by {self._op_repr()} reading source[{index}])"
        if hasattr(err, "add_note") and note not in getattr(err, "__notes__", ()):
            err.add_note(note)
        return err

    def _element(self, value: Any, index: int) -> Any:
        try:
            return _structure.normalize(value, lists_as_tuples=False, what=self)
        except TypeError as err:
            raise TypeError(f"{err} (source[{index}] of {self._kind})") from err

    def _get(self, epoch: int, position: int) -> Any:
        try:
            value = self._source[position]
        except Exception as err:
            raise self._note(err, position) from None
        return self._element(value, position)

    def _get_list(self, epoch: int, positions: np.ndarray) -> list[Any]:
        if self._getitems is None or len(positions) < 2:
            return super()._get_list(epoch, positions)
        keys = positions.tolist()
        try:
            values = self._getitems(keys)
            if len(values) != len(keys):
                raise ValueError(
                    f"from_source: {self._kind}.__getitems__ returned {len(values)} items for "
                    f"{len(keys)} indices"
                )
        except Exception:
            # Find the failing item one by one: the items before it are delivered
            # first, and it raises when asked for again, as element by element.
            return super()._get_list(epoch, positions)
        out: list[Any] = []
        for value, key in zip(values, keys):
            try:
                out.append(self._element(value, key))
            except TypeError:
                if not out:
                    raise
                break
        return out

    def _get_batch(self, epochs: np.ndarray, positions: np.ndarray) -> Any:
        elements = self._get_list(0, positions)
        while len(elements) < len(positions):  # stopped before a failing item: it raises
            elements.append(self._get(0, int(positions[len(elements)])))
        return _structure.stack(elements, self)
