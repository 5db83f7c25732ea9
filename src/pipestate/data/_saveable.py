"""``make_saveable_from_iterator``: an iterator's state as a saveable with its own policy.

The saveable follows the Stateful protocol (``state_dict()`` /
``load_state_dict()``), which ``pipestate.checkpoint`` adapts into a
trackable, so ``pipestate.data`` does not import ``pipestate.checkpoint``.
It saves the same attributes as the iterator itself does in a checkpoint,
so the two are interchangeable: a checkpoint written through one restores
through the other.
"""

from __future__ import annotations

from typing import Any

from pipestate._validate import brief
from pipestate.data.iterator import DatasetIterator, State
from pipestate.data.options import ExternalStatePolicy, apply_external_state_policy

__all__ = ["WRAPS_ITERATOR", "IteratorSaveable", "make_saveable_from_iterator"]

WRAPS_ITERATOR = "_pipestate_wraps_iterator"
"""Class attribute of an iterator wrapper whose ``iterator`` property is the pipeline it
wraps and whose ``get_state`` / ``set_state`` are that pipeline's state."""


class IteratorSaveable:
    """The state of one :class:`DatasetIterator`, saved under an external-state policy.

    Created by :func:`make_saveable_from_iterator`. ``state_dict()`` is the
    iterator's ``get_state(external_state_policy=policy)``; ``load_state_dict()``
    is ``set_state()``, which discards the iterator's current position entirely.
    """

    # A distributed checkpoint keeps each rank's state; on another world size, rank 0's
    # state restores every rank through the elastic rule (or set_state refuses it).
    _pipestate_per_rank = True
    _pipestate_reshards = True

    # Checkpoints restore the state as NumPy values without asking for the current one.
    _state_dict_is_numpy = True

    def __init__(self, iterator: Any, policy: ExternalStatePolicy) -> None:
        self._iterator = iterator
        self._policy = policy

    @property
    def iterator(self) -> Any:
        """The iterator whose state is saved."""
        return self._iterator

    @property
    def external_state_policy(self) -> ExternalStatePolicy:
        """What saving does about ops with external state."""
        return self._policy

    def state_dict(self) -> State:
        """The iterator's state; the policy decides about external state (may raise)."""
        state: State = self._iterator.get_state(external_state_policy=self._policy)
        return state

    def load_state_dict(self, state_dict: State) -> None:
        """Restores the iterator to ``state_dict``, discarding its current position."""
        self._iterator.set_state(state_dict)

    def __repr__(self) -> str:
        return f"IteratorSaveable({self._iterator!r}, external_state_policy='{self._policy.value}')"


def make_saveable_from_iterator(
    iterator: Any, external_state_policy: ExternalStatePolicy | str | None = None
) -> IteratorSaveable:
    """A saveable of ``iterator``'s state, to save with a ``Checkpoint`` or a saver.

    The saveable is a dependency like any other: ``Checkpoint(input=saveable)``,
    a list of saveables (``Checkpoint(inputs=[a, b])``), or the root of a
    ``CheckpointableSaver``. Saving stores the iterator's state, obeying the
    policy for ops with external state; restoring discards the iterator's
    current state entirely and puts the saved one in its place.

    Args:
        iterator: A :class:`DatasetIterator` (``iter(dataset)``), or a
            ``pipestate.jax.device_prefetch`` iterator of one (its state is
            the pipeline's after the last batch it returned).
        external_state_policy: ``'warn'``, ``'ignore'``, ``'fail'`` or an
            :class:`ExternalStatePolicy`; ``None`` means ``'fail'`` (the
            dataset's ``Options`` are not consulted, as in TensorFlow).

    Returns:
        An :class:`IteratorSaveable`.

    Raises:
        ValueError: For an invalid policy (``Invalid `ExternalStatePolicy.` ...``),
            or when the iterator can't be checkpointed: not a pipestate
            iterator, closed, or depending on external state with the
            ``'fail'`` policy (then an ``ExternalStateError`` naming the op).

    Example:
        >>> import pipestate as ps
        >>> it = iter(ps.Dataset.range(5))
        >>> ckpt = ps.Checkpoint(input=ps.data.make_saveable_from_iterator(it))
        >>> next(it), next(it)
        (np.int64(0), np.int64(1))
    """
    policy = (
        ExternalStatePolicy.FAIL
        if external_state_policy is None
        else ExternalStatePolicy.coerce(external_state_policy)
    )
    # A wrapper whose state is its pipeline's (pipestate.jax's DeviceIterator) is saved
    # through its own get_state / set_state; the pipeline it wraps is checked here.
    wrapped = getattr(type(iterator), WRAPS_ITERATOR, False) is True
    inner = iterator.iterator if wrapped else iterator
    if not isinstance(inner, DatasetIterator):
        raise ValueError(
            f"make_saveable_from_iterator expects a pipestate DatasetIterator (iter(dataset)), "
            "or a device_prefetch iterator of one, got "
            f"{brief(inner, 100)} of type {type(inner).__name__}, which can't be "
            "checkpointed; build the input with pipestate.Dataset"
        )
    if inner._closed or getattr(iterator, "_closed", False) is True:
        raise ValueError(f"{iterator!r} is closed and can't be checkpointed; use an open iterator")
    if policy is ExternalStatePolicy.FAIL:
        # Refuse now rather than at the first save: the dataset never changes.
        apply_external_state_policy(policy, inner.dataset._external_ops(), repr(iterator))
    return IteratorSaveable(iterator, policy)
