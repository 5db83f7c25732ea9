"""Progress of long work: a tqdm bar when tqdm is installed, else a plain line on stderr.

Every long operation of pipestate (saving or reading a large checkpoint,
``pipestate verify``, the pipeline verifier) reports through :class:`Progress`.
Library calls keep it off unless asked (``progress=True``); the ``pipestate``
command turns it on when stderr is a terminal (``--progress`` /
``--no-progress`` decide explicitly).

Adopting it in new work takes three lines::

    with Progress(total=nbytes, description="caching", unit="B", enabled=progress) as bar:
        for chunk in chunks:
            ...
            bar.update(len(chunk))

``update`` is thread-safe and costs a lock and an addition when the display
is off; the display is refreshed at most every ``interval`` seconds.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

from pipestate._validate import check_bool

__all__ = ["Progress", "format_bytes"]


def format_bytes(n: float) -> str:
    """``n`` bytes for people: ``512 B``, ``1.5 MiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _tqdm_class() -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


class Progress:
    """A progress display for one long operation; a no-op unless ``enabled``.

    Args:
      total: the amount of work (bytes, elements, break points), or ``None`` when unknown.
      description: what is being done, shown first (``"saving ckpt-3"``).
      unit: ``"B"`` shows byte sizes and bytes/s; anything else counts items.
      enabled: show the display at all; library calls pass ``progress=``.
      stream: where to write (default ``sys.stderr``).
      use_tqdm: use tqdm when it is installed (``False`` forces the plain line).
      interval: the fewest seconds between two refreshes of the plain line.

    Raises:
      TypeError: a non-bool flag, or a ``total`` that is not a number.
      ValueError: a negative ``total``.

    Example:
      >>> with Progress(total=3, description="checking", enabled=False) as bar:
      ...     bar.update(3)
      >>> bar.count
      3
    """

    def __init__(
        self,
        total: float | None,
        description: str,
        *,
        unit: str = "it",
        enabled: bool = True,
        stream: TextIO | None = None,
        use_tqdm: bool = True,
        interval: float = 0.5,
    ) -> None:
        enabled = bool(check_bool("enabled", enabled, op="Progress"))
        use_tqdm = bool(check_bool("use_tqdm", use_tqdm, op="Progress"))
        if total is not None:
            if isinstance(total, bool) or not isinstance(total, (int, float)):
                raise TypeError(f"Progress: total must be a number or None, got {total!r}")
            if total < 0:
                raise ValueError(f"Progress: total must be >= 0, got total={total}")
        self.total = total
        self.description = description
        self.unit = unit
        self.count: float = 0
        self._lock = threading.Lock()
        self._stream = stream if stream is not None else sys.stderr
        self._interval = interval
        self._started = time.perf_counter()
        self._shown = self._started
        self._closed = False
        self._bar: Any = None
        self._plain = False
        if not enabled:
            return
        tqdm = _tqdm_class() if use_tqdm else None
        if tqdm is not None:
            self._bar = tqdm(
                total=total,
                desc=description,
                unit=unit,
                unit_scale=unit == "B",
                unit_divisor=1024 if unit == "B" else 1000,
                file=self._stream,
                leave=True,
                dynamic_ncols=True,
            )
        else:
            self._plain = True

    @property
    def enabled(self) -> bool:
        """Whether anything is displayed."""
        return self._bar is not None or self._plain

    def update(self, amount: float = 1) -> None:
        """Counts ``amount`` more units of work done (thread-safe)."""
        with self._lock:
            self.count += amount
            if self._bar is not None:
                self._bar.update(amount)
            elif self._plain:
                now = time.perf_counter()
                if now - self._shown >= self._interval:
                    self._shown = now
                    self._write_line(final=False)

    def set_total(self, total: float | None) -> None:
        """Sets the amount of work once it is known."""
        with self._lock:
            self.total = total
            if self._bar is not None:
                self._bar.total = total
                self._bar.refresh()

    def note(self, text: str) -> None:
        """Shows ``text`` after the counts (the current item, a result so far)."""
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def _amount(self, value: float) -> str:
        return format_bytes(value) if self.unit == "B" else f"{value:g}"

    def _write_line(self, *, final: bool) -> None:
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        done = self._amount(self.count)
        if self.total:
            text = f"{done}/{self._amount(self.total)} ({100 * self.count / self.total:.0f}%)"
        else:
            text = done if self.unit == "B" else f"{done} {self.unit}"
        rate = self.count / elapsed
        speed = f"{format_bytes(rate)}/s" if self.unit == "B" else f"{rate:.1f} {self.unit}/s"
        end = "\n" if final or not self._stream.isatty() else "\r"
        self._stream.write(f"{self.description}: {text}, {elapsed:.1f} s, {speed}{end}")
        self._stream.flush()

    def close(self) -> None:
        """Ends the display (a final line with the totals); further calls do nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._bar is not None:
                self._bar.close()
            elif self._plain:
                self._write_line(final=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        shown = "tqdm" if self._bar is not None else "line" if self._plain else "off"
        return (
            f"Progress({self.description!r}, {self.count}/{self.total} {self.unit}, "
            f"display={shown})"
        )
