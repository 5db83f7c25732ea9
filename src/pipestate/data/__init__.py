"""Checkpointable input pipelines with tf.data's API.

``Dataset`` describes a pipeline; ``iter(dataset)`` gives a
``DatasetIterator`` whose ``get_state()`` / ``set_state()`` save and restore
its exact position.
"""

from __future__ import annotations

from pipestate.data._profile import ProfiledIterator, ProfileReport, profiled
from pipestate.data._ragged import RaggedBatch
from pipestate.data._remote import ReadOptions
from pipestate.data._saveable import make_saveable_from_iterator
from pipestate.data._spec import TensorSpec
from pipestate.data._webdataset import write_webdataset_index
from pipestate.data.dataset import INFINITE_CARDINALITY, UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import STATE_VERSION, DatasetIterator, State
from pipestate.data.loader import Loader, LoaderWorkerError, WorkerInfo, get_worker_info
from pipestate.data.ops.fixed_length_record import FixedLengthRecordDataset
from pipestate.data.ops.group_by_reducer import Reducer
from pipestate.data.ops.record import RecordDataset, RecordWriter, write_record_index
from pipestate.data.ops.text_line import TextLineDataset
from pipestate.data.options import AUTOTUNE, ExternalStatePolicy, Options

__all__ = [
    "AUTOTUNE",
    "INFINITE_CARDINALITY",
    "STATE_VERSION",
    "UNKNOWN_CARDINALITY",
    "Dataset",
    "DatasetIterator",
    "ExternalStatePolicy",
    "FixedLengthRecordDataset",
    "Loader",
    "LoaderWorkerError",
    "Options",
    "ProfileReport",
    "ProfiledIterator",
    "RaggedBatch",
    "ReadOptions",
    "RecordDataset",
    "RecordWriter",
    "Reducer",
    "State",
    "TensorSpec",
    "TextLineDataset",
    "WorkerInfo",
    "get_worker_info",
    "make_saveable_from_iterator",
    "profiled",
    "write_record_index",
    "write_webdataset_index",
]
