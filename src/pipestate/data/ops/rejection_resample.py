"""``rejection_resample``: resamples a class-labelled input towards a target class distribution."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pipestate._validate import brief, check_function, check_int
from pipestate.data._calls import call, stop_error
from pipestate.data._fingerprint import describe_callable
from pipestate.data.dataset import UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import State, StreamIterator, read_bool, read_int
from pipestate.errors import InvalidArgumentError, StateMismatchError

_DRAWS = 1024  # uniform numbers drawn per block
_CHOICE, _TEST = 0, 1  # the two random streams: which input, and accept or reject
_TINY = np.finfo(np.float32).tiny


def _distribution(name: str, value: Any, size: int | None) -> np.ndarray:
    """A class distribution argument as a float32 vector (validated)."""
    try:
        dist = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"rejection_resample: {name} must be a vector of class probabilities, got "
            f"{brief(value, 80)}"
        ) from err
    if dist.ndim != 1 or dist.size == 0 or (size is not None and dist.size != size):
        expected = "a non-empty vector" if size is None else f"a vector of {size} probabilities"
        raise ValueError(
            f"rejection_resample: {name} must be {expected} (one per class), got shape "
            f"{list(dist.shape)}"
        )
    if not np.all(np.isfinite(dist)) or np.any(dist < 0) or abs(dist.sum() - 1.0) > 1e-3:
        raise ValueError(
            f"rejection_resample: {name} must hold non-negative probabilities summing to 1, "
            f"got {dist.tolist()}"
        )
    return dist.astype(np.float32)


def _acceptance(initial: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float]:
    """tf.data's acceptance probability per class and probability of the original input."""
    with np.errstate(all="ignore"):
        ratio = target / (initial + _TINY)
        low, high = ratio.min(), ratio.max()
        accept = (ratio - low) / (high - low)
    # Every class's ratio equal (the target is the initial distribution): accept all.
    return np.nan_to_num(accept, nan=1.0), float(low)


class _RejectionResampleIterator(StreamIterator["RejectionResampleDataset"]):
    """Two passes over the input, mixed: the input as it is, and the input filtered by class.

    As tf.data: each output comes from the unfiltered pass with the
    probability of the original distribution ``m``, else from the filtered
    pass, which accepts an element of class ``c`` with probability ``a[c]``.
    The random numbers are functions of ``(seed, epoch, stream, draw)``, so
    the state is the two passes' states, the number of draws of each stream,
    the class counts of the filtered pass (its estimate of the initial
    distribution) and whether the output has ended.
    """

    _ENDED = "ended"
    _CHOICES = "choices"
    _TESTS = "tests"
    _COUNTS = "counts"
    _STATE_KEYS = (StreamIterator._PARENTS, _ENDED, _CHOICES, _TESTS, _COUNTS)

    def _start(self) -> None:
        self._inputs = [self._open(0), self._open(0)]
        self._ended = False
        self._draws = [0, 0]  # draws made of each stream
        self._blocks: list[tuple[int, list[float]]] = [(-1, []), (-1, [])]
        self._counts = [0] * self._source._num_classes

    def _uniform(self, stream: int) -> float:
        """The next uniform number of ``stream``."""
        k = self._draws[stream]
        block, values = self._blocks[stream]
        if k // _DRAWS != block:
            dataset = self._source
            assert dataset._seed is not None
            seeds = np.random.SeedSequence([dataset._seed, self._epoch, stream, k // _DRAWS])
            values = np.random.Generator(np.random.Philox(seeds)).random(_DRAWS).tolist()
            self._blocks[stream] = (k // _DRAWS, values)
        self._draws[stream] = k + 1
        return values[k % _DRAWS]

    def _next(self) -> Any:
        if self._ended:
            raise StopIteration
        dataset = self._source
        mixing = dataset._mixing(self._counts)
        original = mixing >= 1.0 or (mixing > 0.0 and self._uniform(_CHOICE) < mixing)
        try:
            if original:
                element = self._inputs[0]._next()
                return dataset._class_of(element), element
            while True:
                element = self._inputs[1]._next()
                label = dataset._class_of(element)
                self._counts[int(label)] += 1
                accept = dataset._accept(self._counts)[int(label)]
                if self._uniform(_TEST) < accept:
                    return label, element
        except StopIteration:
            self._ended = True  # as sample_from_datasets(stop_on_empty_dataset=True)
            raise

    def _op_state(self) -> State:
        return {
            self._PARENTS: [it._get_state() for it in self._inputs],
            self._ENDED: self._ended,
            self._CHOICES: self._draws[_CHOICE],
            self._TESTS: self._draws[_TEST],
            self._COUNTS: list(self._counts),
        }

    def _restore(self, state: State) -> None:
        op = self._op
        ended = read_bool(state, self._ENDED, op)
        choices = read_int(state, self._CHOICES, op)
        tests = read_int(state, self._TESTS, op)
        counts = state[self._COUNTS]
        classes = self._source._num_classes
        if (
            not isinstance(counts, list)
            or len(counts) != classes
            or not all(type(c) is int and 0 <= c < 2**63 for c in counts)
        ):
            raise StateMismatchError(
                f"{op}: state['counts'] must be a list of {classes} class counts, got "
                f"{brief(counts, 80)}"
            )
        super()._restore({self._PARENTS: state[self._PARENTS]})
        self._ended = ended
        self._draws = [choices, tests]
        self._counts = counts


class RejectionResampleDataset(Dataset):
    """tf.data's ``rejection_resample``: ``(class, element)`` pairs resampled to ``target_dist``.

    ``class_func(element)`` (a tuple unpacked) gives each element's class, an
    integer in ``[0, len(target_dist))``. As tf.data, the output mixes two
    passes over the input: with probability ``m = min(target / initial)`` an
    element of the input as it is, otherwise the next element of a pass that
    keeps an element of class ``c`` with probability
    ``(target[c] / initial[c] - m) / (max(target / initial) - m)``. Where
    ``target_dist`` equals ``initial_dist`` the input passes through whole;
    where ``m`` is 0 only the filtered pass is read. Without ``initial_dist``
    the initial distribution is estimated from the class counts of the
    filtered pass so far (tf.data estimates it in a third pass, over batches
    of 32 elements read ahead), so the first elements are accepted freely.
    The output ends when the pass it next reads ends.

    Randomness is a function of the seed, the epoch and the draw's number
    (NumPy Philox), so the iterator state is the two passes' states, the
    count of draws of each random stream and the class counts: restores are
    exact. ``seed=None`` draws a seed per iterator, saved in its state. The
    outputs differ from TensorFlow's, whose random streams differ.

    Args:
      class_func: maps an element to its class (an integer scalar).
      target_dist: the target probability of each class (non-negative, summing to 1).
      initial_dist: the input's class probabilities, or ``None`` to estimate them.
      seed: the seed of the random choices, or ``None`` to draw one per iterator.

    Raises:
      TypeError: a non-callable ``class_func``, a non-integer ``seed``, or
        distributions that are not vectors of numbers.
      ValueError: distributions of different lengths, negative or not summing
        to 1; while iterating, :class:`~pipestate.errors.InvalidArgumentError`
        for a class that is not an integer in range.

    Example:
      >>> import numpy as np
      >>> import pipestate as ps
      >>> ds = ps.Dataset.range(6).rejection_resample(
      ...     lambda x: x % 2, target_dist=[0.0, 1.0], initial_dist=[0.5, 0.5], seed=1)
      >>> [(int(c), int(x)) for c, x in ds]
      [(1, 1), (1, 3), (1, 5)]
    """

    _op_name = "rejection_resample"
    _keeps_random_access = False
    _iterator_class = _RejectionResampleIterator

    def __init__(
        self,
        parent: Dataset,
        class_func: Callable[..., Any],
        target_dist: Any,
        initial_dist: Any = None,
        seed: int | None = None,
    ) -> None:
        super().__init__([parent])
        op = self._op_name
        self._class_func = check_function("class_func", class_func, op)
        self._target = _distribution("target_dist", target_dist, None)
        self._num_classes = len(self._target)
        self._initial = (
            None
            if initial_dist is None
            else _distribution("initial_dist", initial_dist, self._num_classes)
        )
        self._seed = None if seed is None else check_int("seed", seed, op=op)
        self._static: float | None = None  # tf.data's static probability of the original input
        if self._initial is not None:
            with np.errstate(all="ignore"):
                self._static = float(np.min(self._target / self._initial))
            self._fixed = _acceptance(self._initial, self._target)

    def _cardinality(self) -> int:
        if self._static == 1.0:
            return self._parents[0].cardinality()  # every element passes through
        return UNKNOWN_CARDINALITY

    def _params(self) -> dict[str, Any]:
        return {
            "class_func": describe_callable(self._class_func),
            "target_dist": self._target.tolist(),
            "initial_dist": None if self._initial is None else self._initial.tolist(),
            "seed": self._seed,
        }

    def _draws_seed(self) -> bool:
        return self._seed is None

    def _set_drawn_seed(self, seed: int) -> None:
        self._seed = seed

    def _class_of(self, element: Any) -> np.int64:
        fn = self._class_func
        try:
            label = call(fn, element)
        except StopIteration as err:
            raise stop_error(self._op_repr(), fn, err) from err
        if isinstance(label, np.ndarray) and label.shape == ():
            label = label[()]
        if (
            isinstance(label, (bool, np.bool_))
            or not isinstance(label, (int, np.integer))
            or not 0 <= label < self._num_classes
        ):
            raise InvalidArgumentError(
                f"{self._op_name}: class_func {describe_callable(fn)} must return an integer "
                f"class in [0, {self._num_classes}), got {brief(label, 60)}"
            )
        result: np.int64 = np.int64(int(label))
        return result

    def _estimate(self, counts: list[int]) -> tuple[np.ndarray, float] | None:
        if self._initial is not None:
            return self._fixed
        total = sum(counts)
        if total == 0:
            return None
        with np.errstate(all="ignore"):
            initial = (np.asarray(counts, np.float64) / float(total)).astype(np.float32)
        return _acceptance(initial, self._target)

    def _mixing(self, counts: list[int]) -> float:
        """The probability that the next output comes from the unfiltered pass."""
        if self._static is not None and self._static in (0.0, 1.0):
            return self._static
        estimate = self._estimate(counts)
        return 0.0 if estimate is None else estimate[1]

    def _accept(self, counts: list[int]) -> np.ndarray:
        """The acceptance probability of each class in the filtered pass."""
        estimate = self._estimate(counts)
        if estimate is None:
            return np.ones(self._num_classes, np.float32)
        return estimate[0]
