"""Torch state in object-graph checkpoints: tensors in their own dtypes, shared storage, devices.

Imported by the checkpoint core only when torch objects are met, so the core
never imports torch itself.

* Tensors are stored as themselves: every dtype safetensors has (``BF16``,
  ``F16``, ``F8_E4M3``, ``F8_E5M2``, ...) keeps its bytes, and comes back as a
  tensor of that dtype, bit for bit.
* Tensors that share storage (tied weights, views) are stored once: a tensor
  covering its whole storage is written as itself, any other tensor of that
  storage as a view of it (or of the storage's bytes, written once); after a
  restore they share storage again.
* A tensor comes back on the device it was saved from; where that device is
  missing, :func:`map_location` names another.
* ``torch.Generator`` objects save ``get_state()`` as bytes; modules,
  optimizers, LR schedulers and ``GradScaler`` save their ``state_dict()``.
"""

from __future__ import annotations

import contextlib
import contextvars
import warnings
import weakref
from collections.abc import Callable, Collection, Iterator, Mapping, MutableMapping
from typing import Any, TypeAlias

import numpy as np
import torch

from pipestate.checkpoint._adapters import STATE, StatefulAdapter
from pipestate.checkpoint._safetensors import NATIVE_CARRIERS, numpy_dtype
from pipestate.checkpoint._trackable import Trackable
from pipestate.checkpoint._values import Value
from pipestate.errors import CheckpointMismatchError, CorruptCheckpointError

__all__ = [
    "TensorDecoder",
    "TensorEncoder",
    "TorchGeneratorAdapter",
    "TorchStateAdapter",
    "adapt_torch",
    "map_location",
    "tensor_from_bytes",
]

Location: TypeAlias = "str | torch.device | Mapping[str, str | torch.device] | None"

# Torch dtypes NumPy lacks, by safetensors code, with the torch dtype of their carrier.
_NATIVE: dict[torch.dtype, tuple[str, torch.dtype]] = {
    torch.bfloat16: ("BF16", torch.int16),
    torch.float8_e4m3fn: ("F8_E4M3", torch.uint8),
    torch.float8_e5m2: ("F8_E5M2", torch.uint8),
    torch.float8_e4m3fnuz: ("F8_E4M3FNUZ", torch.uint8),
    torch.float8_e5m2fnuz: ("F8_E5M2FNUZ", torch.uint8),
    torch.float8_e8m0fnu: ("F8_E8M0", torch.uint8),
}
_FROM_CODE = {code: dtype for dtype, (code, _) in _NATIVE.items()}
# Torch dtypes NumPy holds as themselves.
_NUMPY_NATIVE = frozenset(
    {
        torch.bool,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.uint16,
        torch.int32,
        torch.uint32,
        torch.int64,
        torch.uint64,
        torch.float16,
        torch.float32,
        torch.float64,
        torch.complex64,
        torch.complex128,
    }
)
_DTYPE_NAMES = {str(d).removeprefix("torch."): d for d in (*_NATIVE, *_NUMPY_NATIVE)}
_VIEW_FIELDS = frozenset({"dtype", "offset", "shape", "stride"})
_BODY_FIELDS = frozenset({"of", "device"}) | _VIEW_FIELDS

_MAP_LOCATION: contextvars.ContextVar[Location] = contextvars.ContextVar(
    "pipestate_map_location", default=None
)


@contextlib.contextmanager
def map_location(location: Location) -> Iterator[None]:
    """Restore torch tensors onto ``location`` instead of the devices they were saved from.

    Without it, a tensor saved from ``cuda:1`` is restored onto ``cuda:1``,
    and restoring it where that device is missing raises
    :class:`~pipestate.errors.CheckpointMismatchError`. Modules and optimizers
    copy restored values onto their own parameters' devices either way.

    Args:
        location: A device (``"cpu"``, ``torch.device("cuda:0")``) for every
            tensor, or a mapping from saved device names (``"cuda:1"``) to
            devices; saved devices it does not name are kept.

    Example:
        >>> with map_location("cpu"):  # doctest: +SKIP
        ...     ckpt.restore(path)
    """
    if not isinstance(location, (str, torch.device, Mapping)):
        raise TypeError(
            f"map_location takes a device or a mapping of device names, got {location!r:.100}"
        )
    token = _MAP_LOCATION.set(location)
    try:
        yield
    finally:
        _MAP_LOCATION.reset(token)


def _target_device(saved: str, where: str) -> torch.device:
    location = _MAP_LOCATION.get()
    if isinstance(location, Mapping):
        location = location.get(saved, saved)
    if location is not None:
        return torch.device(location)
    try:
        device = torch.device(saved)
    except (RuntimeError, TypeError):
        raise CorruptCheckpointError(f"{where}: bad device {saved!r:.60}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise CheckpointMismatchError(
                f"{where} was saved from {saved}, but this process has {count} CUDA device(s); "
                "restore it inside `with pipestate.torch.map_location('cpu'):` (or name another "
                "device)"
            )
    return device


def storage_dtype_code(dtype: torch.dtype) -> str:
    """The name a torch dtype has in view bodies (``"bfloat16"``)."""
    return str(dtype).removeprefix("torch.")


# -- saving --------------------------------------------------------------------

AddRaw: TypeAlias = Callable[[str, np.ndarray, "str | None"], str]


def _carrier(tensor: torch.Tensor) -> tuple[np.ndarray, str | None]:
    """A NumPy array sharing ``tensor``'s bytes (contiguous, CPU) and its safetensors code."""
    native = _NATIVE.get(tensor.dtype)
    if native is not None:
        code, carrier = native
        array: np.ndarray = tensor.view(carrier).numpy()
        return array.view(NATIVE_CARRIERS[code]), code
    return tensor.numpy(), None


def _check_saveable(tensor: torch.Tensor, key: str) -> None:
    if tensor.layout != torch.strided:
        raise TypeError(
            f"cannot save the tensor at {key!r}: layout {tensor.layout} is not supported; "
            "convert it with .to_dense()"
        )
    if tensor.is_quantized or tensor.is_nested or tensor.device.type == "meta":
        raise TypeError(
            f"cannot save the tensor at {key!r}: quantized, nested and meta tensors have no "
            "plain bytes to save; dequantize or materialize it first"
        )
    if type(tensor) not in (torch.Tensor, torch.nn.Parameter):
        raise TypeError(
            f"cannot save the tensor at {key!r}: tensor subclass {type(tensor).__name__} is not "
            "supported (DTensor is); save a plain tensor"
        )
    if tensor.dtype not in _NATIVE and tensor.dtype not in _NUMPY_NATIVE:
        raise TypeError(
            f"cannot save the tensor at {key!r}: dtype {tensor.dtype} has no safetensors type; "
            "convert it to a supported dtype first"
        )


class TensorEncoder:
    """Turns torch tensors into ``"torch"`` value bodies, writing each storage's bytes once.

    Args:
        add_raw: ``add_raw(key, carrier, code) -> unique key`` adds the bytes to
            write: a NumPy array and the safetensors code of the dtype it
            carries (``None`` when the array's own dtype is the tensor's).
    """

    def __init__(self, add_raw: AddRaw) -> None:
        self._add_raw = add_raw
        # (device, storage address, storage bytes) -> (key, tensor written as that key).
        self._storages: dict[tuple[str, int, int], tuple[str, torch.Tensor]] = {}
        # The tensors seen stay alive until the save is over: a freed storage's
        # address may be reused by the next tensor, which must not match it.
        self._seen: list[torch.Tensor] = []

    def __repr__(self) -> str:
        return f"TensorEncoder(storages={len(self._storages)})"

    def __call__(self, key: str, tensor: torch.Tensor) -> Any:
        _check_saveable(tensor, key)
        tensor = tensor.detach()
        if tensor.is_conj() or tensor.is_neg():
            # A lazily conjugated or negated view: its storage holds other values.
            tensor = tensor.resolve_conj().resolve_neg()
        self._seen.append(tensor)
        storage = tensor.untyped_storage()
        device = str(tensor.device)
        nbytes = storage.nbytes()
        ident = (device, storage.data_ptr(), nbytes)
        known = self._storages.get(ident) if nbytes else None
        if known is None:
            whole = (
                tensor.is_contiguous()
                and tensor.storage_offset() == 0
                and tensor.numel() * tensor.element_size() == nbytes
            )
            base = tensor if whole else self._storage_tensor(tensor)
            written = self._write(key, base)
            if nbytes:
                self._storages[ident] = (written, base)
            known = (written, base)
        written, base = known
        body: dict[str, Any] = {"of": written}
        if not _same_layout(tensor, base):
            body.update(
                dtype=storage_dtype_code(tensor.dtype),
                offset=tensor.storage_offset(),
                shape=list(tensor.shape),
                stride=list(tensor.stride()),
            )
        if tensor.device.type != "cpu":
            body["device"] = device
        return written if set(body) == {"of"} else body

    @staticmethod
    def _storage_tensor(tensor: torch.Tensor) -> torch.Tensor:
        """The whole storage of ``tensor`` as a 1-D tensor (of its dtype where the size allows)."""
        storage = tensor.untyped_storage()
        size = tensor.element_size()
        dtype = tensor.dtype if storage.nbytes() % size == 0 else torch.uint8
        count = storage.nbytes() // (size if dtype == tensor.dtype else 1)
        return torch.empty(0, dtype=dtype, device=tensor.device).set_(storage, 0, (count,), (1,))

    def _write(self, key: str, tensor: torch.Tensor) -> str:
        cpu = tensor.cpu() if tensor.device.type != "cpu" else tensor
        array, code = _carrier(cpu.contiguous())
        return self._add_raw(key, array, code)


def _same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and a.stride() == b.stride()
        and a.storage_offset() == b.storage_offset()
    )


# -- restoring -----------------------------------------------------------------

ReadRaw: TypeAlias = Callable[[str], "tuple[np.ndarray, str | None]"]


class TensorDecoder:
    """Turns ``"torch"`` value bodies back into tensors; tensors of one storage share it again.

    Args:
        read_raw: ``read_raw(key) -> (carrier, code)``, the checked bytes of a
            tensor as written by :class:`TensorEncoder`.
        bases: The tensors read so far by ``(key, device)``; a
            ``WeakValueDictionary`` (the default: a new one), so that they stay
            shared while some restored value holds them, and no longer.
    """

    def __init__(self, read_raw: ReadRaw, bases: MutableMapping[Any, Any] | None = None) -> None:
        self._read_raw = read_raw
        self._bases: MutableMapping[Any, Any] = (
            bases if bases is not None else weakref.WeakValueDictionary()
        )

    def __repr__(self) -> str:
        return f"TensorDecoder(live={len(self._bases)})"

    def __call__(self, body: Any) -> torch.Tensor:
        if isinstance(body, str):
            return self._base(body, "cpu")
        where = "a torch value in the checkpoint index"
        if not (isinstance(body, dict) and set(body) <= _BODY_FIELDS and "of" in body):
            raise CorruptCheckpointError(f"{where} is malformed: {body!r:.100}")
        key, device = body["of"], body.get("device", "cpu")
        if not isinstance(key, str) or not isinstance(device, str):
            raise CorruptCheckpointError(f"{where} is malformed: {body!r:.100}")
        base = self._base(key, device)
        view = set(body) & _VIEW_FIELDS
        if not view:
            return base
        if view != _VIEW_FIELDS:
            raise CorruptCheckpointError(f"{where} has an incomplete view: {body!r:.100}")
        return _view(base, body, f"tensor {key!r:.200}")

    def _base(self, key: str, device: str) -> torch.Tensor:
        tensor = self._bases.get((key, device))
        if tensor is None:
            target = _target_device(device, f"tensor {key!r:.200}")
            tensor = _tensor_from_raw(*self._read_raw(key), key)
            if target.type != "cpu":
                tensor = tensor.to(target)
            self._bases[(key, device)] = tensor
        return tensor


def _tensor_from_raw(array: np.ndarray, code: str | None, key: str) -> torch.Tensor:
    with warnings.catch_warnings():
        # A memory-mapped (read-only) array is fine: its readers copy it.
        warnings.simplefilter("ignore", UserWarning)
        try:
            tensor = torch.from_numpy(array)
        except TypeError as err:
            raise CorruptCheckpointError(
                f"tensor {key!r:.200} has dtype {array.dtype}, which torch cannot hold: {err}"
            ) from None
    return tensor.view(_FROM_CODE[code]) if code is not None else tensor


def _view(base: torch.Tensor, body: dict[str, Any], where: str) -> torch.Tensor:
    dtype = _DTYPE_NAMES.get(body["dtype"]) if isinstance(body["dtype"], str) else None
    offset, shape, stride = body["offset"], body["shape"], body["stride"]
    if (
        dtype is None
        or not _ints(shape, 0)
        or not _ints(stride, 0)
        or len(shape) != len(stride)
        or not _ints([offset], 0)
    ):
        raise CorruptCheckpointError(f"{where}: malformed view {body!r:.200}")
    storage = base.untyped_storage()
    itemsize = torch.empty(0, dtype=dtype).element_size()
    extent = offset + sum((n - 1) * s for n, s in zip(shape, stride)) + 1
    if any(n == 0 for n in shape):
        extent = 0
    if extent * itemsize > storage.nbytes():
        raise CorruptCheckpointError(
            f"{where}: view {body!r:.200} reaches past the {storage.nbytes()} bytes it views"
        )
    out = torch.empty(0, dtype=dtype, device=base.device)
    return out.set_(storage, offset, tuple(shape), tuple(stride))


def _ints(values: object, low: int) -> bool:
    return (
        isinstance(values, list)
        and len(values) <= 64
        and all(type(v) is int and low <= v < 2**62 for v in values)
    )


# -- adapters ------------------------------------------------------------------


class TorchStateAdapter(StatefulAdapter):
    """A torch module, optimizer, LR scheduler or ``GradScaler``: its ``state_dict()`` entries.

    Tensors are saved in their own dtype and restored as torch tensors; a
    module copies restored values into its parameters (so tied parameters
    stay tied), which lets it read them straight from a memory map.
    """

    def __init__(self, obj: Any) -> None:
        super().__init__(obj)
        # load_state_dict copies into the module's own tensors.
        self._copies_restored_values = isinstance(obj, torch.nn.Module)

    def _wants_torch(self) -> bool:
        return True

    def _restore_template(self) -> Mapping[str, Value]:
        state = self._serialize_to_values()
        if isinstance(self.wrapped, torch.optim.Optimizer):
            # Optimizer state not created yet is sharded as its parameter is.
            from pipestate.torch._dtensor import optimizer_template

            return dict(optimizer_template(self.wrapped, state))
        return state

    def __repr__(self) -> str:
        return f"TorchStateAdapter({type(self.wrapped).__name__})"


class TorchGeneratorAdapter(Trackable):
    """A ``torch.Generator``: ``get_state()`` as uint8 bytes, and its device."""

    # Each rank of a distributed job has its own stream: saved per rank.
    _pipestate_per_rank = True

    def __init__(self, generator: torch.Generator) -> None:
        self.wrapped = generator

    def _checkpoint_kind(self) -> str:
        return f"torch.Generator({self.wrapped.device.type})"

    def _serialize_to_values(self) -> Mapping[str, Value]:
        state = self.wrapped.get_state().numpy().copy()
        return {STATE: {"device": self.wrapped.device.type, "state": state}}

    def _value_names(self) -> Collection[str]:
        return (STATE,)

    def _restore_from_values(self, values: Mapping[str, Value]) -> None:
        saved = values[STATE]
        kind = self.wrapped.device.type
        if not (isinstance(saved, dict) and set(saved) == {"device", "state"}):
            raise CheckpointMismatchError(
                f"saved torch.Generator state is malformed: {saved!r:.100}"
            )
        if saved["device"] != kind:
            raise CheckpointMismatchError(
                f"cannot restore a {kind} torch.Generator from the state of a "
                f"{saved['device']!r:.20} one; create the generator on that device"
            )
        state = saved["state"]
        if not (isinstance(state, np.ndarray) and state.dtype == np.uint8 and state.ndim == 1):
            raise CheckpointMismatchError(
                f"saved torch.Generator state must be a 1-D uint8 array, got {state!r:.100}"
            )
        try:
            self.wrapped.set_state(torch.from_numpy(np.array(state, copy=True)))
        except RuntimeError as err:
            raise CheckpointMismatchError(
                f"saved {kind} torch.Generator state does not fit this generator: {err}"
            ) from err

    def __repr__(self) -> str:
        return f"TorchGeneratorAdapter({self.wrapped.device})"


def adapt_torch(obj: object) -> Trackable | None:
    """The trackable for a torch object (generator, or Stateful torch object), or ``None``."""
    if isinstance(obj, torch.Generator):
        return TorchGeneratorAdapter(obj)
    if callable(getattr(obj, "state_dict", None)) and callable(
        getattr(obj, "load_state_dict", None)
    ):
        return TorchStateAdapter(obj)
    return None


def tensor_from_bytes(data: bytes, code: str, shape: tuple[int, ...], name: str) -> torch.Tensor:
    """A writable tensor of safetensors type ``code`` from its bytes (a flat file's tensor).

    Raises:
        CheckpointMismatchError: For a safetensors type torch has no dtype for.
    """
    carrier = NATIVE_CARRIERS.get(code)
    if carrier is None:
        carrier = numpy_dtype(code)
        code_or_none = None
    else:
        code_or_none = code
    if carrier is None:
        raise CheckpointMismatchError(
            f"tensor {name!r:.200} has safetensors dtype {code}, which torch cannot hold"
        )
    array = np.frombuffer(bytearray(data), dtype=carrier).reshape(shape)
    return _tensor_from_raw(array, code_or_none, name)
