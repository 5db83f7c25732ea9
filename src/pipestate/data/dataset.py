"""The ``Dataset`` class: an immutable description of an input pipeline."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from pipestate._validate import brief, check_bool
from pipestate.data import _fingerprint
from pipestate.data import _structure as _structure_module
from pipestate.data._capabilities import Background, Elastic
from pipestate.data._structure import Element

if TYPE_CHECKING:
    from pipestate.data.iterator import DatasetIterator, StreamIterator
    from pipestate.data.options import Options

INFINITE_CARDINALITY = -1
"""``cardinality()`` of a dataset that never ends (as ``tf.data.INFINITE_CARDINALITY``)."""
UNKNOWN_CARDINALITY = -2
"""``cardinality()`` of a dataset whose length can't be known without iterating."""


class Dataset:
    """An immutable description of an input pipeline, with tf.data's API.

    All position lives in the iterator that ``iter(dataset)`` returns; that
    iterator saves and restores its position with ``get_state()`` /
    ``set_state()``. Random-access datasets (sources and the ops that keep
    random access) also support ``len()`` and ``dataset[i]``, and their
    iterator state is a single global index.

    Example:
      >>> import pipestate as ps
      >>> ds = ps.Dataset.range(10).map(lambda x: x * 2).batch(4)
      >>> it = iter(ds)
      >>> next(it)
      array([0, 2, 4, 6])
      >>> state = it.get_state()
      >>> fresh = iter(ds)
      >>> fresh.set_state(state)
      >>> next(fresh)
      array([ 8, 10, 12, 14])
    """

    # ------------------------------------------------ what an op declares
    # Each op's class sets these (see docs/architecture.md#adding-an-op); the
    # iterators, the thread engine and the elastic rule read them.
    _op_name: ClassVar[str] = "dataset"
    """The op's tf.data name: its fluent method, its name in states and in the registry."""
    _iterator_class: ClassVar[type[StreamIterator[Any]] | None] = None
    """The op's streaming iterator, used when an input is not random access."""
    _passes_elements: ClassVar[bool] = False
    """Whether the op outputs elements of its one input unchanged (filter, take, shuffle, ...)."""
    _keeps_random_access: ClassVar[bool] = True
    """Whether the op computes element ``i`` from its inputs' elements by index (``_get``);
    the pipeline is random access when every op keeps it."""
    _passthrough: ClassVar[bool] = False
    """Whether the op changes neither elements nor positions (prefetch): left out of states."""
    _elastic: ClassVar[Elastic] = Elastic.BLOCKS
    """How an elastic shard's position maps through the op."""

    _cardinality_cache: int | None = None

    def __init__(self, parents: Sequence[Dataset] = ()) -> None:
        for parent in parents:
            if not isinstance(parent, Dataset):
                raise TypeError(
                    f"{self._op_name}: expected a pipestate Dataset as input, got "
                    f"{type(parent).__name__} {brief(parent, 80)}"
                )
        self._parents: tuple[Dataset, ...] = tuple(parents)
        self._fingerprint_cache: str | None = None
        self._chain_cache: list[tuple[str, str, str]] | None = None
        self._external_cache: list[str] | None = None
        self._own_options: Options | None = None
        self._name: str | None = None
        # The seed an op made with seed=None keeps for the dataset's life, drawn
        # on first use; shared with copies (with_options) of this dataset.
        self._kept_entropy: list[int] = []

    # ----------------------------------------------------------------- op hooks
    def _cardinality(self) -> int:
        """Number of elements, ``INFINITE_CARDINALITY`` or ``UNKNOWN_CARDINALITY``."""
        raise NotImplementedError

    def _params(self) -> dict[str, Any]:
        """The op's own settings (not its inputs), for ``repr`` and fingerprints."""
        return {}

    def _element_spec(self) -> Any:
        """The elements' structure of ``TensorSpec``s, known without computing one; ``None``
        where an op (a user function) makes it unknown."""
        if self._passes_elements:
            return self._parents[0]._element_spec()
        return None

    def _leading_dimension(self) -> int | None:
        """The first dimension every element is known to have, or ``None`` (read by ``unbatch``).

        An op that passes its input's elements on has its input's; batching ops
        and in-memory sources override it.
        """
        return self._parents[0]._leading_dimension() if self._passes_elements else None

    def _elastic_scale(self) -> int:
        """Input elements per output element, for an op declaring ``Elastic.BATCH``."""
        raise NotImplementedError(f"{self._op_name} declares no batch size")

    def _background(self) -> Background | None:
        """The background threads this op asks for (prefetch, parallel map), or ``None``."""
        return None

    @property
    def _random_access(self) -> bool:
        """Whether elements can be computed from their index (``_get``)."""
        return self._keeps_random_access and all(p._random_access for p in self._parents)

    @property
    def _vectorised(self) -> bool:
        """Whether ``_get_batch`` is cheaper than one ``_get`` per element."""
        return all(parent._vectorised for parent in self._parents)

    def _get(self, epoch: int, position: int) -> Element:
        """Element at ``position`` in ``[0, len)`` of pass number ``epoch``.

        ``epoch`` counts how many times an enclosing ``repeat`` has restarted
        this dataset; ops that reshuffle per epoch use it, the others pass it on.
        """
        from pipestate.data import _structure

        return _structure.unstack(
            self._get_batch(np.array([epoch], np.int64), np.array([position], np.int64)), 1
        )[0]

    def _get_batch(self, epochs: np.ndarray, positions: np.ndarray) -> Element:
        """Elements at ``positions`` of ``epochs`` (int64 arrays), stacked on axis 0."""
        from pipestate.data import _structure

        return _structure.stack(
            [self._get(int(e), int(p)) for e, p in zip(epochs, positions)], self
        )

    def _get_list(self, epoch: int, positions: np.ndarray) -> list[Element]:
        """Elements at ``positions`` of pass ``epoch``, as a list, reading ahead cheaply.

        If the element at ``positions[k]`` (``k > 0``) raises, returns the ``k``
        elements before it; the caller asks for it again, and it raises then.
        """
        out: list[Element] = []
        for position in positions:
            try:
                out.append(self._get(epoch, int(position)))
            except Exception:
                if not out:
                    raise
                break
        return out

    def _make_iterator(self, entropy: int | None, epoch: int = 0) -> DatasetIterator:
        """A fresh iterator over pass ``epoch``; ``entropy`` seeds ops created with ``seed=None``.

        Random-access pipelines get the index iterator (run on background
        threads when the pipeline has prefetch or a parallel map); the others
        their last op's streaming iterator, which reads its inputs' iterators.
        """
        from pipestate.data._threaded import index_iterator

        if self._random_access:
            return index_iterator(self, entropy, epoch)
        if self._iterator_class is None:
            raise NotImplementedError(f"{self._op_name} has no streaming iterator")
        return self._iterator_class(self, entropy, epoch)

    def _external_state(self) -> str | None:
        """Why this op alone depends on state pipestate can't save, or ``None``."""
        return None

    def _external_ops(self) -> list[str]:
        """Reprs of the ops of the pipeline that have external state, inputs first."""
        if self._external_cache is None:
            found: list[str] = []
            for parent in self._parents:
                found.extend(op for op in parent._external_ops() if op not in found)
            reason = self._external_state()
            if reason is not None:
                found.append(f"{self._op_repr()} ({reason})")
            self._external_cache = found
        return self._external_cache

    def _resolve_seeds(self, entropy: int, stages: Iterator[int]) -> Dataset:
        """A copy of this pipeline with ``seed=None`` replaced by seeds from ``entropy``.

        ``stages`` numbers the seedless ops in a fixed traversal order, so each
        gets its own seed, the same one in every process.
        """
        parents = tuple(parent._resolve_seeds(entropy, stages) for parent in self._parents)
        resolved = self
        if not all(a is b for a, b in zip(parents, self._parents)):
            resolved = self._with_parents(parents)
        if self._draws_seed():
            # The inputs' seeds first, then this op's: the stage order every process shares.
            resolved = copy.copy(resolved) if resolved is self else resolved
            resolved._set_drawn_seed(stage_seed(entropy, stages))
        return resolved

    def _draws_seed(self) -> bool:
        """Whether this op itself gets a seed per iterator (it was made with ``seed=None``)."""
        return False

    def _set_drawn_seed(self, seed: int) -> None:
        """Takes the seed drawn for this op (on a copy made by ``_resolve_seeds``)."""
        raise NotImplementedError(f"{self._op_name} draws no seed")

    @property
    def draws_seed(self) -> bool:
        """Whether iterators draw the seed of ops made with ``seed=None`` (shuffles, list_files).

        A fresh seed per iterator, so two iterators see different orders (once
        per dataset for ``reshuffle_each_iteration=False``). The seed drawn is
        saved in the iterator's state, so a restored iterator continues in the
        saved run's order whatever this process draws; ``dataset[i]`` is
        refused, since no order is fixed yet.
        """
        return bool(self._seedless_ops())

    def _keeps_order(self) -> bool:
        """Whether this ``seed=None`` op keeps one order for the dataset's life.

        As tf.data's ``reshuffle_each_iteration=False`` without a seed: every
        iterator of the dataset sees the same order.
        """
        return False

    def _seedless_ops(self) -> list[Dataset]:
        """The ops that draw their seed per iterator, in the order seeds are assigned."""
        found = [op for parent in self._parents for op in parent._seedless_ops()]
        if self._draws_seed():
            found.append(self)
        return found

    def _iterator_entropy(self) -> int | None:
        """The entropy a new iterator seeds the ``seed=None`` ops with (``None``: there are none).

        A fresh draw per iterator, unless every such op keeps its order for the
        dataset's life: then the first one's kept draw, so every iterator of
        this dataset (and of datasets built on it) sees the same order. The
        entropy is saved in the iterator's state, so a restore continues in the
        order of the saved run whatever this process drew.
        """
        from pipestate.data.iterator import draw_entropy

        ops = self._seedless_ops()
        if not ops:
            return None
        if not all(op._keeps_order() for op in ops):
            return draw_entropy()
        kept = ops[0]._kept_entropy
        if not kept:
            kept.append(draw_entropy())
        return kept[0]

    def _with_parents(self, parents: tuple[Dataset, ...]) -> Dataset:
        clone = copy.copy(self)
        clone._parents = parents
        clone._fingerprint_cache = clone._chain_cache = clone._external_cache = None
        clone._cardinality_cache = None
        return clone

    # ---------------------------------------------------------- introspection
    def options(self) -> Options:
        """The pipeline's options: its inputs', overridden by later ``with_options``."""
        from pipestate.data.options import Options

        merged = Options()
        for parent in self._parents:
            merged = merged.merge(parent.options())
        if self._own_options is not None:
            merged = merged.merge(self._own_options)
        return merged

    def with_options(self, options: Options) -> Dataset:
        """This dataset with ``options`` set (options set earlier and not in ``options`` stay).

        Options do not change the elements or the saved position: a state saved
        with one set of options restores into the pipeline with another.

        Raises:
          TypeError: ``options`` is not a :class:`pipestate.data.Options`.
        """
        from pipestate.data.options import Options

        if not isinstance(options, Options):
            raise TypeError(
                f"with_options expects pipestate.data.Options, got {type(options).__name__} "
                f"{brief(options, 80)}"
            )
        clone = copy.copy(self)
        own = self._own_options if self._own_options is not None else Options()
        clone._own_options = own.merge(options)
        return clone

    def cardinality(self) -> int:
        """The number of elements, or ``INFINITE_CARDINALITY`` / ``UNKNOWN_CARDINALITY``.

        Computed once per dataset (``_cardinality()``, the op's hook) and kept.
        """
        n = self._cardinality_cache
        if n is None:
            n = self._cardinality_cache = self._cardinality()
        return n

    def __len__(self) -> int:
        n = self.cardinality()
        if n == INFINITE_CARDINALITY:
            raise TypeError(f"The dataset is infinite: {self!r}")
        if n == UNKNOWN_CARDINALITY:
            raise TypeError(f"The dataset length is unknown: {self!r}")
        return n

    def __bool__(self) -> bool:
        return True

    def __getitem__(self, index: int) -> Element:
        """The element at ``index`` of a random-access dataset (negative counts from the end)."""
        if not self._random_access:
            raise TypeError(
                f"{self!r} does not support random access; iterate it instead "
                "(ops such as filter or shuffle(buffer_size) need the elements before them)."
            )
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(
                f"Dataset indices must be integers, got {type(index).__name__} {index!r}"
            )
        if self.draws_seed:
            raise ValueError(
                f"{self!r} has an op with seed=None, whose order is drawn per iterator; "
                "pass a seed to index it, or iterate it."
            )
        index = int(index)
        n = self.cardinality()
        if n == INFINITE_CARDINALITY:
            if index < 0:
                raise IndexError(f"negative index {index} into an infinite dataset {self!r}")
        else:
            if index < 0:
                index += n
            if not 0 <= index < n:
                raise IndexError(f"index {index} out of range for a dataset of length {n}")
        return self._get(0, index)

    def __iter__(self) -> DatasetIterator:
        return self._make_iterator(self._iterator_entropy())

    def _op_chain(self) -> list[tuple[str, str, str]]:
        """(name, settings digest, repr of the op alone) for every op, inputs first."""
        if self._chain_cache is None:
            chain: list[tuple[str, str, str]] = []
            for parent in self._parents:
                chain.extend(parent._op_chain())
            digest = _fingerprint.digest([self._op_name, self._params()])
            chain.append((self._op_name, digest, self._op_repr()))
            self._chain_cache = chain
        return self._chain_cache

    def _op_list(self) -> list[str]:
        """The ``"name:digest"`` list stored in iterator states (a fresh list)."""
        return [f"{name}:{digest}" for name, digest, _ in self._op_chain()]

    @property
    def fingerprint(self) -> str:
        """A digest of the whole pipeline definition, stored in iterator states."""
        if self._fingerprint_cache is None:
            self._fingerprint_cache = _fingerprint.digest([c[:2] for c in self._op_chain()])
        return self._fingerprint_cache

    def _op_repr(self) -> str:
        items = [f"{key}={value!r}" for key, value in self._params().items()]
        if self._name is not None:
            items.append(f"name={self._name!r}")
        return f"{self._op_name}({', '.join(items)})"

    @property
    def name(self) -> str | None:
        """The ``name=`` this op was given (shown in ``repr``, errors and profiles), or ``None``.

        A name labels the op only: it changes neither the elements nor the
        fingerprint, so a state saved before naming an op restores after.
        """
        return self._name

    def _named(self, name: str | None) -> Dataset:
        """This (freshly made) op with the ``name=`` its fluent method was given."""
        if name is None:
            return self
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise TypeError(
                f"{self._op_name}: name must be a non-empty string of at most 200 characters "
                f"(a label for the op), got {type(name).__name__} {brief(name, 80)}"
            )
        self._name = name
        return self

    def __repr__(self) -> str:
        if len(self._parents) == 1:
            return f"{self._parents[0]!r}.{self._op_repr()}"
        args = [repr(parent) for parent in self._parents]
        args += [f"{key}={value!r}" for key, value in self._params().items()]
        if self._name is not None:
            args.append(f"name={self._name!r}")
        return f"{self._op_name}({', '.join(args)})"

    # ---------------------------------------------------------------- sources
    @staticmethod
    def range(*args: int, dtype: Any = np.int64) -> Dataset:
        """Integers ``range(stop)`` or ``range(start, stop[, step])`` as int64 scalars.

        Raises:
          TypeError: for non-integer or missing/extra arguments.
          ValueError: for ``step == 0``.
        """
        from pipestate.data.ops.range import RangeDataset

        return RangeDataset(*args, dtype=dtype)

    @staticmethod
    def counter(start: int = 0, step: int = 1, dtype: Any = np.int64) -> Dataset:
        """Integers ``start, start + step, ...`` without end, as scalars of ``dtype``.

        Raises:
          TypeError: a non-integer ``start`` or ``step``, or a non-numeric ``dtype``.
          ValueError: ``start`` or ``step`` does not fit in int64.
        """
        from pipestate.data.ops.counter import CounterDataset

        return CounterDataset(start, step, dtype)

    @staticmethod
    def from_tensor_slices(tensors: Any) -> Dataset:
        """One element per row of ``tensors`` (an array, list, or nested tuple/dict of arrays)."""
        from pipestate.data.ops.from_tensor_slices import FromTensorSlicesDataset

        return FromTensorSlicesDataset(tensors)

    @staticmethod
    def from_tensors(tensors: Any) -> Dataset:
        """A dataset of exactly one element, ``tensors``."""
        from pipestate.data.ops.from_tensors import FromTensorsDataset

        return FromTensorsDataset(tensors)

    @staticmethod
    def from_generator(
        generator: Callable[..., Any], output_signature: Any = None, args: Any = None
    ) -> Dataset:
        """Elements of ``generator(*args)``, a callable returning an iterator.

        The generator's progress is external state: see ``docs/ops.md`` for
        what saving and restoring such a pipeline does.
        """
        from pipestate.data.ops.from_generator import FromGeneratorDataset

        return FromGeneratorDataset(generator, output_signature, args)

    @staticmethod
    def list_files(
        file_pattern: Any, shuffle: bool | None = None, seed: int | None = None
    ) -> Dataset:
        """The file names matching ``file_pattern`` (a glob, or a list of them), as bytes.

        Shuffled unless ``shuffle=False`` (the matches are sorted first), as tf.data.
        """
        from pipestate.data.ops.list_files import ListFilesDataset

        return ListFilesDataset(file_pattern, shuffle, seed)

    @staticmethod
    def zip(*datasets: Any) -> Dataset:
        """Elements of several datasets side by side, as tuples (or dicts) of elements.

        Accepts ``zip(a, b)``, ``zip((a, b))`` or ``zip({"x": a, "y": b})``; stops
        with the shortest input.
        """
        from pipestate.data.ops.zip import ZipDataset

        return ZipDataset(datasets[0] if len(datasets) == 1 else datasets)

    @staticmethod
    def from_source(source: Any, *, name: str | None = None) -> Dataset:
        """The items ``source[0] ... source[len(source) - 1]`` of a random-access data source.

        Anything with ``__len__`` and ``__getitem__`` (a torch map-style
        ``Dataset``, a ``datasets.Dataset``, Grain's data sources); an optional
        ``__getitems__(indices)`` reads several items at once. Random access:
        the iterator state is one index through ``global_shuffle``, ``map``,
        ``batch`` and ``shard``. See ``docs/sources.md``.

        Raises:
          TypeError: ``source`` lacks ``__len__`` or ``__getitem__``, or its
            length is not a non-negative integer.
        """
        from pipestate.data.ops.from_source import FromSourceDataset

        return FromSourceDataset(source)._named(name)

    @staticmethod
    def from_parquet(
        paths_or_glob: Any,
        columns: Sequence[str] | None = None,
        filesystem: Any = None,
        storage_options: dict[str, Any] | None = None,
        *,
        random_access: bool = True,
        cache_bytes: int | None = None,
        name: str | None = None,
    ) -> Dataset:
        """The rows of Parquet files (a path, a glob or a list), as dicts of column values.

        Random access by global row through a row-group index read from the
        footers (``random_access=False`` streams instead, its state the file,
        row group and row). ``cache_bytes`` bounds the decoded row groups kept
        per process (default 256 MiB). Needs pyarrow (``pipestate[parquet]``).
        See ``docs/sources.md``.

        Raises:
          TypeError / ValueError: a bad argument, or ``columns`` not in the files.
          NotFoundError: a missing file, or a glob that matches nothing.
          DataLossError: a file that is not readable Parquet.
        """
        from pipestate.data.ops.parquet import parquet_dataset

        return parquet_dataset(
            paths_or_glob, columns, filesystem, storage_options, random_access, cache_bytes
        )._named(name)

    @staticmethod
    def from_arrow(
        paths: Any,
        columns: Sequence[str] | None = None,
        *,
        storage_options: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> Dataset:
        """The rows of Arrow IPC files (file or stream format), memory-mapped when local.

        Needs pyarrow (``pipestate[parquet]``). See ``docs/sources.md``.

        Raises:
          TypeError / ValueError: a bad argument, ``columns`` not in the files, or
            files whose schemas differ.
          NotFoundError: a missing file, or a glob that matches nothing.
          DataLossError: a file that is not a readable Arrow IPC file.
        """
        from pipestate.data.ops.arrow import ArrowDataset

        return ArrowDataset(paths, columns, storage_options)._named(name)

    @staticmethod
    def from_hf(
        dataset_or_path: Any,
        columns: Sequence[str] | None = None,
        *,
        name: str | None = None,
    ) -> Dataset:
        """The rows of a Hugging Face ``datasets.Dataset`` (or a ``save_to_disk`` directory).

        Reads its Arrow table directly, without copying it. Needs ``datasets``
        (``pipestate[hf]``). See ``docs/sources.md``.

        Raises:
          TypeError: not a ``datasets.Dataset`` (a ``DatasetDict``: pick a split;
            an ``IterableDataset``: no random access), or a bad ``columns``.
          ValueError: ``columns`` the dataset does not have.
          NotFoundError: the path is not a ``save_to_disk`` directory.
        """
        from pipestate.data.ops.hf import HFDataset

        return HFDataset(dataset_or_path, columns)._named(name)

    @staticmethod
    def from_array_record(paths: Any, *, name: str | None = None) -> Dataset:
        """The records of ArrayRecord files, as ``np.bytes_``, by global index.

        Needs ``array-record`` (``pipestate[arrayrecord]``). See ``docs/sources.md``.

        Raises:
          TypeError / ValueError: ``paths`` is not a path or a non-empty list of them.
          NotFoundError: a file does not exist.
          DataLossError: a file is not a readable ArrayRecord file.
        """
        from pipestate.data.ops.array_record import ArrayRecordDataset

        return ArrayRecordDataset(paths)._named(name)

    # --------------------------------------------------------------------- ops
    def map(
        self,
        map_func: Callable[..., Any],
        num_parallel_calls: int | None = None,
        deterministic: bool | None = None,
        *,
        stateful: bool = False,
    ) -> Dataset:
        """Applies ``map_func`` to every element (a tuple is unpacked into its arguments).

        Args:
          map_func: a function of the element; pure unless ``stateful``.
          num_parallel_calls: run the function on this many threads
            (``pipestate.data.AUTOTUNE``: as many as the cores available);
            ``None`` runs it in the consumer's thread.
          deterministic: ``False`` lets parallel results arrive out of order.
          stateful: ``True`` if the function depends on state outside the
            element; the pipeline then has external state.
        """
        from pipestate.data.ops.map import MapDataset

        if num_parallel_calls is None:
            check_bool("deterministic", deterministic, op="map", allow_none=True)
            return MapDataset(self, map_func, stateful=stateful)
        from pipestate.data.ops.parallel_map import ParallelMapDataset

        return ParallelMapDataset(
            self, map_func, num_parallel_calls, deterministic, stateful=stateful
        )

    def filter(self, predicate: Callable[..., Any], *, stateful: bool = False) -> Dataset:
        """The elements for which ``predicate`` returns true (a scalar bool)."""
        from pipestate.data.ops.filter import FilterDataset

        return FilterDataset(self, predicate, stateful=stateful)

    def shuffle(
        self, buffer_size: int, seed: int | None = None, reshuffle_each_iteration: bool = True
    ) -> Dataset:
        """tf.data's buffer shuffle: a random element of a ``buffer_size`` buffer at a time.

        Use :meth:`global_shuffle` for a full permutation of a random-access dataset.
        """
        from pipestate.data.ops.shuffle import ShuffleDataset

        return ShuffleDataset(self, buffer_size, seed, reshuffle_each_iteration)

    def unbatch(self) -> Dataset:
        """Splits each element along its first axis into that many elements."""
        from pipestate.data.ops.unbatch import UnbatchDataset

        return UnbatchDataset(self)

    def padded_batch(
        self,
        batch_size: int,
        padded_shapes: Any = None,
        padding_values: Any = None,
        drop_remainder: bool = False,
    ) -> Dataset:
        """Batches elements of varying shapes, padding each leaf to a common shape."""
        from pipestate.data.ops.padded_batch import PaddedBatchDataset

        return PaddedBatchDataset(self, batch_size, padded_shapes, padding_values, drop_remainder)

    def interleave(
        self,
        map_func: Callable[..., Dataset],
        cycle_length: int | None = None,
        block_length: int = 1,
        *,
        stateful: bool = False,
    ) -> Dataset:
        """Maps elements to datasets and interleaves them, ``block_length`` at a time."""
        from pipestate.data.ops.interleave import InterleaveDataset

        return InterleaveDataset(self, map_func, cycle_length, block_length, stateful=stateful)

    def flat_map(self, map_func: Callable[..., Dataset], *, stateful: bool = False) -> Dataset:
        """Maps each element to a dataset and reads those datasets one after another."""
        from pipestate.data.ops.flat_map import FlatMapDataset

        return FlatMapDataset(self, map_func, stateful=stateful)

    def scan(
        self, initial_state: Any, scan_func: Callable[..., Any], *, stateful: bool = False
    ) -> Dataset:
        """Threads a state through the elements: ``scan_func(state, x) -> (state, output)``."""
        from pipestate.data.ops.scan import ScanDataset

        return ScanDataset(self, initial_state, scan_func, stateful=stateful)

    def take_while(self, predicate: Callable[..., Any], *, stateful: bool = False) -> Dataset:
        """The elements up to (not including) the first for which ``predicate`` is false.

        ``stateful=True`` marks a predicate that depends on state outside the
        element (the pipeline then has external state).
        """
        from pipestate.data.ops.take_while import TakeWhileDataset

        return TakeWhileDataset(self, predicate, stateful=stateful)

    def prefetch(self, buffer_size: int | None) -> Dataset:
        """Prepares up to ``buffer_size`` elements ahead on a background thread.

        ``pipestate.data.AUTOTUNE`` (or ``None``, as in tf.data) picks the size.
        Prefetched elements are never saved: ``get_state()`` describes what the
        consumer received.
        """
        from pipestate.data.ops.prefetch import PrefetchDataset

        return PrefetchDataset(self, buffer_size)

    def batch(self, batch_size: int, drop_remainder: bool = False) -> Dataset:
        """Stacks consecutive elements into batches; the last partial one is kept
        unless ``drop_remainder``."""
        from pipestate.data.ops.batch import BatchDataset

        return BatchDataset(self, batch_size, drop_remainder)

    def repeat(self, count: int | None = None) -> Dataset:
        """Repeats the dataset ``count`` times (``None`` or a negative count: forever)."""
        from pipestate.data.ops.repeat import RepeatDataset

        return RepeatDataset(self, count)

    def take(self, count: int) -> Dataset:
        """The first ``count`` elements (a negative count: all)."""
        from pipestate.data.ops.take import TakeDataset

        return TakeDataset(self, count)

    def skip(self, count: int) -> Dataset:
        """All but the first ``count`` elements (a negative count: skip all)."""
        from pipestate.data.ops.skip import SkipDataset

        return SkipDataset(self, count)

    def shard(self, num_shards: int, index: int) -> Dataset:
        """Every ``num_shards``-th element, starting at ``index``."""
        from pipestate.data.ops.shard import ShardDataset

        return ShardDataset(self, num_shards, index)

    def enumerate(self, start: int = 0) -> Dataset:
        """Pairs ``(counter, element)`` with an int64 counter from ``start``."""
        from pipestate.data.ops.enumerate import EnumerateDataset

        return EnumerateDataset(self, start)

    def concatenate(self, dataset: Dataset) -> Dataset:
        """The elements of this dataset, then those of ``dataset``."""
        from pipestate.data.ops.concatenate import ConcatenateDataset

        return ConcatenateDataset(self, dataset)

    def global_shuffle(
        self, seed: int | None = None, reshuffle_each_iteration: bool = True
    ) -> Dataset:
        """A pseudo-random permutation of the whole (random-access, finite) dataset.

        The permutation is computed per index in O(1) memory; the iterator state
        stays a single index. With ``reshuffle_each_iteration`` every pass of an
        enclosing ``repeat`` gets a different order. ``seed=None`` draws a seed
        per iterator and saves it in the iterator's state.
        """
        from pipestate.data.ops.global_shuffle import GlobalShuffleDataset

        return GlobalShuffleDataset(self, seed, reshuffle_each_iteration)

    def apply(self, transformation_func: Callable[[Dataset], Dataset]) -> Dataset:
        """``transformation_func(self)``, for chaining reusable transformations.

        Raises:
          TypeError: ``transformation_func`` is not callable or does not return a Dataset.
        """
        if not callable(transformation_func):
            raise TypeError(
                f"apply: transformation_func must be callable, got {brief(transformation_func, 80)}"
            )
        result = transformation_func(self)
        if not isinstance(result, Dataset):
            raise TypeError(
                f"apply: transformation_func must return a Dataset, got {type(result).__name__}"
            )
        return result

    def as_numpy_iterator(self) -> Iterator[Element]:
        """An iterator over the elements (they are NumPy values already)."""
        return iter(self)


_structure_module.NOT_DATA.append(Dataset)


def stage_seed(entropy: int, stages: Iterator[int]) -> int:
    """The 63-bit seed of the next ``seed=None`` op, from the iterator's drawn ``entropy``."""
    state = np.random.SeedSequence([entropy, next(stages)]).generate_state(1, np.uint64)
    return int(state[0]) >> 1


def check_dataset(name: str, value: Any, *, op: str) -> Dataset:
    """Validates a Dataset argument."""
    if not isinstance(value, Dataset):
        raise TypeError(
            f"{op}: {name} must be a pipestate Dataset, got {type(value).__name__}"
            f" {brief(value, 80)}"
        )
    return value
