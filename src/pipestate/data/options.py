"""Pipeline options, and the policy for saving pipelines with external state."""

from __future__ import annotations

import dataclasses
import enum
import logging
from typing import Any

from pipestate._validate import AUTOTUNE, check_bool
from pipestate.errors import ExternalStateError

__all__ = ["AUTOTUNE", "ExternalStatePolicy", "Options", "apply_external_state_policy"]


_logger = logging.getLogger("pipestate.data")


class ExternalStatePolicy(enum.Enum):
    """What saving an iterator does when its pipeline depends on state pipestate can't save.

    Such state lives outside the pipeline: a Python generator, a function
    marked ``stateful=True``. ``FAIL`` raises :class:`~pipestate.errors.ExternalStateError`
    naming the op; ``WARN`` logs a warning naming it and saves everything else;
    ``IGNORE`` saves everything else silently.
    """

    WARN = "warn"
    IGNORE = "ignore"
    FAIL = "fail"

    @classmethod
    def coerce(cls, value: Any, *, what: str = "external_state_policy") -> ExternalStatePolicy:
        """``value`` as a policy: a member, or ``'warn'``, ``'ignore'`` or ``'fail'``.

        Raises:
          ValueError: any other value (the message lists the allowed ones).
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value)
            except ValueError:
                pass
        raise ValueError(
            f"Invalid `ExternalStatePolicy.` Supported values include 'warn', 'ignore', and "
            f"'fail.' Received {value!r} for {what}."
        )


@dataclasses.dataclass
class Options:
    """Settings of a pipeline, attached with ``dataset.with_options(options)``.

    Attributes:
      external_state_policy: What ``get_state()`` does when the pipeline has an
        op with external state (see :class:`ExternalStatePolicy`); ``None``
        leaves it unset (``FAIL`` unless another ``with_options`` sets it).
      deterministic: The default of ``deterministic=None`` in parallel ``map``,
        ``batch`` and ``interleave``: ``False`` allows out-of-order delivery;
        ``None`` leaves it unset (in order). A state saved in one order mode
        restores under the other.

    Example:
      >>> import pipestate as ps
      >>> options = ps.data.Options()
      >>> options.external_state_policy = ps.data.ExternalStatePolicy.WARN
      >>> ds = ps.Dataset.range(3).with_options(options)
    """

    external_state_policy: ExternalStatePolicy | str | None = None

    # -- deterministic
    deterministic: bool | None = None
    """The order of ops with ``deterministic=None`` (parallel ``map``, ``batch``,
    ``interleave``), as tf.data's ``Options.deterministic``: ``False`` lets them
    deliver elements out of order where they can; ``None`` or ``True``: in order."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "external_state_policy" and value is not None:
            value = ExternalStatePolicy.coerce(value)
        elif name == "deterministic" and value is not None:
            check_bool("deterministic", value, op="Options")
            value = bool(value)
        elif name not in {f.name for f in dataclasses.fields(self)}:
            raise AttributeError(
                f"Options has no option {name!r}; available: "
                f"{[f.name for f in dataclasses.fields(self)]}"
            )
        super().__setattr__(name, value)

    def merge(self, other: Options) -> Options:
        """A copy of these options with the options set in ``other`` taking precedence."""
        if not isinstance(other, Options):
            raise TypeError(f"Options.merge expects Options, got {type(other).__name__}")
        merged = dataclasses.replace(self)
        for field in dataclasses.fields(other):
            value = getattr(other, field.name)
            if value is not None:
                setattr(merged, field.name, value)
        return merged


def apply_external_state_policy(
    policy: ExternalStatePolicy, external_ops: list[str], what: str
) -> None:
    """Raises, warns or does nothing about ``external_ops`` (op reprs), per ``policy``.

    Raises:
      ExternalStateError: the policy is ``FAIL`` and there is at least one such op.
    """
    if not external_ops:
        return
    ops = ", ".join(external_ops)
    if policy is ExternalStatePolicy.FAIL:
        raise ExternalStateError(
            f"Cannot save the state of {what}: it depends on external state pipestate can't "
            f"save, in {ops}. Restoring would not continue exactly. To save everything else, "
            "set the external state policy to 'warn' or 'ignore' (Options.external_state_policy "
            "with dataset.with_options, or get_state(external_state_policy=...))."
        )
    if policy is ExternalStatePolicy.WARN:
        _logger.warning(
            "Saving %s without the external state of %s; a restored iterator may not continue "
            "exactly where this one stops.",
            what,
            ops,
        )
