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
    from pipestate.data._profile import ProfileReport
    from pipestate.data._remote import ReadOptions
    from pipestate.data.iterator import DatasetIterator, StreamIterator
    from pipestate.data.ops.group_by_reducer import Reducer
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
    _deterministic_default: bool | None = None
    """``Options.deterministic`` of the pipeline being iterated, for ops made with
    ``deterministic=None`` (set on the copy ``iter()`` makes when the option is ``False``)."""

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
        from pipestate.data import _terminal

        # While the public element_spec is being computed: the first element's spec.
        return _terminal.first_element_spec(self) if _terminal.reading_specs() else None

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
        dataset = self
        if self.options().deterministic is False:
            dataset = self._with_order(False)
        return dataset._make_iterator(self._iterator_entropy())

    def _out_of_order(self, deterministic: bool | None) -> bool:
        """Whether an op made with ``deterministic`` may deliver elements out of order
        (``None``: as the pipeline's ``Options.deterministic``; in order by default)."""
        if deterministic is None:
            deterministic = self._deterministic_default
        return deterministic is False

    def _with_order(self, deterministic: bool) -> Dataset:
        """A copy of this pipeline whose ops made with ``deterministic=None`` follow
        ``deterministic`` (the pipeline's ``Options.deterministic``)."""
        clone = self._with_parents(tuple(p._with_order(deterministic) for p in self._parents))
        clone._deterministic_default = deterministic
        return clone

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
    def range(*args: int, dtype: Any = np.int64, name: str | None = None) -> Dataset:
        """Integers ``range(stop)`` or ``range(start, stop[, step])`` as int64 scalars.

        Raises:
          TypeError: for non-integer or missing/extra arguments.
          ValueError: for ``step == 0``.
        """
        from pipestate.data.ops.range import RangeDataset

        return RangeDataset(*args, dtype=dtype)._named(name)

    @staticmethod
    def counter(
        start: int = 0, step: int = 1, dtype: Any = np.int64, name: str | None = None
    ) -> Dataset:
        """Integers ``start, start + step, ...`` without end, as scalars of ``dtype``.

        Raises:
          TypeError: a non-integer ``start`` or ``step``, or a non-numeric ``dtype``.
          ValueError: ``start`` or ``step`` does not fit in int64.
        """
        from pipestate.data.ops.counter import CounterDataset

        return CounterDataset(start, step, dtype)._named(name)

    @staticmethod
    def from_tensor_slices(tensors: Any, name: str | None = None) -> Dataset:
        """One element per row of ``tensors`` (an array, list, or nested tuple/dict of arrays)."""
        from pipestate.data.ops.from_tensor_slices import FromTensorSlicesDataset

        return FromTensorSlicesDataset(tensors)._named(name)

    @staticmethod
    def from_tensors(tensors: Any, name: str | None = None) -> Dataset:
        """A dataset of exactly one element, ``tensors``."""
        from pipestate.data.ops.from_tensors import FromTensorsDataset

        return FromTensorsDataset(tensors)._named(name)

    @staticmethod
    def from_generator(
        generator: Callable[..., Any],
        output_signature: Any = None,
        args: Any = None,
        name: str | None = None,
    ) -> Dataset:
        """Elements of ``generator(*args)``, a callable returning an iterator.

        The generator's progress is external state: see ``docs/ops.md`` for
        what saving and restoring such a pipeline does.
        """
        from pipestate.data.ops.from_generator import FromGeneratorDataset

        return FromGeneratorDataset(generator, output_signature, args)._named(name)

    @staticmethod
    def list_files(
        file_pattern: Any,
        shuffle: bool | None = None,
        seed: int | None = None,
        name: str | None = None,
    ) -> Dataset:
        """The file names matching ``file_pattern`` (a glob, or a list of them), as bytes.

        Shuffled unless ``shuffle=False`` (the matches are sorted first), as tf.data.
        """
        from pipestate.data.ops.list_files import ListFilesDataset

        return ListFilesDataset(file_pattern, shuffle, seed)._named(name)

    @staticmethod
    def zip(*datasets: Any, name: str | None = None) -> Dataset:
        """Elements of several datasets side by side, as tuples (or dicts) of elements.

        Accepts ``zip(a, b)``, ``zip((a, b))`` or ``zip({"x": a, "y": b})``; stops
        with the shortest input.
        """
        from pipestate.data.ops.zip import ZipDataset

        return ZipDataset(datasets[0] if len(datasets) == 1 else datasets)._named(name)

    @staticmethod
    def random(
        seed: int | None = None,
        rerandomize_each_iteration: bool | None = None,
        name: str | None = None,
    ) -> Dataset:
        """Pseudo-random int64 values in ``[0, 2**32)`` without end (tf.data's ``random``).

        Random access: value ``i`` is a function of ``(seed, epoch, i)``, so the
        state is one index. ``seed=None`` draws a seed per iterator and saves it
        in the state; ``rerandomize_each_iteration=True`` gives each pass of a
        ``repeat`` new values.

        Raises:
          TypeError: a non-integer ``seed`` or a non-bool ``rerandomize_each_iteration``.
          ValueError: ``seed`` does not fit in int64.
        """
        from pipestate.data.ops.random import RandomDataset

        return RandomDataset(seed, rerandomize_each_iteration)._named(name)

    @staticmethod
    def sample_from_datasets(
        datasets: Sequence[Dataset],
        weights: Sequence[float] | Callable[[int], Any] | None = None,
        seed: int | None = None,
        stop_on_empty_dataset: bool = False,
        rerandomize_each_iteration: bool | None = None,
        name: str | None = None,
    ) -> Dataset:
        """A weighted random mixture of ``datasets``, resumable at any output in O(1).

        Each block of 1024 outputs takes from each input a number of elements
        fixed by the weights, in an order shuffled per block by ``seed``; over
        random-access inputs the mixture is random access (its state one
        index). See ``docs/ops.md#sample_from_datasets``.

        Args:
          datasets: a non-empty list of datasets with elements of one structure.
          weights: one non-negative weight per dataset (``None``: uniform), or a
            schedule: a function of the output count returning the weights,
            read at the start of each block.
          seed: the order's seed; ``None`` draws one per iterator (saved in its state).
          stop_on_empty_dataset: end at the first selection of an exhausted
            input, instead of dropping it and renormalising the other weights.
          rerandomize_each_iteration: a new order in each pass of an enclosing
            ``repeat`` (``None``: ``False``).
          name: a label for the op (``repr``, errors).

        Raises:
          TypeError: bad datasets, incompatible elements, bad weights, seed or flags.
          ValueError: weights of the wrong length, negative, non-finite or all
            zero; a schedule over finite inputs without ``stop_on_empty_dataset``.
        """
        from pipestate.data.ops.sample_from_datasets import SampleFromDatasetsDataset

        return SampleFromDatasetsDataset(
            datasets, weights, seed, stop_on_empty_dataset, rerandomize_each_iteration
        )._named(name)

    @staticmethod
    def choose_from_datasets(
        datasets: Sequence[Dataset],
        choice_dataset: Dataset,
        stop_on_empty_dataset: bool = True,
        name: str | None = None,
    ) -> Dataset:
        """For each int64 choice ``c`` of ``choice_dataset``, the next element of ``datasets[c]``.

        As tf.data's; streaming, its state the choices' and each input's. See
        ``docs/ops.md#choose_from_datasets``.

        Args:
          datasets: a non-empty list of datasets with elements of one structure.
          choice_dataset: a dataset of int64 scalars in ``[0, len(datasets))``.
          stop_on_empty_dataset: end when a chosen input is exhausted (the
            default), or skip the choice (ending once every input is exhausted).
          name: a label for the op (``repr``, errors).

        Raises:
          TypeError: bad datasets, incompatible elements, or choices that are
            not int64 scalars.
          InvalidArgumentError: (when read) a choice out of range.
        """
        from pipestate.data.ops.choose_from_datasets import ChooseFromDatasetsDataset

        return ChooseFromDatasetsDataset(datasets, choice_dataset, stop_on_empty_dataset)._named(
            name
        )

    @staticmethod
    def load(
        path: Any,
        element_spec: Any = None,
        compression: str | None = None,
        reader_func: Callable[[Dataset], Dataset] | None = None,
    ) -> Dataset:
        """A dataset written by :meth:`save`: its elements in the order saved, random access.

        Args:
          path: the directory given to ``save`` (a local path or an fsspec URL).
          element_spec: the elements' ``TensorSpec`` structure; ``None`` uses the
            one saved. A given spec must match what was saved.
          compression: ``None`` uses what was saved; otherwise it must match it.
          reader_func: a function of the dataset of per-shard datasets (one
            element per shard ``shard_func`` made) returning the dataset to read,
            e.g. ``lambda shards: shards.interleave(lambda s: s, cycle_length=4)``.

        Raises:
          NotFoundError: no complete saved dataset at ``path`` (a save that did
            not finish has no manifest).
          DataLossError: a damaged or hostile manifest, index or data file.
          InvalidArgumentError: ``element_spec`` does not match the saved elements.
          TypeError: a bad ``path``, ``element_spec`` or ``reader_func``.
          ValueError: an unknown ``compression``, or one that differs from the saved.
        """
        from pipestate.data.ops.load import load

        return load(path, element_spec, compression, reader_func)

    @staticmethod
    def from_webdataset(
        urls: Any,
        shuffle_shards: bool = False,
        seed: int | None = None,
        storage_options: dict[str, Any] | None = None,
        *,
        read_options: Any = None,
        use_index: bool | str = "auto",
        name: str | None = None,
    ) -> Dataset:
        """The samples of WebDataset tar shards: dicts of field → ``np.bytes_`` plus
        ``__key__`` and ``__url__``, grouped as the ``webdataset`` package groups them.

        ``urls`` is a list of shard URLs, or one str in brace notation
        (``"shard-{000..099}.tar"``) or a glob. The state is the shard, the
        byte offset of its next member and the samples so far: a restore
        seeks there. With a shard index beside every shard
        (``write_webdataset_index``; ``use_index``), the dataset is random
        access and its state one index. See ``docs/sources.md`` and
        :class:`pipestate.data.ops.webdataset.WebDatasetDataset`.

        Raises:
          TypeError: an argument of the wrong type.
          ValueError: an empty list, unbalanced braces or a bad ``use_index``.
          NotFoundError: a glob matches nothing, or ``use_index=True`` and a
            shard has no index.
          DataLossError: a damaged or stale shard index.
        """
        from pipestate.data.ops.webdataset import WebDatasetDataset

        dataset = WebDatasetDataset(
            urls, shuffle_shards, seed, storage_options, read_options, use_index
        )
        return dataset._named(name)

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
        read_options: ReadOptions | None = None,
        name: str | None = None,
    ) -> Dataset:
        """The rows of Parquet files (a path, a glob or a list), as dicts of column values.

        Random access by global row through a row-group index read from the
        footers (``random_access=False`` streams instead, its state the file,
        row group and row). ``cache_bytes`` bounds the decoded row groups kept
        per process (default 256 MiB). Files not on the local disk are read
        in read-ahead blocks with retries of transient errors, as
        ``read_options`` (a ``ps.data.ReadOptions``) sets. Needs pyarrow
        (``pipestate[parquet]``). See ``docs/sources.md``.

        Raises:
          TypeError / ValueError: a bad argument, or ``columns`` not in the files.
          NotFoundError: a missing file, or a glob that matches nothing.
          DataLossError: a file that is not readable Parquet.
          UnavailableError: a remote file that kept failing with transient
            errors through every attempt.
        """
        from pipestate.data.ops.parquet import parquet_dataset

        return parquet_dataset(
            paths_or_glob,
            columns,
            filesystem,
            storage_options,
            random_access,
            cache_bytes,
            read_options,
        )._named(name)

    @staticmethod
    def from_arrow(
        paths: Any,
        columns: Sequence[str] | None = None,
        *,
        storage_options: dict[str, Any] | None = None,
        read_options: ReadOptions | None = None,
        name: str | None = None,
    ) -> Dataset:
        """The rows of Arrow IPC files (file or stream format), memory-mapped when local.

        Files on other filesystems are read whole, in read-ahead blocks with
        retries of transient errors, as ``read_options`` (a
        ``ps.data.ReadOptions``) sets. Needs pyarrow (``pipestate[parquet]``).
        See ``docs/sources.md``.

        Raises:
          TypeError / ValueError: a bad argument, ``columns`` not in the files, or
            files whose schemas differ.
          NotFoundError: a missing file, or a glob that matches nothing.
          DataLossError: a file that is not a readable Arrow IPC file.
          UnavailableError: a remote file that kept failing with transient
            errors through every attempt.
        """
        from pipestate.data.ops.arrow import ArrowDataset

        return ArrowDataset(paths, columns, storage_options, read_options)._named(name)

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
        name: str | None = None,
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
            return MapDataset(self, map_func, stateful=stateful)._named(name)
        from pipestate.data.ops.parallel_map import ParallelMapDataset

        return ParallelMapDataset(
            self, map_func, num_parallel_calls, deterministic, stateful=stateful
        )._named(name)

    def filter(
        self, predicate: Callable[..., Any], name: str | None = None, *, stateful: bool = False
    ) -> Dataset:
        """The elements for which ``predicate`` returns true (a scalar bool)."""
        from pipestate.data.ops.filter import FilterDataset

        return FilterDataset(self, predicate, stateful=stateful)._named(name)

    def shuffle(
        self,
        buffer_size: int,
        seed: int | None = None,
        reshuffle_each_iteration: bool = True,
        name: str | None = None,
    ) -> Dataset:
        """tf.data's buffer shuffle: a random element of a ``buffer_size`` buffer at a time.

        Use :meth:`global_shuffle` for a full permutation of a random-access dataset.
        """
        from pipestate.data.ops.shuffle import ShuffleDataset

        return ShuffleDataset(self, buffer_size, seed, reshuffle_each_iteration)._named(name)

    def unbatch(self, name: str | None = None) -> Dataset:
        """Splits each element along its first axis into that many elements."""
        from pipestate.data.ops.unbatch import UnbatchDataset

        return UnbatchDataset(self)._named(name)

    def padded_batch(
        self,
        batch_size: int,
        padded_shapes: Any = None,
        padding_values: Any = None,
        drop_remainder: bool = False,
        name: str | None = None,
    ) -> Dataset:
        """Batches elements of varying shapes, padding each leaf to a common shape."""
        from pipestate.data.ops.padded_batch import PaddedBatchDataset

        return PaddedBatchDataset(
            self, batch_size, padded_shapes, padding_values, drop_remainder
        )._named(name)

    def interleave(
        self,
        map_func: Callable[..., Dataset],
        cycle_length: int | None = None,
        block_length: int = 1,
        num_parallel_calls: int | None = None,
        deterministic: bool | None = None,
        name: str | None = None,
        *,
        stateful: bool = False,
    ) -> Dataset:
        """Maps elements to datasets and interleaves them, ``block_length`` at a time."""
        from pipestate.data.ops.interleave import InterleaveDataset

        return InterleaveDataset(
            self,
            map_func,
            cycle_length,
            block_length,
            num_parallel_calls,
            deterministic,
            stateful=stateful,
        )._named(name)

    def flat_map(
        self,
        map_func: Callable[..., Dataset],
        name: str | None = None,
        *,
        stateful: bool = False,
    ) -> Dataset:
        """Maps each element to a dataset and reads those datasets one after another."""
        from pipestate.data.ops.flat_map import FlatMapDataset

        return FlatMapDataset(self, map_func, stateful=stateful)._named(name)

    def scan(
        self,
        initial_state: Any,
        scan_func: Callable[..., Any],
        name: str | None = None,
        *,
        stateful: bool = False,
    ) -> Dataset:
        """Threads a state through the elements: ``scan_func(state, x) -> (state, output)``."""
        from pipestate.data.ops.scan import ScanDataset

        return ScanDataset(self, initial_state, scan_func, stateful=stateful)._named(name)

    def take_while(
        self, predicate: Callable[..., Any], name: str | None = None, *, stateful: bool = False
    ) -> Dataset:
        """The elements up to (not including) the first for which ``predicate`` is false.

        ``stateful=True`` marks a predicate that depends on state outside the
        element (the pipeline then has external state).
        """
        from pipestate.data.ops.take_while import TakeWhileDataset

        return TakeWhileDataset(self, predicate, stateful=stateful)._named(name)

    def prefetch(self, buffer_size: int | None, name: str | None = None) -> Dataset:
        """Prepares up to ``buffer_size`` elements ahead on a background thread.

        ``pipestate.data.AUTOTUNE`` (or ``None``, as in tf.data) picks the size.
        Prefetched elements are never saved: ``get_state()`` describes what the
        consumer received.
        """
        from pipestate.data.ops.prefetch import PrefetchDataset

        return PrefetchDataset(self, buffer_size)._named(name)

    def batch(
        self,
        batch_size: int,
        drop_remainder: bool = False,
        num_parallel_calls: int | None = None,
        deterministic: bool | None = None,
        name: str | None = None,
    ) -> Dataset:
        """Stacks consecutive elements into batches; the last partial one is kept
        unless ``drop_remainder``."""
        from pipestate.data.ops.batch import BatchDataset

        return BatchDataset(
            self, batch_size, drop_remainder, num_parallel_calls, deterministic
        )._named(name)

    def repeat(self, count: int | None = None, name: str | None = None) -> Dataset:
        """Repeats the dataset ``count`` times (``None`` or a negative count: forever)."""
        from pipestate.data.ops.repeat import RepeatDataset

        return RepeatDataset(self, count)._named(name)

    def take(self, count: int, name: str | None = None) -> Dataset:
        """The first ``count`` elements (a negative count: all)."""
        from pipestate.data.ops.take import TakeDataset

        return TakeDataset(self, count)._named(name)

    def skip(self, count: int, name: str | None = None) -> Dataset:
        """All but the first ``count`` elements (a negative count: skip all)."""
        from pipestate.data.ops.skip import SkipDataset

        return SkipDataset(self, count)._named(name)

    def shard(
        self, num_shards: int, index: int, even: str | None = None, name: str | None = None
    ) -> Dataset:
        """Every ``num_shards``-th element, starting at ``index``.

        ``even="pad"`` or ``"drop"`` gives every shard of a finite input the same
        count (``ceil(n / num_shards)``, repeating elements from the start, or
        ``n // num_shards``), as torch's ``DistributedSampler``.
        """
        from pipestate.data.ops.shard import ShardDataset

        return ShardDataset(self, num_shards, index, even)._named(name)

    def enumerate(self, start: int = 0, name: str | None = None) -> Dataset:
        """Pairs ``(counter, element)`` with an int64 counter from ``start``."""
        from pipestate.data.ops.enumerate import EnumerateDataset

        return EnumerateDataset(self, start)._named(name)

    def concatenate(self, dataset: Dataset, name: str | None = None) -> Dataset:
        """The elements of this dataset, then those of ``dataset``."""
        from pipestate.data.ops.concatenate import ConcatenateDataset

        return ConcatenateDataset(self, dataset)._named(name)

    def global_shuffle(
        self,
        seed: int | None = None,
        reshuffle_each_iteration: bool = True,
        name: str | None = None,
    ) -> Dataset:
        """A pseudo-random permutation of the whole (random-access, finite) dataset.

        The permutation is computed per index in O(1) memory; the iterator state
        stays a single index. With ``reshuffle_each_iteration`` every pass of an
        enclosing ``repeat`` gets a different order. ``seed=None`` draws a seed
        per iterator and saves it in the iterator's state.
        """
        from pipestate.data.ops.global_shuffle import GlobalShuffleDataset

        return GlobalShuffleDataset(self, seed, reshuffle_each_iteration)._named(name)

    def ignore_errors(self, log_warning: bool = False, name: str | None = None) -> Dataset:
        """The elements whose computation did not raise: **drops the failing ones**.

        The one op that loses elements on purpose, as tf.data's: an element
        whose computation below this op raised (a ``map`` function, a damaged
        record) is skipped. The number skipped is in the iterator state
        (``"count"``), and ``log_warning=True`` logs each with its error.

        Raises:
          TypeError: ``log_warning`` is not a bool.
        """
        from pipestate.data.ops.ignore_errors import IgnoreErrorsDataset

        return IgnoreErrorsDataset(self, log_warning)._named(name)

    def assert_cardinality(self, expected_cardinality: int, name: str | None = None) -> Dataset:
        """The elements, checked to number ``expected_cardinality``, which ``cardinality()``
        then reports.

        Raises:
          TypeError: a non-integer ``expected_cardinality``.
          ValueError: a negative one other than ``INFINITE_CARDINALITY``.
          FailedPreconditionError: (while iterating) the input ends early or runs long.
        """
        from pipestate.data.ops.assert_cardinality import AssertCardinalityDataset

        return AssertCardinalityDataset(self, expected_cardinality)._named(name)

    def reduce(
        self,
        initial_state: Any,
        reduce_func: Callable[[Any, Any], Any],
        name: str | None = None,
    ) -> Any:
        """Folds the elements into one value: ``state = reduce_func(state, element)``.

        Reads a fresh iterator to the end and returns the final state (NumPy
        values); an empty dataset returns ``initial_state`` as NumPy values.
        ``name`` labels the reduction in its error messages.

        Raises:
          TypeError: ``reduce_func`` is not callable, returns another structure
            than ``initial_state``, or changes a component's dtype.
          ValueError: the dataset is infinite.
        """
        from pipestate.data._terminal import reduce_dataset

        return reduce_dataset(self, initial_state, reduce_func, name)

    def get_single_element(self, name: str | None = None) -> Any:
        """The only element of a dataset of exactly one element.

        Raises:
          InvalidArgumentError: the dataset is empty ("Dataset was empty.") or
            has more than one element ("Dataset had more than one element.").
        """
        from pipestate.data._terminal import single_element

        return single_element(self, name)

    @property
    def element_spec(self) -> Any:
        """The elements' structure of :class:`TensorSpec`\\ s (shape, dtype), as tf.data's.

        Static where the ops know it (sources, ``batch``: the batch dimension
        with ``drop_remainder``, ``None`` without). Where a user function makes
        it unknown (``map``, ``scan``, ``from_generator`` without a
        signature ...), it is the spec of the first element, computed once per
        dataset by a separate iterator (the cost of one element; no iterator's
        position moves), with the first dimension left unknown (``None``) after
        ops that make it vary; ``None`` for an empty dataset.
        """
        from pipestate.data._terminal import element_spec

        return element_spec(self)

    def random_map(
        self,
        map_func: Callable[..., Any],
        seed: int | None = None,
        num_parallel_calls: int | None = None,
        deterministic: bool | None = None,
        name: str | None = None,
    ) -> Dataset:
        """Applies ``map_func(*element, rng)``, ``rng`` a NumPy ``Generator`` per element.

        The generator is derived from ``(seed, epoch, index)`` alone, so random
        augmentations are reproducible under any number of threads or loader
        workers and after any restore, and cost nothing to save: the pipeline
        stays random access where its input is. See ``docs/ops.md#random_map``.

        Args:
          map_func: a function of the element and, last, the generator; its
            randomness must come from the generator.
          seed: the generators' seed; ``None`` draws one per iterator (saved in its state).
          num_parallel_calls: threads over a random-access input, as for ``map``.
          deterministic: ``False`` lets parallel results arrive out of order.
          name: a label for the op (``repr``, errors).

        Raises:
          TypeError: ``map_func`` is not callable; a non-integer ``seed`` or
            ``num_parallel_calls``; a non-bool ``deterministic``.
          ValueError: ``num_parallel_calls < 1`` (other than ``AUTOTUNE``).
        """
        from pipestate.data.ops.random_map import RandomMapDataset

        return RandomMapDataset(self, map_func, seed, num_parallel_calls, deterministic)._named(
            name
        )

    def pack_sequences(
        self,
        row_length: int,
        method: str = "first_fit",
        num_open_rows: int = 8,
        length_key: str | None = None,
        padding_value: int = 0,
        drop_remainder: bool = False,
        name: str | None = None,
    ) -> Dataset:
        """Packs variable-length token sequences into rows of ``row_length`` tokens.

        Each output is a dict of the features padded to ``row_length`` (a
        plain array input's is ``"tokens"``), ``"segment_ids"`` and
        ``"positions"`` (int32), as T5 and Grain pack. See
        ``docs/ops.md#pack_sequences``.

        Args:
          row_length: tokens per row.
          method: ``"first_fit"`` (each sequence whole into the first of
            ``num_open_rows`` open rows with room) or ``"concat"`` (concatenate,
            then cut rows; sequences split across rows).
          num_open_rows: rows first fit keeps open (bounds the state).
          length_key: for dict elements, the feature whose length counts (the
            others must have the same length).
          padding_value: the features' padding.
          drop_remainder: with ``"concat"``, drop the last partial row.
          name: a label for the op (``repr``, errors).

        Raises:
          TypeError: non-integer sizes; elements known not to be 1-D integer
            sequences; a bad ``length_key`` or ``drop_remainder``.
          ValueError: ``row_length`` or ``num_open_rows`` below 1, an unknown
            ``method``, a missing ``length_key`` for dicts, ``drop_remainder``
            with first fit.
          InvalidArgumentError: (when read) an element that is not a 1-D
            integer sequence, or (first fit) one longer than a row.
        """
        from pipestate.data.ops.pack_sequences import PackSequencesDataset

        return PackSequencesDataset(
            self, row_length, method, num_open_rows, length_key, padding_value, drop_remainder
        )._named(name)

    def cache(self, filename: Any = "", name: str | None = None) -> Dataset:
        """The elements, stored by the first full pass and read from the store afterwards.

        ``filename=""`` keeps them in memory; otherwise in files with that
        prefix (a local path or an fsspec URL). A restored iterator continues
        from the store without recomputing what it holds (see ``docs/ops.md#cache``).

        Raises:
          TypeError: ``filename`` is not a str, bytes or ``os.PathLike``, or a bad ``name``.
        """
        from pipestate.data.ops.cache import CacheDataset

        return CacheDataset(self, filename)._named(name)

    def snapshot(
        self,
        path: Any,
        compression: str | None = "AUTO",
        reader_func: Callable[[Dataset], Dataset] | None = None,
        shard_func: Callable[..., Any] | None = None,
        name: str | None = None,
    ) -> Dataset:
        """The elements, written to ``path`` by the first run and read from there by later ones.

        The snapshot is kept per input fingerprint (``<path>/<fingerprint>/``);
        both the writing and the reading pass are resumable (see
        ``docs/ops.md#snapshot``).

        Raises:
          TypeError: a bad ``path``, ``name``, or a non-callable ``reader_func`` / ``shard_func``.
          ValueError: an unknown ``compression`` (``"AUTO"``, ``None``, ``""`` or ``"GZIP"``).
        """
        from pipestate.data.ops.snapshot import SnapshotDataset

        return SnapshotDataset(self, path, compression, reader_func, shard_func)._named(name)

    def window(
        self,
        size: int,
        shift: int | None = None,
        stride: int = 1,
        drop_remainder: bool = False,
        name: str | None = None,
    ) -> Dataset:
        """Windows of ``size`` elements, started every ``shift``, taken ``stride`` apart.

        Each window is a dataset (a tuple / dict of datasets for a tuple / dict
        element), as in tf.data: ``ds.window(3).flat_map(lambda w: w.batch(3))``.
        Random access over a random-access input. See docs/ops.md.

        Raises:
          TypeError / ValueError: invalid ``size``, ``shift``, ``stride`` or ``drop_remainder``.
        """
        from pipestate.data.ops.window import WindowDataset

        return WindowDataset(self, size, shift, stride, drop_remainder)._named(name)

    def group_by_window(
        self,
        key_func: Callable[..., Any],
        reduce_func: Callable[..., Dataset],
        window_size: int | None = None,
        window_size_func: Callable[..., Any] | None = None,
        name: str | None = None,
    ) -> Dataset:
        """Groups elements by ``key_func`` into windows, each reduced by ``reduce_func``.

        ``reduce_func(key, window_dataset)`` returns a dataset whose elements
        are output. Give exactly one of ``window_size`` and ``window_size_func``.
        See docs/ops.md.

        Raises:
          TypeError / ValueError: invalid functions or window size arguments.
        """
        from pipestate.data.ops.group_by_window import GroupByWindowDataset

        return GroupByWindowDataset(
            self, key_func, reduce_func, window_size, window_size_func
        )._named(name)

    def bucket_by_sequence_length(
        self,
        element_length_func: Callable[..., Any],
        bucket_boundaries: Sequence[int],
        bucket_batch_sizes: Sequence[int],
        padded_shapes: Any = None,
        padding_values: Any = None,
        pad_to_bucket_boundary: bool = False,
        no_padding: bool = False,
        drop_remainder: bool = False,
        name: str | None = None,
    ) -> Dataset:
        """Batches elements of similar length together (by ``element_length_func``), padded.

        Bucket ``i`` holds lengths in ``[boundaries[i - 1], boundaries[i])`` and
        is output as a batch of ``bucket_batch_sizes[i]`` elements. See docs/ops.md.

        Raises:
          TypeError / ValueError: invalid functions, boundaries, sizes or flags.
        """
        from pipestate.data.ops.bucket_by_sequence_length import BucketBySequenceLengthDataset

        return BucketBySequenceLengthDataset(
            self,
            element_length_func,
            bucket_boundaries,
            bucket_batch_sizes,
            padded_shapes,
            padding_values,
            pad_to_bucket_boundary,
            no_padding,
            drop_remainder,
        )._named(name)

    def group_by_reducer(
        self, key_func: Callable[..., Any], reducer: Reducer, name: str | None = None
    ) -> Dataset:
        """One element per key: the key's elements reduced by ``reducer`` (a :class:`Reducer`).

        Reads the whole (finite) input first; outputs keys in ascending order.
        See docs/ops.md.

        Raises:
          TypeError: ``key_func`` is not callable or ``reducer`` is not a Reducer.
        """
        from pipestate.data.ops.group_by_reducer import GroupByReducerDataset

        return GroupByReducerDataset(self, key_func, reducer)._named(name)

    def unique(self, name: str | None = None) -> Dataset:
        """Each distinct element once, in order of first appearance (integer or string elements).

        The iterator state holds the distinct elements seen so far. See docs/ops.md.

        Raises:
          TypeError: elements that are not one integer or string tensor.
        """
        from pipestate.data.ops.unique import UniqueDataset

        return UniqueDataset(self)._named(name)

    def rebatch(
        self,
        batch_size: int | Sequence[int],
        drop_remainder: bool = False,
        name: str | None = None,
    ) -> Dataset:
        """The rows of this batched dataset, cut into batches of ``batch_size`` (or of a list
        of sizes used in turn). See docs/ops.md.

        Raises:
          TypeError / ValueError: invalid ``batch_size`` or ``drop_remainder``.
        """
        from pipestate.data.ops.rebatch import RebatchDataset

        return RebatchDataset(self, batch_size, drop_remainder)._named(name)

    def ragged_batch(
        self,
        batch_size: int,
        drop_remainder: bool = False,
        row_splits_dtype: Any = np.int64,
        name: str | None = None,
    ) -> Dataset:
        """Batches elements whose first axis varies without padding, as
        :class:`pipestate.data.RaggedBatch` values (``values`` and ``row_splits``).

        Scalars and components of a known fixed shape are stacked. See docs/ops.md.

        Raises:
          TypeError / ValueError: invalid ``batch_size``, ``drop_remainder`` or
            ``row_splits_dtype``.
        """
        from pipestate.data.ops.ragged_batch import RaggedBatchDataset

        return RaggedBatchDataset(self, batch_size, drop_remainder, row_splits_dtype)._named(name)

    def index_flat_map(
        self,
        map_func: Callable[..., Any],
        index_map_func: Callable[..., Any],
        output_cardinality: int | None = None,
        name: str | None = None,
    ) -> Dataset:
        """A ``flat_map`` that keeps random access: output ``i`` is row ``offset`` of
        ``map_func(input[element_index])``, where ``(element_index, offset) =
        index_map_func(i)``. Random access with ``output_cardinality`` over a
        random-access input. See docs/ops.md.

        Raises:
          TypeError / ValueError: invalid functions or ``output_cardinality``.
        """
        from pipestate.data.ops.index_flat_map import IndexFlatMapDataset

        return IndexFlatMapDataset(self, map_func, index_map_func, output_cardinality)._named(name)

    def rejection_resample(
        self,
        class_func: Callable[..., Any],
        target_dist: Any,
        initial_dist: Any = None,
        seed: int | None = None,
        name: str | None = None,
    ) -> Dataset:
        """``(class, element)`` pairs resampled so that classes follow ``target_dist``.

        As tf.data's: a mix of the input and the input filtered by class.
        ``seed=None`` draws a seed per iterator (saved in its state). See docs/ops.md.

        Raises:
          TypeError / ValueError: invalid ``class_func``, distributions or ``seed``.
        """
        from pipestate.data.ops.rejection_resample import RejectionResampleDataset

        return RejectionResampleDataset(self, class_func, target_dist, initial_dist, seed)._named(
            name
        )

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

    def save(
        self,
        path: Any,
        compression: str | None = None,
        shard_func: Callable[..., Any] | None = None,
        checkpoint_args: dict[str, Any] | None = None,
    ) -> None:
        """Writes the elements to the directory ``path``, for :meth:`load`.

        The directory gets a data file of checksummed records, an index and,
        last, ``manifest.json``: a save that does not finish leaves no loadable
        dataset. A save into a directory holding an earlier one replaces it.

        Args:
          path: a directory (a local path or an fsspec URL).
          compression: ``None`` or ``"GZIP"`` (each record compressed alone,
            so the saved dataset stays random access).
          shard_func: maps an element (a tuple unpacked) to a scalar integer
            shard; ``load``'s ``reader_func`` gets one dataset per shard.
          checkpoint_args: ``{"checkpoint_interval": N, "directory": d}`` (both
            optional) records the progress every ``N`` elements (default 1, as
            tf.data) in ``d`` (default ``path``); a save of the same pipeline
            into the same directory after a crash continues from the last record.

        Raises:
          TypeError: a bad ``path``, ``shard_func`` or ``checkpoint_args``, an
            element that can't be stored, or a ``shard_func`` result that is
            not a scalar integer.
          ValueError: an unknown ``compression``, a ``checkpoint_interval`` below
            1, or an infinite dataset.
        """
        from pipestate.data._save import save

        save(self, path, compression, shard_func, checkpoint_args)

    def as_numpy_iterator(self) -> Iterator[Element]:
        """An iterator over the elements (they are NumPy values already)."""
        return iter(self)

    def profile(
        self,
        num_elements: int | None = 1000,
        consume: Callable[[Any], Any] | None = None,
        *,
        sampling: bool = True,
    ) -> ProfileReport:
        """Reads ``num_elements`` elements through an instrumented copy and profiles every op.

        See :func:`pipestate.data.profiled` to profile your own loop, and
        ``docs/tools.md`` for reading the report. Pipelines not profiled pay nothing.

        Args:
          num_elements: elements to read (``None``: to the end).
          consume: called on each element, standing in for the training step.
          sampling: time a sample of the calls of ops cheaper per call than timing
            them (their times estimated, marked ``~``); ``False`` times every call.

        Returns:
          A ``ProfileReport``: per-op self and total time, stage rates, threads,
          the consumer's waits, the bottleneck and a suggestion.

        Raises:
          TypeError, ValueError: a bad ``num_elements``, a non-callable ``consume`` or a
            non-bool ``sampling``.

        Example:
          >>> print(ds.profile(num_elements=500))  # doctest: +SKIP
        """
        from pipestate.data._profile import profile

        return profile(self, num_elements, consume, sampling=sampling)


_structure_module.NOT_DATA.append(Dataset)


def stage_seed(entropy: int, stages: Iterator[int]) -> int:
    """The 63-bit seed of the next ``seed=None`` op, from the iterator's drawn ``entropy``."""
    return derived_seed(entropy, next(stages))


def derived_seed(*keys: int) -> int:
    """A 63-bit seed derived from ``keys`` (each >= 0) by NumPy's ``SeedSequence``."""
    state = np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)
    return int(state[0]) >> 1


def check_dataset(name: str, value: Any, *, op: str) -> Dataset:
    """Validates a Dataset argument."""
    if not isinstance(value, Dataset):
        raise TypeError(
            f"{op}: {name} must be a pipestate Dataset, got {type(value).__name__}"
            f" {brief(value, 80)}"
        )
    return value
