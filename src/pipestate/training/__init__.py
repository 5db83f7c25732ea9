"""Training loops with hooks: run config, estimator-style runner, checkpoint hooks.

``Estimator`` trains a plain-Python model with ``train_step(model, features,
labels)``; ``SessionRunHook`` objects run around each step, either in the
estimator or in a hand-written loop driven by ``MonitoredSession``.
``CheckpointInputPipelineHook`` saves and restores the input pipelines so
that a resumed run continues at the exact element.
"""

from __future__ import annotations

from pipestate.training._estimator import Estimator
from pipestate.training._hooks import (
    CheckpointSaverHook,
    CheckpointSaverListener,
    LoggingHook,
    SessionRunHook,
    StopAtStepHook,
)
from pipestate.training._input_hook import CheckpointInputPipelineHook
from pipestate.training._monitored_session import MonitoredSession
from pipestate.training._run_config import RunConfig, TaskType
from pipestate.training._session import (
    Coordinator,
    Session,
    SessionRunArgs,
    SessionRunContext,
    SessionRunValues,
)
from pipestate.training._timer import SecondOrStepTimer

__all__ = [
    "CheckpointInputPipelineHook",
    "CheckpointSaverHook",
    "CheckpointSaverListener",
    "Coordinator",
    "Estimator",
    "LoggingHook",
    "MonitoredSession",
    "RunConfig",
    "SecondOrStepTimer",
    "Session",
    "SessionRunArgs",
    "SessionRunContext",
    "SessionRunHook",
    "SessionRunValues",
    "StopAtStepHook",
    "TaskType",
]
