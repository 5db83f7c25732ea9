"""``Dataset.from_generator``: the elements a Python generator yields."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

from pipestate._validate import brief, check_function
from pipestate.data import _structure
from pipestate.data._calls import stop_error
from pipestate.data._fingerprint import _short, describe_callable
from pipestate.data._spec import conform, describe_signature, normalize_signature
from pipestate.data.dataset import UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import State, StreamIterator, read_int
from pipestate.errors import StateMismatchError


class _FromGeneratorIterator(StreamIterator["FromGeneratorDataset"]):
    """Calls the generator on the first ``next``; state: how many elements it produced.

    The generator itself can't be saved. A restore calls the generator
    function again and discards the elements already produced (O(n) calls of
    ``next``), which continues exactly if the generator is deterministic.
    """

    _PRODUCED = "produced"
    _STATE_KEYS = (_PRODUCED,)

    def _start(self) -> None:
        super()._start()
        self._generator: Iterator[Any] | None = None
        self._produced = 0
        self._done = False

    def _open_generator(self) -> Iterator[Any]:
        dataset = self._source
        generator = dataset._call()
        skipped = sum(1 for _ in itertools.islice(generator, self._produced))
        if skipped < self._produced:
            _close_generator(generator)
            raise StateMismatchError(
                f"{dataset._op_repr()}: the restored position is after element "
                f"{self._produced}, but the generator now yields only {skipped} elements. It "
                "must yield the same elements in every call for a restore to continue exactly."
            )
        return generator

    def _next(self) -> Any:
        if self._done:
            raise StopIteration
        if self._generator is None:
            self._generator = self._open_generator()
        try:
            value = next(self._generator)
        except StopIteration:
            self._done = True
            self._close_generator()
            raise
        dataset = self._source
        element = dataset._convert(value, self._produced)
        self._produced += 1
        return element

    def _op_state(self) -> State:
        return {self._PRODUCED: self._produced}

    def _restore(self, state: State) -> None:
        self._produced = read_int(state, self._PRODUCED, self._op)

    def _close_generator(self) -> None:
        if self._generator is not None:
            generator, self._generator = self._generator, None
            _close_generator(generator)

    def _close(self) -> None:
        self._close_generator()

    def _release(self) -> None:
        # The position stays: a read after this reopens the generator at it.
        self._close_generator()


def _close_generator(generator: Any) -> None:
    close = getattr(generator, "close", None)
    if callable(close):
        close()


class FromGeneratorDataset(Dataset):
    """The elements of ``generator(*args)``, as tf.data's ``from_generator``.

    Each iterator calls ``generator(*args)`` on its first ``next`` and closes
    what it returned when it ends or is closed. Without ``output_signature``
    elements are converted as ``map`` outputs are (lists become tuples, Python
    numbers NumPy values); with one, each element must have its structure and
    each leaf converts to its spec's dtype (within a kind, or int to float;
    ints must fit) and has its shape.

    The generator is external state: saving the iterator follows the
    pipeline's external state policy (``'fail'`` by default). The state saved
    under ``'warn'`` / ``'ignore'`` is the number of elements produced; a
    restore calls ``generator(*args)`` again and skips that many elements,
    which is O(n) and continues exactly only if the generator yields the same
    sequence on every call.

    Args:
      generator: a callable returning an iterable.
      output_signature: a :class:`~pipestate.data.TensorSpec` or a nested
        tuple / dict of them, or ``None``.
      args: a tuple (or list) of arguments for ``generator``, passed unchanged.

    Raises:
      TypeError: ``generator`` is not callable, ``args`` is not a tuple or
        list, or ``output_signature`` is not a structure of specs. While
        iterating: ``generator(*args)`` is not iterable, or an element has
        another structure or a dtype that does not convert (the message
        names the element's index and path).
      ValueError: while iterating, an element's shape does not match.

    Example:
      >>> import numpy as np
      >>> import pipestate as ps
      >>> def gen(n):
      ...     for i in range(n):
      ...         yield i, [i] * 2
      >>> signature = (ps.data.TensorSpec((), np.int32), ps.data.TensorSpec((2,), np.float32))
      >>> ds = ps.Dataset.from_generator(gen, output_signature=signature, args=(3,))
      >>> next(iter(ds))
      (np.int32(0), array([0., 0.], dtype=float32))
    """

    _op_name = "from_generator"
    _keeps_random_access = False
    _iterator_class = _FromGeneratorIterator

    def __init__(
        self, generator: Callable[..., Any], output_signature: Any = None, args: Any = None
    ) -> None:
        super().__init__()
        self._generator = check_function("generator", generator, self._op_name)
        if args is None:
            args = ()
        if not isinstance(args, (tuple, list)):
            raise TypeError(
                f"from_generator: args must be a tuple of arguments for the generator, got "
                f"{type(args).__name__} {brief(args, 80)}"
            )
        self._args = tuple(args)
        self._signature = (
            None
            if output_signature is None
            else normalize_signature(output_signature, "from_generator")
        )

    def _cardinality(self) -> int:
        return UNKNOWN_CARDINALITY

    def _element_spec(self) -> Any:
        return self._signature

    def _params(self) -> dict[str, Any]:
        return {
            "generator": describe_callable(self._generator),
            "output_signature": None
            if self._signature is None
            else describe_signature(self._signature),
            "args": [_short(arg) for arg in self._args],
        }

    def _external_state(self) -> str | None:
        return "a Python generator"

    def _call(self) -> Iterator[Any]:
        """A fresh iterator from ``generator(*args)``."""
        try:
            result = self._generator(*self._args)
        except StopIteration as err:
            raise stop_error(self._op_repr(), self._generator, err) from err
        try:
            return iter(result)
        except StopIteration as err:
            raise stop_error(self._op_repr(), self._generator, err) from err
        except TypeError as err:
            raise TypeError(
                f"from_generator: generator {describe_callable(self._generator)} must return an "
                f"iterable, got {type(result).__name__} {brief(result, 80)}"
            ) from err

    def _convert(self, value: Any, index: int) -> Any:
        """A yielded value as an element; errors name its index."""
        try:
            if self._signature is None:
                return _structure.normalize(value, lists_as_tuples=True)
            return conform(value, self._signature)
        except (TypeError, ValueError) as err:
            name = describe_callable(self._generator)
            if self._signature is None:
                problem = "can't be converted to an element"
            else:
                problem = f"does not match output_signature {describe_signature(self._signature)}"
            error = TypeError if isinstance(err, TypeError) else ValueError
            raise error(
                f"from_generator: element {index} yielded by {name} {problem}: {err}"
            ) from err
