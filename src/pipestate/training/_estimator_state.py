"""What an ``Estimator`` saves in ``model.ckpt-<step>``: model, optimizer, global step, extra state.

The extra objects (``Estimator(..., state={name: object})``: an LR scheduler,
a ``GradScaler``, RNG states...) are saved under their names next to the
model, in the same checkpoint. Restoring tolerates a checkpoint written before
an object was passed (the object keeps its state) and one that holds an
object no longer passed (its values are left unused); both are logged as warnings.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from pipestate._validate import brief
from pipestate.checkpoint import AutoTrackable, Checkpoint, LoadStatus, Variable
from pipestate.checkpoint._adapters import adapt

__all__ = ["EstimatorState", "check_state", "is_restorable"]

_logger = logging.getLogger("pipestate.training")

_RESERVED = {
    "model": "the model",
    "optimizer": "the optimizer (pass it as optimizer=...)",
    "global_step": "the global step",
}
"""The names the Estimator's own objects are saved under, and what they are."""

_RESTORABLE = (
    "a pipestate Trackable (e.g. a Variable, or an AutoTrackable holding Variables), a NumPy or "
    "Python random generator, or an object with state_dict() / load_state_dict() (a torch "
    "module, optimizer, LR scheduler or GradScaler)"
)


def is_restorable(obj: object) -> bool:
    """Whether a checkpoint can save ``obj`` and restore it in place."""
    return adapt(obj) is not None


def check_state(state: Any) -> dict[str, Any]:
    """The ``state`` argument of ``Estimator`` as a dict, each name and object checked.

    Raises:
        TypeError: When ``state`` is not a mapping, a name is not a str, or an
            object can't be restored in place.
        ValueError: When a name is not identifier-like or is taken by the
            Estimator's own objects or by ``Checkpoint``.
    """
    if state is None:
        return {}
    if not isinstance(state, Mapping):
        raise TypeError(
            "state must be a mapping of name -> object to save with the model, e.g. "
            f"state={{'scheduler': scheduler}}, got {brief(state, 100)} of type "
            f"{type(state).__name__}"
        )
    checked: dict[str, Any] = {}
    for name, obj in state.items():
        _check_name(name)
        if not is_restorable(obj):
            fix = "drop the key" if obj is None else "wrap a plain value in a pipestate Variable"
            raise TypeError(
                f"state[{name!r}] must be restorable in place: {_RESTORABLE}; got "
                f"{brief(obj, 100)} of type {type(obj).__name__} ({fix})"
            )
        checked[name] = obj
    return checked


def _check_name(name: Any) -> None:
    """A ``state`` key: an identifier-like str that no object of the checkpoint already uses."""
    if not isinstance(name, str):
        raise TypeError(
            f"state keys are the names objects are saved under and must be str, got "
            f"{brief(name, 100)} of type {type(name).__name__}"
        )
    if not name.isidentifier() or name.startswith("_"):
        raise ValueError(
            f"state key {name!r} must be an identifier-like name (letters, digits and "
            "underscores, not starting with a digit or an underscore), e.g. 'lr_scheduler'"
        )
    if name in _RESERVED:
        raise ValueError(
            f"state key {name!r} is the name the Estimator saves {_RESERVED[name]} under; "
            "choose another name"
        )
    if hasattr(Checkpoint, name):
        raise ValueError(
            f"state key {name!r} would clash with Checkpoint.{name} in the checkpoint; choose "
            "another name"
        )


def _holds(path: Any, name: str) -> bool:
    """Whether checkpoint ``path`` has an object ``name`` at its root (no value of it is read)."""
    status = Checkpoint(**{name: AutoTrackable()}).restore(path)
    status.expect_partial()
    try:
        status.assert_nontrivial_match()
    except AssertionError:
        return False
    return True


class EstimatorState:
    """The objects of an Estimator's model checkpoint, and how they are restored.

    Args:
        model: Saved as ``model``.
        optimizer: Saved as ``optimizer`` (when not ``None``).
        state: Extra objects, saved under their names (checked by :func:`check_state`).
    """

    def __init__(self, model: Any, optimizer: Any, state: Any) -> None:
        self.global_step = Variable(0, dtype=np.int64)
        self.extras = check_state(state)
        self._own: dict[str, Any] = {"model": model, "global_step": self.global_step}
        if optimizer is not None:
            self._own["optimizer"] = optimizer
        self.checkpoint = Checkpoint(**self._own, **self.extras)

    def restore(self, path: Any) -> None:
        """Restores ``path``; extra objects it does not hold keep their state.

        Objects the checkpoint lacks, and saved values that no object takes,
        are logged as warnings.

        Raises:
            AssertionError: When an object that the checkpoint holds did not
                get all its values (the program changed).
            CheckpointMismatchError: When a value does not fit its object.
        """
        status = self.checkpoint.restore(path)
        # What is left over is said here, not whenever the status happens to be collected.
        status.expect_partial()
        try:
            status.assert_existing_objects_matched()
        except AssertionError:
            # Looked for only now: most checkpoints hold every object, and a probe reads the index.
            missing = [name for name in self.extras if not _holds(path, name)]
            if not missing:
                raise
            status = self._restore_without(path, missing)
        try:
            status.assert_consumed()
        except AssertionError as err:
            # Saved values no object takes: an object no longer passed, or no longer in the model.
            _logger.warning("%s\nThe other objects were restored; these values are unused.", err)

    def _restore_without(self, path: Any, missing: list[str]) -> LoadStatus:
        """Restores ``path`` into every object but the extras ``missing`` from it."""
        _logger.warning(
            "Checkpoint %s holds no %s (written before it was passed to the Estimator?): "
            "left with its current state, and saved from the next checkpoint on.",
            path,
            ", ".join(repr(name) for name in missing),
        )
        present = {k: v for k, v in self.extras.items() if k not in missing}
        checkpoint = Checkpoint(**self._own, **present)
        status = checkpoint.restore(path).expect_partial()
        status.assert_existing_objects_matched()
        # The save counter goes on from the restored one, as when nothing is missing.
        self.checkpoint.save_counter.assign(checkpoint.save_counter.numpy())
        return status
