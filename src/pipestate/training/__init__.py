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
    Coordinator,
    LoggingHook,
    MonitoredSession,
    SecondOrStepTimer,
    Session,
    SessionRunArgs,
    SessionRunContext,
    SessionRunHook,
    SessionRunValues,
    StopAtStepHook,
)
from pipestate.training._input_hook import CheckpointInputPipelineHook
from pipestate.training._run_config import RunConfig, TaskType

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
