"""pipestate: ML training that resumes at the exact element.

Checkpointable input pipelines (``pipestate.data``) and object-graph
checkpoints of training state (``pipestate.checkpoint``) that meet in one
checkpoint.
"""

from __future__ import annotations

from pipestate import checkpoint, data, errors, testing, training
from pipestate.checkpoint import (
    Checkpoint,
    CheckpointableSaver,
    CheckpointManager,
    Variable,
    latest_checkpoint,
)
from pipestate.data import Dataset

__version__ = "0.1.0"

# tf.data's name for the input-pipeline hook, which belongs to the training layer:
# the package that holds both layers binds it, so pipestate.data never imports training.
data.CheckpointInputPipelineHook = training.CheckpointInputPipelineHook  # type: ignore[attr-defined]
# The pipeline verifier writes real checkpoints, so it lives where both layers meet.
data.verify = testing.verify  # type: ignore[attr-defined]

__all__ = [
    "Checkpoint",
    "CheckpointManager",
    "CheckpointableSaver",
    "Dataset",
    "Variable",
    "__version__",
    "checkpoint",
    "data",
    "errors",
    "latest_checkpoint",
    "testing",
    "training",
]
