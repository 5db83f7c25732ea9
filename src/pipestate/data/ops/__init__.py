"""The pipeline ops, one module each, and the registry of their dataset classes."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from pipestate.data.dataset import Dataset
from pipestate.data.ops.batch import BatchDataset
from pipestate.data.ops.concatenate import ConcatenateDataset
from pipestate.data.ops.enumerate import EnumerateDataset
from pipestate.data.ops.filter import FilterDataset
from pipestate.data.ops.flat_map import FlatMapDataset
from pipestate.data.ops.from_generator import FromGeneratorDataset
from pipestate.data.ops.from_tensor_slices import FromTensorSlicesDataset
from pipestate.data.ops.from_tensors import FromTensorsDataset
from pipestate.data.ops.global_shuffle import GlobalShuffleDataset
from pipestate.data.ops.interleave import InterleaveDataset
from pipestate.data.ops.list_files import ListFilesDataset
from pipestate.data.ops.map import MapDataset
from pipestate.data.ops.padded_batch import PaddedBatchDataset
from pipestate.data.ops.prefetch import PrefetchDataset
from pipestate.data.ops.range import RangeDataset
from pipestate.data.ops.record import RecordDataset
from pipestate.data.ops.repeat import RepeatDataset
from pipestate.data.ops.scan import ScanDataset
from pipestate.data.ops.shard import ShardDataset
from pipestate.data.ops.shuffle import ShuffleDataset
from pipestate.data.ops.skip import SkipDataset
from pipestate.data.ops.take import TakeDataset
from pipestate.data.ops.take_while import TakeWhileDataset
from pipestate.data.ops.text_line import TextLineDataset
from pipestate.data.ops.unbatch import UnbatchDataset
from pipestate.data.ops.zip import ZipDataset

_OPS: tuple[type[Dataset], ...] = (
    BatchDataset,
    ConcatenateDataset,
    EnumerateDataset,
    FilterDataset,
    FlatMapDataset,
    FromGeneratorDataset,
    FromTensorSlicesDataset,
    FromTensorsDataset,
    GlobalShuffleDataset,
    InterleaveDataset,
    ListFilesDataset,
    MapDataset,
    PaddedBatchDataset,
    PrefetchDataset,
    RangeDataset,
    RecordDataset,
    RepeatDataset,
    ScanDataset,
    ShardDataset,
    ShuffleDataset,
    SkipDataset,
    TakeDataset,
    TakeWhileDataset,
    TextLineDataset,
    UnbatchDataset,
    ZipDataset,
)

REGISTRY: Mapping[str, type[Dataset]] = MappingProxyType({op._op_name: op for op in _OPS})
"""Every op's dataset class by its tf.data name (read-only)."""

__all__ = ["REGISTRY"]
