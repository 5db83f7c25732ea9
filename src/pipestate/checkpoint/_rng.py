"""``RNGState``: the process's global random number generators as one trackable."""

from __future__ import annotations

import importlib
import random
import sys
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from pipestate.checkpoint._trackable import Trackable
from pipestate.checkpoint._values import Value
from pipestate.errors import CheckpointMismatchError

__all__ = ["RNGState"]

PYTHON = "python"
NUMPY = "numpy"
TORCH = "torch"
CUDA = "cuda"
_ON_MISSING = ("error", "skip")


class RNGState(Trackable):
    """Saves and restores Python's, NumPy's and torch's global random number generators.

    Saved, as plain data (uint32 / uint8 arrays and ints, never pickles):

    * ``python``: ``random.getstate()`` (the module-level generator);
    * ``numpy``: ``numpy.random.get_state()`` (the legacy global ``RandomState``);
    * ``torch``: ``torch.get_rng_state()``, when torch is imported;
    * ``cuda``: ``torch.cuda.get_rng_state_all()``, when CUDA is available.

    After a restore, ``random.random()``, ``numpy.random.rand()`` and
    ``torch.rand()`` continue the saved streams exactly.

    Args:
        on_missing_device: What a restore does with the saved state of CUDA
            devices this process does not have: ``"error"`` (the default)
            raises :class:`~pipestate.errors.CheckpointMismatchError`;
            ``"skip"`` restores the devices that exist.

    Raises:
        ValueError: For another ``on_missing_device``.

    Example:
        >>> import random
        >>> from pipestate.checkpoint import Checkpoint
        >>> ckpt = Checkpoint(rng=RNGState())
        >>> path = ckpt.write("/tmp/doc-rng/ckpt")
        >>> first = random.random()
        >>> status = ckpt.read(path)
        >>> random.random() == first
        True
    """

    # Each rank of a distributed job has its own stream: saved per rank.
    _pipestate_per_rank = True

    def __init__(self, *, on_missing_device: str = "error") -> None:
        if on_missing_device not in _ON_MISSING:
            raise ValueError(
                f"on_missing_device must be one of {_ON_MISSING}, got {on_missing_device!r}"
            )
        self._on_missing_device = on_missing_device

    def __repr__(self) -> str:
        return f"RNGState(on_missing_device={self._on_missing_device!r})"

    def _serialize_to_values(self) -> Mapping[str, Value]:
        version, internal, gauss_next = random.getstate()
        name, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
        values: dict[str, Value] = {
            PYTHON: {
                "version": version,
                "internal": np.array(internal, dtype=np.uint32),
                "gauss_next": gauss_next,
            },
            NUMPY: {
                "bit_generator": name,
                "key": np.asarray(key, dtype=np.uint32).copy(),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "cached_gaussian": float(cached),
            },
        }
        torch = sys.modules.get("torch")
        if torch is not None:
            values[TORCH] = torch.get_rng_state().numpy().copy()
            if torch.cuda.is_available():
                values[CUDA] = [s.numpy().copy() for s in torch.cuda.get_rng_state_all()]
        return values

    def _value_names(self) -> Collection[str] | None:
        return None

    def _restore_from_values(self, values: Mapping[str, Value]) -> None:
        unknown = set(values) - {PYTHON, NUMPY, TORCH, CUDA}
        if unknown:
            raise CheckpointMismatchError(
                f"saved RNGState has unknown parts {sorted(unknown)!r:.100}; it was written by "
                "a newer pipestate"
            )
        # Check everything before setting anything, so a failed restore changes nothing.
        python = _python_state(values[PYTHON]) if PYTHON in values else None
        numpy = _numpy_state(values[NUMPY]) if NUMPY in values else None
        torch, cpu, cuda = self._torch_states(values)
        if python is not None:
            random.setstate(python)
        if numpy is not None:
            np.random.set_state(numpy)
        if torch is not None and cpu is not None:
            torch.set_rng_state(cpu)
        if torch is not None:
            for device, state in enumerate(cuda):
                torch.cuda.set_rng_state(state, device)

    def _torch_states(self, values: Mapping[str, Value]) -> tuple[Any, Any, list[Any]]:
        if TORCH not in values and CUDA not in values:
            return None, None, []
        try:
            torch = importlib.import_module("torch")
        except ImportError:
            raise CheckpointMismatchError(
                "the checkpoint holds torch's random state, but torch is not installed; install "
                "torch to restore it"
            ) from None
        cpu = _bytes(values[TORCH], "torch") if TORCH in values else None
        if cpu is not None and cpu.numel() != torch.get_rng_state().numel():
            raise CheckpointMismatchError(
                f"saved torch random state has {cpu.numel()} bytes, this torch's has "
                f"{torch.get_rng_state().numel()}"
            )
        saved = values.get(CUDA, [])
        if not isinstance(saved, list):
            raise CheckpointMismatchError(f"saved CUDA random states must be a list: {saved!r:.80}")
        cuda = [_bytes(s, f"cuda:{i}") for i, s in enumerate(saved)]
        have = torch.cuda.device_count() if cuda and torch.cuda.is_available() else 0
        if len(cuda) > have:
            if self._on_missing_device == "error":
                raise CheckpointMismatchError(
                    f"the checkpoint holds the random state of {len(cuda)} CUDA device(s), this "
                    f"process has {have}; restore with RNGState(on_missing_device='skip') to "
                    "restore the devices that exist"
                )
            cuda = cuda[:have]
        return torch, cpu, cuda

    def _checkpoint_kind(self) -> str:
        return "RNGState"


def _python_state(saved: Value) -> tuple[Any, ...]:
    try:
        internal = tuple(int(x) for x in np.asarray(saved["internal"], dtype=np.uint32))
        state = (saved["version"], internal, saved["gauss_next"])
        random.Random().setstate(state)  # validates without touching the global generator
    except (TypeError, ValueError, KeyError, IndexError, OverflowError) as err:
        raise CheckpointMismatchError(f"saved Python random state is malformed: {err}") from err
    return state


def _numpy_state(saved: Value) -> tuple[Any, ...]:
    try:
        state = (
            saved["bit_generator"],
            np.asarray(saved["key"], dtype=np.uint32),
            saved["pos"],
            saved["has_gauss"],
            saved["cached_gaussian"],
        )
        np.random.RandomState().set_state(state)  # validates without touching the global state
    except (TypeError, ValueError, KeyError, IndexError, OverflowError) as err:
        raise CheckpointMismatchError(f"saved NumPy random state is malformed: {err}") from err
    return state


def _bytes(saved: Value, what: str) -> Any:
    torch = sys.modules["torch"]
    if not (isinstance(saved, np.ndarray) and saved.dtype == np.uint8 and saved.ndim == 1):
        raise CheckpointMismatchError(
            f"saved {what} random state must be a 1-D uint8 array, got {saved!r:.80}"
        )
    return torch.from_numpy(np.array(saved, copy=True))
