"""The pipeline ops, one module each, and the registry of their dataset classes."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from pipestate.data.dataset import Dataset
from pipestate.data.ops.batch import BatchDataset
from pipestate.data.ops.concatenate import ConcatenateDataset
from pipestate.data.ops.enumerate import EnumerateDataset
from pipestate.data.ops.filter import FilterDataset
from pipestate.data.ops.from_tensor_slices import FromTensorSlicesDataset
from pipestate.data.ops.from_tensors import FromTensorsDataset
from pipestate.data.ops.global_shuffle import GlobalShuffleDataset
from pipestate.data.ops.map import MapDataset
from pipestate.data.ops.range import RangeDataset
from pipestate.data.ops.repeat import RepeatDataset
from pipestate.data.ops.shard import ShardDataset
from pipestate.data.ops.shuffle import ShuffleDataset
from pipestate.data.ops.skip import SkipDataset
from pipestate.data.ops.take import TakeDataset
from pipestate.data.ops.zip import ZipDataset

_OPS: tuple[type[Dataset], ...] = (
    BatchDataset,
    ConcatenateDataset,
    EnumerateDataset,
    FilterDataset,
    FromTensorSlicesDataset,
    FromTensorsDataset,
    GlobalShuffleDataset,
    MapDataset,
    RangeDataset,
    RepeatDataset,
    ShardDataset,
    ShuffleDataset,
    SkipDataset,
    TakeDataset,
    ZipDataset,
)

REGISTRY: Mapping[str, type[Dataset]] = MappingProxyType({op._op_name: op for op in _OPS})
"""Every op's dataset class by its tf.data name (read-only)."""

__all__ = ["REGISTRY"]
