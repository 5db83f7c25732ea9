"""Shared machinery of the tf.data parity suite.

Each test module translates one of tf.data's kernel tests
(``tensorflow/python/data/kernel_tests/<op>_test.py``) into pytest tests that
take the ``backend`` fixture (see ``conftest.py``) and run once against
pipestate and once against TensorFlow (skipped where TensorFlow is not
installed). A test builds its pipelines from ``backend.Dataset`` and checks
them with the methods of :class:`Backend`, which mirror tf.data's test base:

- ``assert_produces`` is ``assertDatasetProduces``;
- ``verify_unused_iterator``, ``verify_fully_used_iterator``,
  ``verify_exhausted_iterator``, ``verify_multiple_breaks``,
  ``verify_reset_restored_iterator`` and ``run_core_tests`` are the verify
  functions of ``checkpoint_test_base.py`` in TF2's eager mode: every save and
  restore goes through a checkpoint file (``ps.Checkpoint(iterator=it)`` /
  ``tf.train.Checkpoint(iterator=it)``, ``write`` then ``read`` into a fresh
  iterator of a fresh dataset). ``@verify_fns`` parametrizes a test over
  the five, as tf.data's ``checkpoint_test_base.default_test_combinations()``;
- ``at`` is random access (``ds[i]`` / ``tf.data.experimental.at``);
- ``tf_message(regex)`` matches tf.data's wording of an error on TensorFlow
  only, and ``assert_raises_when_built_or_read`` accepts an error raised when
  the dataset is built (tf.data's static checks) or at its first element.

Expected values are written as tf.data's tests state them. Only tuples
(named tuples included) and dicts are structures; a list in an expected
element is one array. A NumPy expected leaf is compared with its exact dtype,
a Python leaf by dtype kind (``int`` matches any integer dtype, ``float``
any float, ``bytes`` a bytes string; string item sizes and TensorFlow's object
arrays of bytes are not told apart), so the Python-int-is-int64 difference
(docs/ops.md, ``map``) does not matter where a test does not state a dtype.

Deliberate, documented differences are marked with :func:`pipestate_differs`,
which turns into ``xfail(strict=True)`` on the pipestate parameter only.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

PIPESTATE = "pipestate"
TENSORFLOW = "tensorflow"
BACKENDS = (PIPESTATE, TENSORFLOW)

#: The marker that conftest.py turns into ``xfail(strict=True)`` on the pipestate param.
DIFFERS_MARKER = "pipestate_differs"

Build = Callable[[], Any]


def pipestate_differs(reason: str) -> pytest.MarkDecorator:
    """Marks a documented deliberate difference: the pipestate param must fail, strictly.

    ``reason`` starts with the section of the docs that documents it:
    ``"docs/ops.md#map: Python ints become int64"``. Use it as a decorator on
    a test or in ``pytest.param(..., marks=pipestate_differs(...))``.
    """
    if not re.match(r"docs/[\w.]+\.md#[\w-]+: ", reason):
        raise ValueError(f"reason must start with 'docs/<page>.md#<anchor>: ', got {reason!r}")
    marker: pytest.MarkDecorator = getattr(pytest.mark, DIFFERS_MARKER)(reason=reason)
    return marker


NEGATIVE_INDEX = pytest.param(
    -1, marks=pipestate_differs("docs/ops.md#random-access: a negative index counts from the end")
)
"""The index ``-1`` of TF's invalid-index cases: pipestate counts it from the end."""


def _is_structure(value: Any) -> bool:
    return isinstance(value, (tuple, dict))


def _leaf_kind(dtype: np.dtype[Any]) -> str:
    return "i" if dtype.kind == "u" else dtype.kind


def _as_array(value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype == object and all(isinstance(v, bytes) for v in array.flat):
        array = array.astype(bytes)  # TensorFlow's string tensors are object arrays of bytes
    return array


def _expected_leaf(value: Any) -> tuple[np.ndarray, np.dtype[Any] | None]:
    """The expected leaf as an array, and the exact dtype to demand (None: kind only)."""
    array = _as_array(value)
    if isinstance(value, (np.ndarray, np.generic)) and array.dtype.kind not in "SU":
        return array, array.dtype
    return array, None  # the item size of a string dtype is not part of the element


def match(expected: Any, actual: Any, where: str = "element") -> None:
    """Asserts ``actual`` has ``expected``'s structure, dtypes and values (see the module doc)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected a dict, got {actual!r}"
        assert sorted(expected) == sorted(actual), (
            f"{where}: keys {sorted(actual)} != expected {sorted(expected)}"
        )
        for key in expected:
            match(expected[key], actual[key], f"{where}[{key!r}]")
        return
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple), f"{where}: expected a tuple, got {actual!r}"
        if hasattr(expected, "_fields"):
            assert type(actual) is type(expected), (
                f"{where}: expected a {type(expected).__name__}, got {actual!r}"
            )
        assert len(actual) == len(expected), (
            f"{where}: {len(actual)} components, expected {len(expected)}: {actual!r}"
        )
        for i, (e, a) in enumerate(zip(expected, actual)):
            match(e, a, f"{where}[{i}]")
        return
    if expected is None:
        assert actual is None, f"{where}: expected None, got {actual!r}"
        return
    assert not _is_structure(actual), f"{where}: expected a leaf, got {actual!r}"
    # TensorFlow's ``numpy()`` of a string scalar is a plain ``bytes``.
    assert isinstance(actual, (np.ndarray, np.generic, bytes)), (
        f"{where}: expected a NumPy value, got {type(actual).__name__} {actual!r}"
    )
    want, dtype = _expected_leaf(expected)
    got = _as_array(actual)
    assert got.shape == want.shape, f"{where}: shape {got.shape} != expected {want.shape}"
    if dtype is not None:
        assert got.dtype == dtype, f"{where}: dtype {got.dtype} != expected {dtype}"
    elif want.size or want.dtype.kind != "f":  # np.asarray([]) says nothing of the dtype
        assert _leaf_kind(got.dtype) == _leaf_kind(want.dtype), (
            f"{where}: dtype {got.dtype} is not of the kind of expected {want.dtype}"
        )
    equal = np.array_equal(got, want, equal_nan=got.dtype.kind in "fc")
    assert equal, f"{where}: {got!r} != expected {want!r}"


def _sort_key(element: Any) -> Any:
    if isinstance(element, dict):
        return tuple((k, _sort_key(element[k])) for k in sorted(element))
    if isinstance(element, tuple):
        return tuple(_sort_key(e) for e in element)
    return tuple(np.asarray(element).ravel().tolist())


class Backend:
    """One implementation of the tf.data API under test, and the checks of tf.data's tests."""

    def __init__(self, name: str, tmp_path: Path) -> None:
        self.name = name
        self._tmp_path = tmp_path
        self._ckpt_numbers = itertools.count()
        if name == PIPESTATE:
            import pipestate as ps
            import pipestate.errors as ps_errors

            self.module: Any = ps
            self.Dataset: Any = ps.Dataset
            self.data: Any = ps.data
            self.INFINITE = int(ps.data.INFINITE_CARDINALITY)
            self.UNKNOWN = int(ps.data.UNKNOWN_CARDINALITY)
            self.InvalidArgumentError: type[Exception] = getattr(
                ps_errors, "InvalidArgumentError", ValueError
            )
            self.NotFoundError: type[Exception] = ps_errors.NotFoundError
            self.DataLossError: type[Exception] = ps_errors.DataLossError
            self.IndexOutOfRangeError: type[Exception] = IndexError
            self.ArgumentError: type[Exception] = ValueError
            self.ExternalStateError: type[Exception] = ps_errors.ExternalStateError
            self.Checkpoint: Any = ps.Checkpoint
        elif name == TENSORFLOW:
            import tensorflow as tf

            self.module = tf
            self.Dataset = tf.data.Dataset
            self.data = tf.data
            self.INFINITE = int(tf.data.INFINITE_CARDINALITY)
            self.UNKNOWN = int(tf.data.UNKNOWN_CARDINALITY)
            self.InvalidArgumentError = tf.errors.InvalidArgumentError
            self.NotFoundError = tf.errors.NotFoundError
            self.DataLossError = tf.errors.DataLossError
            self.IndexOutOfRangeError = tf.errors.OutOfRangeError
            self.ArgumentError = tf.errors.InvalidArgumentError
            self.ExternalStateError = tf.errors.FailedPreconditionError
            self.Checkpoint = tf.train.Checkpoint
        else:
            raise ValueError(f"unknown backend {name!r}, expected one of {BACKENDS}")

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"

    @property
    def is_tf(self) -> bool:
        """Whether this is TensorFlow."""
        return self.name == TENSORFLOW

    def tf_message(self, regex: str) -> str | None:
        """``regex`` on TensorFlow, ``None`` (any message) on pipestate.

        For errors whose type both share but whose wording is tf.data's own.
        """
        return regex if self.is_tf else None

    # ------------------------------------------------------------- elements
    def to_numpy(self, element: Any) -> Any:
        """An element as NumPy values (TensorFlow's eager tensors converted)."""
        if self.is_tf:
            return self.module.nest.map_structure(
                lambda t: t.numpy() if hasattr(t, "numpy") else t, element
            )
        return element

    def iterate(self, dataset: Any) -> Iterator[Any]:
        """``iter(dataset)`` yielding NumPy elements."""
        return map(self.to_numpy, iter(dataset))

    def outputs(self, dataset: Any, limit: int | None = None) -> list[Any]:
        """The elements of ``dataset`` (at most ``limit``) via ``as_numpy_iterator``."""
        return list(itertools.islice(dataset.as_numpy_iterator(), limit))

    def at(self, dataset: Any, index: int) -> Any:
        """Element ``index`` by random access: ``ds[index]`` / ``tf.data.experimental.at``.

        An index past the end raises ``IndexOutOfRangeError``.
        """
        if self.is_tf:
            return self.to_numpy(self.data.experimental.at(dataset, index))
        return dataset[index]

    def cardinality(self, dataset: Any) -> int:
        """``dataset.cardinality()`` as an int."""
        return int(dataset.cardinality())

    def static_shapes(self, dataset: Any) -> Any:
        """TensorFlow's static element shapes: a structure of shape tuples (``None``: unknown)."""
        tf = self.module
        return tf.nest.map_structure(
            lambda spec: tuple(spec.shape.as_list()) if spec.shape.rank is not None else None,
            dataset.element_spec,
        )

    # --------------------------------------------------------------- checks
    def assert_produces(
        self,
        dataset: Any,
        expected_output: Sequence[Any] | None = None,
        *,
        expected_error: tuple[Any, str | None] | None = None,
        assert_items_equal: bool = False,
        expected_shapes: Any = None,
        num_test_iterations: int = 1,
        requires_initialization: bool = False,
    ) -> None:
        """tf.data's ``assertDatasetProduces``.

        ``expected_error=(ErrorType, regex)``: the first ``next`` raises it.
        Otherwise ``dataset`` yields exactly ``expected_output`` (in any order
        with ``assert_items_equal``), then ends, and ends again; this is
        repeated ``num_test_iterations`` times with a new iterator.
        ``expected_shapes`` (a structure of shape tuples, ``None`` for an
        unknown dimension) is checked against TensorFlow's static shapes and,
        on both backends, against every element. ``requires_initialization``
        only concerns TF1 graph mode and is accepted for faithful translation.
        """
        del requires_initialization
        assert (expected_error is None) != (expected_output is None), (
            "give exactly one of expected_output and expected_error"
        )
        if expected_error is not None:
            error_type, regex = expected_error
            with pytest.raises(error_type, match=regex):
                next(self.iterate(dataset))
            return
        assert expected_output is not None
        if expected_shapes is not None and self.is_tf:
            assert self.static_shapes(dataset) == expected_shapes
        assert num_test_iterations > 0
        for _ in range(num_test_iterations):
            iterator = iter(dataset)
            result = []
            for _ in range(len(expected_output)):
                try:
                    result.append(self.to_numpy(next(iterator)))
                except StopIteration:
                    raise AssertionError(
                        f"dataset ended early, producing {len(result)} of "
                        f"{len(expected_output)} elements: {result!r}"
                    ) from None
            self._compare(result, list(expected_output), assert_items_equal)
            if expected_shapes is not None:
                for element in result:
                    _check_shapes(element, expected_shapes)
            for _ in range(2):
                with pytest.raises(StopIteration):
                    next(iterator)

    @staticmethod
    def _compare(result: list[Any], expected: list[Any], assert_items_equal: bool) -> None:
        if assert_items_equal:
            assert len(result) == len(expected)
            result = sorted(result, key=_sort_key)
            expected = sorted(expected, key=_sort_key)
        for i, (want, got) in enumerate(zip(expected, result)):
            match(want, got, f"element {i}")

    def assert_raises_at(
        self, dataset: Any, num_ok: int, error_type: type[BaseException], regex: str | None = None
    ) -> list[Any]:
        """``num_ok`` elements come out, then ``next`` raises ``error_type`` matching ``regex``.

        Returns the elements that came out.
        """
        iterator = iter(dataset)
        result = [self.to_numpy(next(iterator)) for _ in range(num_ok)]
        with pytest.raises(error_type, match=regex):
            next(iterator)
        return result

    def assert_raises_when_built_or_read(
        self, build: Build, error_type: Any, regex: str | None = None
    ) -> None:
        """``build()`` raises ``error_type``, or the first ``next`` of its iterator does.

        tf.data checks many arguments when the dataset is built (or its graph
        run); pipestate checks some of them when iterating.
        """
        with pytest.raises(error_type, match=regex):
            next(iter(build()))

    # ------------------------------------------------- checkpoint round trips
    def _checkpoint(self, iterator: Any) -> Any:
        return self.Checkpoint(iterator=iterator)

    def save(self, iterator: Any) -> str:
        """Writes ``iterator``'s position to a new checkpoint file; returns its path."""
        path = str(self._tmp_path / f"ckpt-{next(self._ckpt_numbers)}")
        if self.is_tf:
            return str(self._checkpoint(iterator).write(path))
        # A real checkpoint file, without the fsync a crash-safe save needs: tests are
        # I/O bound otherwise.
        options = self.module.checkpoint.CheckpointOptions(fsync=False)
        return str(self._checkpoint(iterator).write(path, options=options))

    def restore(self, iterator: Any, path: str) -> Any:
        """Restores ``iterator`` from the checkpoint at ``path``; returns it."""
        self._checkpoint(iterator).read(path)
        return iterator

    def gen_outputs(
        self,
        build: Build,
        break_points: Sequence[int],
        num_outputs: int,
        *,
        ckpt_path: str | None = None,
        verify_exhausted: bool = True,
        save_checkpoint_at_end: bool = True,
    ) -> tuple[list[Any], str | None]:
        """tf.data's eager ``gen_outputs``: ``num_outputs`` elements, restarting at each break.

        At every break point the iterator is saved, and a fresh iterator of a
        fresh ``build()`` restored from that file produces the next stretch.
        Returns the elements and the last checkpoint's path.
        """
        outputs: list[Any] = []
        bounds = [0, *break_points, num_outputs]
        for i in range(len(break_points) + 1):
            iterator = iter(build())
            if ckpt_path is not None:
                self.restore(iterator, ckpt_path)
            start, end = bounds[i], bounds[i + 1]
            for _ in range(end - start):
                try:
                    outputs.append(self.to_numpy(next(iterator)))
                except StopIteration:
                    raise AssertionError(
                        f"dataset ended after {len(outputs)} of {num_outputs} elements "
                        f"(break points {list(break_points)})"
                    ) from None
            last = i == len(break_points)
            if verify_exhausted and (last or end == num_outputs):
                # As tf.data's base: a save after the final element must see the end,
                # so that ops reading ahead (filter) record that their input ended.
                with pytest.raises(StopIteration):
                    next(iterator)
            if save_checkpoint_at_end or not last:
                ckpt_path = self.save(iterator)
        return outputs, ckpt_path

    def verify_run_with_breaks(
        self,
        build: Build,
        break_points: Sequence[int],
        num_outputs: int,
        *,
        verify_exhausted: bool = True,
        assert_items_equal: bool = False,
    ) -> None:
        """The outputs with saves and restores at ``break_points`` equal the uninterrupted ones."""
        expected, _ = self.gen_outputs(build, [], num_outputs, verify_exhausted=verify_exhausted)
        actual, _ = self.gen_outputs(
            build, break_points, num_outputs, verify_exhausted=verify_exhausted
        )
        self._match_runs(expected, actual, assert_items_equal)

    @staticmethod
    def _match_runs(expected: list[Any], actual: list[Any], assert_items_equal: bool) -> None:
        assert len(actual) == len(expected)
        if assert_items_equal:
            expected = sorted(expected, key=_sort_key)
            actual = sorted(actual, key=_sort_key)
        for i, (want, got) in enumerate(zip(expected, actual)):
            match(want, got, f"output {i}")

    def verify_unused_iterator(
        self,
        build: Build,
        num_outputs: int,
        verify_exhausted: bool = True,
        *,
        assert_items_equal: bool = False,
    ) -> None:
        """Saving and restoring an iterator before its first element."""
        self.verify_run_with_breaks(
            build,
            [0],
            num_outputs,
            verify_exhausted=verify_exhausted,
            assert_items_equal=assert_items_equal,
        )

    def verify_fully_used_iterator(
        self, build: Build, num_outputs: int, *, assert_items_equal: bool = False
    ) -> None:
        """Saving and restoring after the last element (before the end is seen)."""
        self.verify_run_with_breaks(
            build, [num_outputs], num_outputs, assert_items_equal=assert_items_equal
        )

    def verify_exhausted_iterator(
        self, build: Build, num_outputs: int, *, assert_items_equal: bool = False
    ) -> None:
        """An iterator saved after its end restores to an ended iterator."""
        del assert_items_equal
        _, path = self.gen_outputs(build, [], num_outputs, verify_exhausted=True)
        actual, _ = self.gen_outputs(build, [], 0, ckpt_path=path, verify_exhausted=True)
        assert actual == []

    def verify_multiple_breaks(
        self,
        build: Build,
        num_outputs: int,
        break_points: Sequence[int] | None = None,
        verify_exhausted: bool = True,
        *,
        num_breaks: int = 10,
        assert_items_equal: bool = False,
    ) -> None:
        """Saves and restores at several points (default: ``num_breaks`` spread over [0, n])."""
        if break_points is None:
            break_points = gen_break_points(num_outputs, num_breaks)
        self.verify_run_with_breaks(
            build,
            break_points,
            num_outputs,
            verify_exhausted=verify_exhausted,
            assert_items_equal=assert_items_equal,
        )

    def verify_reset_restored_iterator(
        self,
        build: Build,
        num_outputs: int,
        break_point: int | None = None,
        verify_exhausted: bool = True,
        *,
        assert_items_equal: bool = False,
    ) -> None:
        """A restored position does not leak into a new iterator of the same dataset.

        tf.data's version re-runs a graph-mode initializer after restoring and
        is skipped in eager mode (so it is skipped on TensorFlow here); the
        eager equivalent checked on pipestate is that a new iterator of a
        dataset one of whose iterators was restored starts from the beginning.
        """
        if self.is_tf:
            pytest.skip("tf.data skips this check in eager mode")
        break_point = break_point or num_outputs // 2
        expected, _ = self.gen_outputs(build, [], num_outputs, verify_exhausted=verify_exhausted)
        _, path = self.gen_outputs(build, [], break_point, verify_exhausted=False)
        assert path is not None
        dataset = build()
        self.restore(iter(dataset), path)
        actual, _ = self.gen_outputs(
            lambda: dataset, [], num_outputs, verify_exhausted=verify_exhausted
        )
        self._match_runs(expected, actual, assert_items_equal)

    def verify_error_on_save(
        self,
        build: Build,
        num_outputs: int,
        error: type[BaseException] | tuple[type[BaseException], ...],
        break_point: int | None = None,
    ) -> None:
        """Saving an iterator of ``build()`` after ``break_point`` elements raises ``error``."""
        break_point = break_point or num_outputs // 2
        iterator = iter(build())
        for _ in range(break_point):
            next(iterator)
        with pytest.raises(error):
            self.save(iterator)

    def run_core_tests(
        self, build: Build, num_outputs: int, *, assert_items_equal: bool = False
    ) -> None:
        """The verify functions tf.data's checkpoint tests run in TF2 (eager)."""
        items = assert_items_equal
        self.verify_unused_iterator(build, num_outputs, assert_items_equal=items)
        self.verify_fully_used_iterator(build, num_outputs, assert_items_equal=items)
        self.verify_exhausted_iterator(build, num_outputs, assert_items_equal=items)
        self.verify_multiple_breaks(build, num_outputs, assert_items_equal=items)
        if not self.is_tf:  # tf.data skips it in eager mode
            self.verify_reset_restored_iterator(build, num_outputs, assert_items_equal=items)


#: The verify functions of tf.data's ``checkpoint_test_base.default_test_combinations()``.
VERIFY_FNS = (
    "verify_unused_iterator",
    "verify_fully_used_iterator",
    "verify_exhausted_iterator",
    "verify_multiple_breaks",
    "verify_reset_restored_iterator",
)

#: ``@verify_fns`` parametrizes a test's ``verify_fn`` argument over :data:`VERIFY_FNS`.
verify_fns = pytest.mark.parametrize(
    "verify_fn", VERIFY_FNS, ids=[name.removeprefix("verify_") for name in VERIFY_FNS]
)


def gen_break_points(num_outputs: int, num_samples: int = 10) -> list[int]:
    """``num_samples`` break points spread over [0, num_outputs], duplicates removed."""
    return [int(b) for b in np.unique(np.linspace(0, num_outputs, num_samples, dtype=int))]


def _check_shapes(element: Any, shapes: Any) -> None:
    if isinstance(shapes, dict):
        for key in shapes:
            _check_shapes(element[key], shapes[key])
        return
    if isinstance(shapes, tuple) and any(_is_structure(s) or isinstance(s, list) for s in shapes):
        for e, s in zip(element, shapes, strict=True):
            _check_shapes(e, s)
        return
    shape = np.shape(element)
    want = tuple(shapes) if shapes is not None else None
    if want is None:
        return
    compatible = len(shape) == len(want) and all(w in (None, s) for s, w in zip(shape, want))
    assert compatible, f"element shape {shape} is not compatible with {want}"
