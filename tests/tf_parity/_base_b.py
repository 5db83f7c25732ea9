"""Helpers of the parity tests for ops spelled differently in pipestate and tf.data.

The tests take the ``backend`` fixture (``conftest.py``) and build pipelines
from ``backend.Dataset``. Where the two APIs name a thing differently (record
files, global shuffle, tensor specs) or a mapped function needs a tensor op
(``tf.reduce_sum`` against ``np.sum``), the helpers here pick the spelling of
the backend under test, so each test body stays the same for both.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import numpy as np

from ._base import Backend, Build


def verify(
    backend: Backend,
    verify_fn: str,
    build: Build,
    num_outputs: int,
    *,
    assert_items_equal: bool = False,
) -> None:
    """Runs the checkpoint verify function named ``verify_fn`` (see ``verify_fns``) on ``build``.

    ``assert_items_equal`` (tf.data's argument for reshuffling pipelines)
    compares the outputs as multisets.
    """
    kwargs: dict[str, Any] = {"assert_items_equal": True} if assert_items_equal else {}
    getattr(backend, verify_fn)(build, num_outputs, **kwargs)


def global_shuffle(
    backend: Backend,
    dataset: Any,
    seed: int | None = None,
    reshuffle_each_iteration: bool = True,
) -> Any:
    """``dataset.global_shuffle(...)``; in TensorFlow the op of ``global_shuffle_op``."""
    if backend.is_tf:
        from tensorflow.python.data.experimental.ops import global_shuffle_op

        return global_shuffle_op._global_shuffle(
            dataset, seed=seed, reshuffle_each_iteration=reshuffle_each_iteration
        )
    return dataset.global_shuffle(seed=seed, reshuffle_each_iteration=reshuffle_each_iteration)


def random_access_error(backend: Backend) -> type[BaseException]:
    """The error of a global shuffle over an input that is not random access.

    tf.data raises ``FailedPreconditionError``; pipestate ``TypeError``
    (docs/ops.md, ``global_shuffle``).
    """
    if backend.is_tf:
        error: type[BaseException] = backend.module.errors.FailedPreconditionError
        return error
    return TypeError


def spec(backend: Backend, shape: Any, dtype: Any) -> Any:
    """A tensor spec for ``output_signature``; ``dtype`` is a NumPy dtype or ``"string"``."""
    if backend.is_tf:
        tf = backend.module
        return tf.TensorSpec(shape, tf.string if dtype == "string" else tf.as_dtype(dtype))
    return backend.data.TensorSpec(shape, dtype)


def record_dataset(
    backend: Backend,
    filenames: Any,
    compression_type: str | None = None,
    buffer_size: int | None = None,
) -> Any:
    """``ps.data.RecordDataset`` / ``tf.data.TFRecordDataset``."""
    cls = backend.data.TFRecordDataset if backend.is_tf else backend.data.RecordDataset
    return cls(filenames, compression_type=compression_type, buffer_size=buffer_size)


def record_writer(backend: Backend, path: str) -> Any:
    """``ps.data.RecordWriter`` / ``tf.io.TFRecordWriter`` for ``path`` (a context manager)."""
    if backend.is_tf:
        return backend.module.io.TFRecordWriter(path)
    return backend.data.RecordWriter(path)


def tensor_ops(backend: Backend) -> SimpleNamespace:
    """The few tensor ops the tests' mapped functions use, in the backend's spelling.

    Each takes and returns the backend's values: symbolic tensors inside a
    traced tf.data function, NumPy values in pipestate.
    """
    if backend.is_tf:
        tf = backend.module
        return SimpleNamespace(
            reduce_sum=tf.reduce_sum,
            num_rows=lambda x: tf.shape(x)[0],
            concat=lambda values: tf.concat(values, 0),
            expand_dims=lambda x: tf.expand_dims(x, 0),
            cast=lambda x, dtype: tf.cast(x, tf.as_dtype(dtype)),
            check_numerics=lambda x: tf.debugging.check_numerics(x, "message"),
            call_python=lambda fn, x, dtype: tf.numpy_function(fn, [x], tf.as_dtype(dtype)),
        )

    def check_numerics(x: Any) -> Any:
        if np.any(np.isnan(x)) or np.any(np.isinf(x)):
            raise backend.InvalidArgumentError(f"message : Tensor had NaN or Inf values: {x!r}")
        return x

    return SimpleNamespace(
        reduce_sum=np.sum,
        num_rows=lambda x: np.shape(x)[0],
        concat=lambda values: np.concatenate(values, 0),
        expand_dims=lambda x: np.expand_dims(x, 0),
        cast=lambda x, dtype: np.asarray(x).astype(dtype)[()],
        check_numerics=check_numerics,
        call_python=lambda fn, x, dtype: fn(x),
    )


def cpu_count() -> int:
    """The core count tf.data's interleave uses for ``cycle_length=None``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, NotImplementedError):
        return os.cpu_count() or 1


def plain(element: Any) -> Any:
    """An element as Python values (tuples, dicts, lists, numbers), for order comparisons."""
    if isinstance(element, dict):
        return {key: plain(value) for key, value in element.items()}
    if isinstance(element, tuple):
        return tuple(plain(value) for value in element)
    return np.asarray(element).tolist()
