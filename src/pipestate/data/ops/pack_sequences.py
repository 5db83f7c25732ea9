"""``pack_sequences``: variable-length token sequences packed into fixed-length rows."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipestate._validate import brief, check_bool, check_int
from pipestate.data._spec import TensorSpec
from pipestate.data.dataset import UNKNOWN_CARDINALITY, Dataset
from pipestate.data.iterator import StreamIterator, read_bool, state_array
from pipestate.errors import InvalidArgumentError, StateMismatchError

_OP = "pack_sequences"
FIRST_FIT = "first_fit"
CONCAT = "concat"
TOKENS = "tokens"
SEGMENT_IDS = "segment_ids"
POSITIONS = "positions"
_MAX_ROWS = 4096


class _PackIterator(StreamIterator["PackSequencesDataset"]):
    """Packs the input's sequences; state: the open rows (pieces' lengths per row, and their
    tokens per feature), whether the input ended, and the input's state.

    Each ``next`` reads until a row is complete, so nothing is pending besides
    the open rows: at most ``num_open_rows`` rows (first fit), or the current
    row and the rest of the sequence that overflowed it (concat).
    """

    _ROWS = "rows"
    _BUFFER = "buffer"
    _FEATURES = "features"
    _DTYPE = "dtype"
    _ENDED = "ended"
    _STATE_KEYS = (_ROWS, _BUFFER, _FEATURES, _DTYPE, _ENDED, StreamIterator._PARENT)

    def _start(self) -> None:
        super()._start()
        self._rows: list[list[np.ndarray]] = []  # each piece: a (features, length) int array
        self._fill: list[int] = []  # tokens in each open row
        self._ended = False
        # The features' names and dtype: the input's element spec's, or the first element's.
        self._keys: tuple[str, ...] | None = self._source._keys
        self._dtype: np.dtype[Any] | None = self._source._dtype

    # -------------------------------------------------------------- reading
    def _next(self) -> Any:
        source = self._source
        while not self._ended:
            if source._method == CONCAT:
                ready = self._concat_row()
                if ready is not None:
                    return source._emit(ready, self._keys or (TOKENS,))
            try:
                element = self._inputs[0]._next()
            except StopIteration:
                self._ended = True
                break
            piece = self._features(element)
            if piece.shape[1] == 0:
                continue  # an empty sequence has no tokens to pack
            row = self._first_fit(piece) if source._method == FIRST_FIT else self._concat(piece)
            if row is not None:
                return source._emit(row, self._keys or (TOKENS,))
        if source._method == CONCAT:
            ready = self._concat_row()
            if ready is not None:
                return source._emit(ready, self._keys or (TOKENS,))
        if not self._rows or (source._drop_remainder and source._method == CONCAT):
            self._rows, self._fill = [], []
            raise StopIteration
        self._fill.pop(0)
        return source._emit(self._rows.pop(0), self._keys or (TOKENS,))

    def _features(self, element: Any) -> np.ndarray:
        """An element as a ``(features, length)`` array, checked."""
        source = self._source
        if source._length_key is None and not isinstance(element, (dict, tuple)):
            keys: tuple[str, ...] = (TOKENS,)
            leaves = [element]
        elif isinstance(element, dict) and source._length_key in element:
            keys = tuple(sorted(element))
            leaves = [element[key] for key in keys]
        else:
            keys, leaves = (), []
        if not leaves or (self._keys is not None and keys != self._keys):
            expected = (
                "1-D integer arrays"
                if source._length_key is None
                else f"dicts of 1-D integer arrays with the key {source._length_key!r}"
                + (f" (keys {list(self._keys)})" if self._keys else "")
            )
            raise InvalidArgumentError(
                f"{source._op_repr()}: elements must be {expected}, got {brief(element, 80)}"
            )
        arrays = [np.asarray(leaf) for leaf in leaves]
        first = arrays[keys.index(source._length_key)] if source._length_key else arrays[0]
        for key, array in zip(keys, arrays):
            if (
                array.ndim != 1
                or array.dtype.kind not in "iu"
                or array.shape != first.shape
                or (self._dtype is not None and array.dtype != self._dtype)
            ):
                raise InvalidArgumentError(
                    f"{source._op_repr()}: feature {key!r} must be a 1-D integer array"
                    f"{'' if self._dtype is None else ' of ' + str(self._dtype)} of the "
                    f"sequence's length, got {array.dtype}{list(array.shape)} (length key: "
                    f"{first.dtype}{list(first.shape)})"
                )
        if self._keys is None:
            clash = {SEGMENT_IDS, POSITIONS} & set(keys)
            if clash:
                raise InvalidArgumentError(
                    f"{source._op_repr()}: the input's features {sorted(clash)} clash with the "
                    "outputs; rename them first (map)"
                )
            source._check_padding(arrays[0].dtype, InvalidArgumentError)
            self._keys, self._dtype = keys, arrays[0].dtype
        return arrays[0].reshape(1, -1) if len(arrays) == 1 else np.stack(arrays)

    def _first_fit(self, piece: np.ndarray) -> list[np.ndarray] | None:
        source = self._source
        size = piece.shape[1]
        if size > source._row_length:
            raise InvalidArgumentError(
                f"{source._op_repr()}: a sequence of {size} tokens does not fit in a row of "
                f"{source._row_length}; truncate sequences first (map), or use method='concat', "
                "which splits them across rows"
            )
        fill = self._fill
        for k, used in enumerate(fill):
            if used + size <= source._row_length:
                self._rows[k].append(piece)
                fill[k] = used + size
                break
        else:
            k = len(fill)
            self._rows.append([piece])
            fill.append(size)
        if fill[k] == source._row_length:  # only the row that took the piece can be full
            fill.pop(k)
            return self._rows.pop(k)
        if len(fill) > source._num_open_rows:
            fill.pop(0)
            return self._rows.pop(0)  # the oldest row goes, to keep the open rows bounded
        return None

    def _concat(self, piece: np.ndarray) -> list[np.ndarray] | None:
        if not self._rows:
            self._rows.append([])
            self._fill.append(0)
        self._rows[0].append(piece)
        self._fill[0] += piece.shape[1]
        return self._concat_row()

    def _concat_row(self) -> list[np.ndarray] | None:
        """The first row of the pending tokens, if they fill one (a long sequence fills several)."""
        length = self._source._row_length
        if not self._rows or self._fill[0] < length:
            return None
        row: list[np.ndarray] = []
        rest: list[np.ndarray] = []
        used = 0
        for p in self._rows[0]:
            take = max(0, min(p.shape[1], length - used))
            if take:
                row.append(p[:, :take])
            if take < p.shape[1]:
                rest.append(p[:, take:])
            used += take
        left = self._fill[0] - length
        self._rows, self._fill = ([rest], [left]) if rest else ([], [])
        return row

    # ---------------------------------------------------------------- state
    def _op_state(self) -> dict[str, Any]:
        pieces = [p for row in self._rows for p in row]
        keys = self._keys or ()
        buffer = (
            np.concatenate(pieces, axis=1)
            if pieces
            else np.zeros((len(keys), 0), self._dtype or np.int64)
        )
        return {
            self._ROWS: [[int(p.shape[1]) for p in row] for row in self._rows],
            self._BUFFER: buffer,
            self._FEATURES: list(keys),
            self._DTYPE: None if self._dtype is None else str(self._dtype),
            self._ENDED: self._ended,
            self._PARENT: self._inputs[0]._get_state(),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        op = self._op
        source = self._source
        rows = state[self._ROWS]
        limit = source._num_open_rows if source._method == FIRST_FIT else 1
        if (
            not isinstance(rows, list)
            or len(rows) > limit
            or not all(
                isinstance(row, list)
                and len(row) <= _MAX_ROWS
                and all(type(n) is int and n > 0 for n in row)
                for row in rows
            )
        ):
            raise StateMismatchError(
                f"{op}: state['rows'] must be a list of at most {limit} lists of positive "
                f"piece lengths, got {brief(rows, 120)}"
            )
        features = state[self._FEATURES]
        if (
            not isinstance(features, list)
            or not all(isinstance(k, str) for k in features)
            or (source._keys is not None and tuple(features) not in (source._keys, ()))
            or (source._length_key is None and features not in ([], [TOKENS]))
            or (source._length_key is not None and features and source._length_key not in features)
        ):
            raise StateMismatchError(
                f"{op}: state['features'] must list this pipeline's features, got "
                f"{brief(features, 120)}"
            )
        buffer = state_array(state[self._BUFFER], f"{op}: state['buffer']")
        total = sum(sum(row) for row in rows)
        if buffer.shape != (len(features), total) or (buffer.dtype.kind not in "iu" and total):
            raise StateMismatchError(
                f"{op}: state['buffer'] must be an integer array of shape "
                f"{[len(features), total]}, got {buffer.dtype}{list(buffer.shape)}"
            )
        if rows and not features:
            raise StateMismatchError(f"{op}: state['rows'] holds rows but no features")
        dtype = state[self._DTYPE]
        try:
            saved_dtype = None if dtype is None else np.dtype(dtype)
        except TypeError:
            saved_dtype = None
        if (dtype is None) != (not features) or (
            dtype is not None
            and (
                not isinstance(dtype, str)
                or saved_dtype is None
                or saved_dtype.kind not in "iu"
                or (source._dtype is not None and saved_dtype != source._dtype)
            )
        ):
            raise StateMismatchError(
                f"{op}: state['dtype'] must name the tokens' integer dtype (None before the "
                f"first element), got {brief(dtype, 80)}"
            )
        if source._method == FIRST_FIT and any(sum(row) > source._row_length for row in rows):
            raise StateMismatchError(f"{op}: state['rows'] holds a row over the row length")
        ended = read_bool(state, self._ENDED, op)
        super()._restore({self._PARENT: state[self._PARENT]})
        if features and saved_dtype is not None:
            source._check_padding(saved_dtype, StateMismatchError)
            self._keys, self._dtype = tuple(features), saved_dtype
            buffer = buffer.astype(saved_dtype, copy=False)
        restored: list[list[np.ndarray]] = []
        at = 0
        for row in rows:
            restored.append([])
            for n in row:
                restored[-1].append(buffer[:, at : at + n])
                at += n
        self._rows, self._ended = restored, ended
        self._fill = [sum(row) for row in rows]


class PackSequencesDataset(Dataset):
    """Rows of ``row_length`` tokens packed from variable-length sequences, with segment ids
    and positions (as T5 and Grain pack).

    Each element is a 1-D integer array, or a dict of them of one length per
    element (``length_key`` names the feature whose length counts; the
    others must match it). Each output is a dict: the features padded with
    ``padding_value`` (a plain array input's feature is ``"tokens"``), and
    ``"segment_ids"`` (1, 2, ... per sequence in the row, 0 for padding) and
    ``"positions"`` (0, 1, ... within each sequence's piece, 0 for padding),
    both int32.

    ``method="first_fit"`` puts each sequence whole into the first of at most
    ``num_open_rows`` open rows with room for it; a row is emitted when it is
    full, or, the oldest first, when a sequence fits in no open row and all
    are open; at the input's end the rest are emitted in order. A sequence
    longer than a row is an error. ``method="concat"`` concatenates the
    sequences and cuts rows of ``row_length`` tokens, splitting sequences
    across rows (the pieces' positions restart in each row); the last, partial
    row is kept (padded) unless ``drop_remainder``. Empty sequences are skipped.

    The state is the input's plus the open rows' tokens: at most
    ``num_open_rows * row_length`` (first fit), or one row plus the rest of
    the longest sequence (concat).

    Raises:
      TypeError: non-integer sizes; a non-string method or length_key; a
        non-bool ``drop_remainder``.
      ValueError: ``row_length < 1``, ``num_open_rows < 1``, an unknown method,
        or ``drop_remainder`` with first fit.
      InvalidArgumentError: (when read) an element that is not 1-D integer
        sequences, or (first fit) a sequence longer than a row.
    """

    _op_name = _OP
    _keeps_random_access = False
    _iterator_class = _PackIterator

    def __init__(
        self,
        parent: Dataset,
        row_length: int,
        method: str = FIRST_FIT,
        num_open_rows: int = 8,
        length_key: str | None = None,
        padding_value: int = 0,
        drop_remainder: bool = False,
    ) -> None:
        super().__init__([parent])
        self._row_length = check_int("row_length", row_length, minimum=1, op=_OP)
        if method not in (FIRST_FIT, CONCAT):
            raise ValueError(
                f"{_OP}: method must be {FIRST_FIT!r} or {CONCAT!r}, got {brief(method, 80)}"
            )
        self._method = method
        self._num_open_rows = check_int("num_open_rows", num_open_rows, minimum=1, op=_OP)
        if self._num_open_rows > _MAX_ROWS:
            raise ValueError(
                f"{_OP}: num_open_rows must be at most {_MAX_ROWS}, got {self._num_open_rows}"
            )
        self._padding = check_int("padding_value", padding_value, op=_OP)
        self._drop_remainder = bool(check_bool("drop_remainder", drop_remainder, op=_OP))
        if self._drop_remainder and method == FIRST_FIT:
            raise ValueError(
                f"{_OP}: drop_remainder applies to method='concat' only; first fit emits "
                "every row it opened"
            )
        spec = parent._element_spec()
        self._keys, self._dtype, self._length_key = _layout(spec, length_key)
        if self._dtype is not None:
            self._check_padding(self._dtype, ValueError)

    def _cardinality(self) -> int:
        return 0 if self._parents[0].cardinality() == 0 else UNKNOWN_CARDINALITY

    def _check_padding(self, dtype: np.dtype[Any], error: type[Exception]) -> None:
        """Raises ``error`` if ``padding_value`` does not fit the tokens' dtype."""
        info = np.iinfo(dtype)
        if not info.min <= self._padding <= info.max:
            raise error(
                f"{self._op_repr()}: padding_value={self._padding} does not fit the tokens' "
                f"dtype {dtype} [{info.min}, {info.max}]; pass a padding value in that range"
            )

    def _params(self) -> dict[str, Any]:
        return {
            "row_length": self._row_length,
            "method": self._method,
            "num_open_rows": self._num_open_rows,
            "length_key": self._length_key,
            "padding_value": self._padding,
            "drop_remainder": self._drop_remainder,
        }

    def _element_spec(self) -> Any:
        if self._keys is None or self._dtype is None:
            return None
        spec = {key: TensorSpec((self._row_length,), self._dtype) for key in self._keys}
        spec[SEGMENT_IDS] = TensorSpec((self._row_length,), np.dtype(np.int32))
        spec[POSITIONS] = TensorSpec((self._row_length,), np.dtype(np.int32))
        return spec

    def _emit(self, row: list[np.ndarray], keys: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The output of a row's pieces: features padded, segment ids and positions."""
        length = self._row_length
        tokens = np.full((len(keys), length), self._padding, row[0].dtype)
        segments = np.zeros(length, np.int32)
        positions = np.zeros(length, np.int32)
        at = 0
        for number, piece in enumerate(row, start=1):
            n = piece.shape[1]
            tokens[:, at : at + n] = piece
            segments[at : at + n] = number
            positions[at : at + n] = np.arange(n, dtype=np.int32)
            at += n
        out = {key: tokens[i] for i, key in enumerate(keys)}
        out[SEGMENT_IDS] = segments
        out[POSITIONS] = positions
        return out


def _layout(
    spec: Any, length_key: Any
) -> tuple[tuple[str, ...] | None, np.dtype[Any] | None, str | None]:
    """The feature keys, the token dtype and the length key, from the input's element spec."""
    if length_key is not None and not isinstance(length_key, str):
        raise TypeError(f"{_OP}: length_key must be a str or None, got {brief(length_key, 80)}")
    if isinstance(spec, dict):
        keys = tuple(sorted(spec))
        if length_key is None or length_key not in spec:
            raise ValueError(
                f"{_OP}: elements are dicts with keys {list(keys)}; pass length_key= naming "
                f"the feature whose length counts, got length_key={length_key!r}"
            )
        clash = {SEGMENT_IDS, POSITIONS} & set(keys)
        if clash:
            raise ValueError(
                f"{_OP}: the input's features {sorted(clash)} clash with the outputs "
                f"{SEGMENT_IDS!r} and {POSITIONS!r}; rename them first (map)"
            )
        dtypes = {spec[key].dtype for key in keys if isinstance(spec[key], TensorSpec)}
        bad = [
            k for k in keys if not isinstance(spec[k], TensorSpec) or spec[k].dtype.kind not in "iu"
        ]
        if bad or len(dtypes) != 1:
            raise TypeError(
                f"{_OP}: every feature must be a 1-D integer array of one dtype, got {spec}"
            )
        return keys, dtypes.pop(), length_key
    if isinstance(spec, TensorSpec):
        if spec.dtype.kind not in "iu" or (spec.shape is not None and len(spec.shape) != 1):
            raise TypeError(
                f"{_OP}: elements must be 1-D integer arrays (token sequences), got {spec}"
            )
        if length_key is not None:
            raise ValueError(
                f"{_OP}: length_key={length_key!r} applies to dict elements; these are arrays"
            )
        return (TOKENS,), spec.dtype, None
    if spec is None:  # unknown until read (a map's output): checked element by element
        return None, None, length_key
    raise TypeError(f"{_OP}: elements must be 1-D integer arrays or dicts of them, got {spec}")
