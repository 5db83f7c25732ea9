"""Adapters that make ordinary objects trackable.

* Python values (``int``, ``str``, lists / dicts of plain values, NumPy arrays
  held in an attribute): saved as one value and restored by rebinding the slot
  that holds them (an attribute, a list index, a dict key).
* ``numpy.random.Generator``, ``numpy.random.RandomState`` and
  ``random.Random``: their state is saved and restored in place.
* Anything with ``state_dict()`` / ``load_state_dict()`` (PyTorch's Stateful
  protocol): the state dict's entries are saved as attributes; torch tensors
  are saved as themselves (see :mod:`pipestate.torch._state`).
* Torch objects (modules, optimizers, LR schedulers, ``GradScaler``,
  ``torch.Generator``): adapted by :mod:`pipestate.torch._state`, imported
  only when such an object is met.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np

from pipestate.checkpoint._pytree_form import PYTREE, plain_from_saved
from pipestate.checkpoint._trackable import Trackable
from pipestate.checkpoint._values import Value, is_torch_tensor
from pipestate.errors import CheckpointMismatchError

__all__ = ["PythonValue", "StatefulAdapter", "adapt", "is_stateful"]

VALUE = "VALUE"
STATE = "STATE"


class PythonValue(Trackable):
    """A plain Python value living in a slot of another object (an attribute, a list index).

    Restored by rebinding the slot to the saved value; a slot where a JAX pytree was
    saved (it holds ``None`` until the pytree is made) gets the pytree's leaves in
    nested dicts and lists, as NumPy arrays (a PRNG key array as its key data).
    """

    # Takes every attribute of a node saved as a pytree, not only ``VALUE``.
    _restores_saved_pytrees = True

    def __init__(self, get: Callable[[], Value], set_: Callable[[Value], None], where: str) -> None:
        self._get = get
        self._set = set_
        self._where = where

    def _checkpoint_kind(self) -> str:
        try:
            return type(self._get()).__name__
        except Exception:
            return "PythonValue"

    def _serialize_to_values(self) -> Mapping[str, Value]:
        return {VALUE: self._get()}

    def _value_names(self) -> Collection[str]:
        return (VALUE,)

    def _restore_from_values(self, values: Mapping[str, Value]) -> None:
        if PYTREE in values:
            self._set(plain_from_saved(values, f"the value {self._where} restored from a pytree"))
            return
        self._set(values[VALUE])

    def __repr__(self) -> str:
        try:
            shown = repr(self._get())
        except Exception:
            shown = "<gone>"
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return f"PythonValue({self._where}={shown})"


class _GeneratorAdapter(Trackable):
    """``numpy.random.Generator``: the bit generator's state dict."""

    # Each rank of a distributed job has its own stream: saved per rank.
    _pipestate_per_rank = True

    def __init__(self, generator: np.random.Generator) -> None:
        self.wrapped = generator

    def _checkpoint_kind(self) -> str:
        return f"Generator({type(self.wrapped.bit_generator).__name__})"

    def _serialize_to_values(self) -> Mapping[str, Value]:
        return {STATE: self.wrapped.bit_generator.state}

    def _value_names(self) -> Collection[str]:
        return (STATE,)

    def _restore_from_values(self, values: Mapping[str, Value]) -> None:
        state = values[STATE]
        expected = type(self.wrapped.bit_generator).__name__
        saved = state.get("bit_generator") if isinstance(state, dict) else None
        if not isinstance(saved, str):
            raise CheckpointMismatchError(
                f"saved {expected} generator state is malformed: it names no bit generator "
                f"({state!r:.80})"
            )
        if saved != expected:
            raise CheckpointMismatchError(
                f"cannot restore a {expected} generator from saved {saved!r} state; "
                f"create the generator with numpy.random.Generator(numpy.random.{saved}())"
            )
        try:
            self.wrapped.bit_generator.state = state
        except (TypeError, ValueError, KeyError, IndexError, OverflowError) as err:
            raise CheckpointMismatchError(f"saved {expected} state is malformed: {err}") from err

    def __repr__(self) -> str:
        return f"GeneratorAdapter({self.wrapped!r})"


class _RandomStateAdapter(Trackable):
    """``numpy.random.RandomState``: ``get_state(legacy=False)``."""

    # Each rank of a distributed job has its own stream: saved per rank.
    _pipestate_per_rank = True

    def __init__(self, random_state: np.random.RandomState) -> None:
        self.wrapped = random_state

    def _checkpoint_kind(self) -> str:
        return "RandomState"

    def _serialize_to_values(self) -> Mapping[str, Value]:
        return {STATE: self.wrapped.get_state(legacy=False)}

    def _value_names(self) -> Collection[str]:
        return (STATE,)

    def _restore_from_values(self, values: Mapping[str, Value]) -> None:
        try:
            self.wrapped.set_state(values[STATE])
        except (TypeError, ValueError, KeyError, IndexError, OverflowError) as err:
            raise CheckpointMismatchError(f"saved RandomState state is malformed: {err}") from err

    def __repr__(self) -> str:
        return f"RandomStateAdapter({self.wrapped!r})"


class _PyRandomAdapter(Trackable):
    """``random.Random``: version, the 625 Mersenne Twister words (as uint32) and ``gauss_next``."""

    # Each rank of a distributed job has its own stream: saved per rank.
    _pipestate_per_rank = True

    def __init__(self, rng: random.Random) -> None:
        self.wrapped = rng

    def _checkpoint_kind(self) -> str:
        return type(self.wrapped).__name__

    def _serialize_to_values(self) -> Mapping[str, Value]:
        version, internal, gauss_next = self.wrapped.getstate()
        return {
            STATE: {
                "version": version,
                "internal": np.array(internal, dtype=np.uint32),
                "gauss_next": gauss_next,
            }
        }

    def _value_names(self) -> Collection[str]:
        return (STATE,)

    def _restore_from_values(self, values: Mapping[str, Value]) -> None:
        state = values[STATE]
        if not isinstance(state, dict):
            raise CheckpointMismatchError(
                f"saved random.Random state must be a dict, got {type(state).__name__} "
                f"({state!r:.60})"
            )
        try:
            internal = tuple(int(x) for x in np.asarray(state["internal"]).reshape(-1))
            self.wrapped.setstate((state["version"], internal, state["gauss_next"]))
        except (TypeError, ValueError, KeyError, IndexError, OverflowError) as err:
            raise CheckpointMismatchError(f"saved random.Random state is malformed: {err}") from err

    def __repr__(self) -> str:
        return f"RandomAdapter({type(self.wrapped).__name__})"


def _to_value(value: Any) -> Value:
    # Torch tensors are values themselves; mappings of other types become dicts.
    if isinstance(value, Mapping):
        return {k: _to_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_value(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_to_value(v) for v in value)
    return value


def _contains_torch(value: Any) -> bool:
    if is_torch_tensor(value):
        return True
    if isinstance(value, Mapping):
        return any(_contains_torch(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_contains_torch(v) for v in value)
    return False


def _to_torch(value: Value, torch: Any) -> Any:
    # Checkpoints written before torch tensors were values hold NumPy arrays.
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, dict):
        return {k: _to_torch(v, torch) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_torch(v, torch) for v in value]
    if isinstance(value, tuple):
        return tuple(_to_torch(v, torch) for v in value)
    return value


NUMPY_STATE = "_state_dict_is_numpy"
"""Class attribute of a Stateful object whose ``load_state_dict`` takes NumPy values only.

The adapter then restores it without first calling its ``state_dict()`` to see
whether it holds torch tensors (pipestate's iterators set it: their
``state_dict()`` applies the external state policy)."""


class StatefulAdapter(Trackable):
    """An object with ``state_dict()`` / ``load_state_dict()``; one attribute per entry."""

    def __init__(self, obj: Any) -> None:
        self.wrapped = obj

    def _checkpoint_kind(self) -> str:
        return type(self.wrapped).__name__

    def _state_dict(self) -> Mapping[str, Any]:
        state = self.wrapped.state_dict()
        if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
            raise TypeError(
                f"{type(self.wrapped).__name__}.state_dict() must return a mapping with str keys, "
                f"got {state!r:.100}"
            )
        return state

    def _serialize_to_values(self) -> Mapping[str, Value]:
        return {k: _to_value(v) for k, v in self._state_dict().items()}

    def _restore_from_values(self, values: Mapping[str, Value]) -> None:
        state: dict[str, Any] = dict(values)
        torch = sys.modules.get("torch")
        if torch is not None and self._wants_torch():
            state = _to_torch(state, torch)
        try:
            self.wrapped.load_state_dict(state)
        except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as err:
            # torch raises RuntimeError for a shape mismatch; others raise what they like.
            if isinstance(err, CheckpointMismatchError):
                raise
            raise CheckpointMismatchError(
                f"{type(self.wrapped).__name__}.load_state_dict() refused the saved state: "
                f"{type(err).__name__}: {err}"
            ) from err

    def _wants_torch(self) -> bool:
        """Whether the wrapped object takes its state back as torch tensors."""
        if getattr(self.wrapped, NUMPY_STATE, False):
            return False
        if type(self.wrapped).__module__.startswith("torch"):
            return True
        # Ask the object what it holds now; an object that can't say (its
        # state_dict() raises) gets NumPy values.
        try:
            return _contains_torch(self._state_dict())
        except Exception:
            return False

    def __repr__(self) -> str:
        return f"StatefulAdapter({type(self.wrapped).__name__})"


def _is_torch_object(obj: object) -> bool:
    """Whether ``obj`` is a torch generator, module, optimizer, LR scheduler or grad scaler."""
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    kinds = (
        torch.Generator,
        torch.nn.Module,
        torch.optim.Optimizer,
        torch.optim.lr_scheduler.LRScheduler,
        torch.amp.GradScaler,
    )
    return isinstance(obj, kinds)


def is_stateful(obj: object) -> bool:
    """Whether ``obj`` follows the Stateful protocol (``state_dict`` and ``load_state_dict``)."""
    return callable(getattr(obj, "state_dict", None)) and callable(
        getattr(obj, "load_state_dict", None)
    )


def adapt(obj: object) -> Trackable | None:
    """A trackable that saves and restores ``obj`` in place, or ``None`` when there is none.

    Plain Python values are not handled here: they cannot be restored in
    place, so their holder adapts them (see ``PythonValue``).
    """
    if isinstance(obj, Trackable):
        return obj
    if _is_torch_object(obj):
        from pipestate.torch._state import adapt_torch

        return adapt_torch(obj)
    if isinstance(obj, np.random.Generator):
        return _GeneratorAdapter(obj)
    if isinstance(obj, np.random.RandomState):
        return _RandomStateAdapter(obj)
    if isinstance(obj, random.Random) and not isinstance(obj, random.SystemRandom):
        return _PyRandomAdapter(obj)
    if is_stateful(obj):
        return StatefulAdapter(obj)
    return None
