"""Whether a lone background thread pays: computing in the consumer's thread or on the thread."""

from __future__ import annotations


class ModeChooser:
    """Chooses between computing chunks in the consumer's thread and on a lone thread.

    A lone background thread (a ``prefetch``, or a map on one thread) pays only
    when the consumer has work of its own that runs while the thread computes
    (a training step that releases the GIL); otherwise hand-offs and the fight
    for the GIL make it slower than computing inline. So both are measured:
    windows of ``WINDOW_SECONDS`` of the consumer's wall time, inline and on
    the thread, are compared by elements delivered per second (the first chunk
    after a start or a switch left out: it carries start-up costs, a shuffle
    buffer's filling); the thread stays only if it is ``GAIN`` times faster,
    and the other mode is tried again every ``REPROBE`` windows. It starts inline.
    """

    WINDOW_SECONDS = 0.05
    WINDOW_CHUNKS = 3
    GAIN = 1.1
    REPROBE = 16
    OVERLAP = 0.2  # share of the consumer's own time below which a thread is not tried

    def __init__(self) -> None:
        self.inline = True
        self._start: float | None = None
        self._settle = 1  # chunks to let pass before a window starts: start-up costs
        self._elements = 0
        self._chunks = 0
        self._probing = False
        self._windows = 0  # windows since the last probe of the other mode
        self._reprobe = 1  # the first probe comes after one window
        self._rate = 0.0  # elements per second in the mode kept
        self._own = 0.0  # inline: the consumer's own time, this window
        self._span = 0.0  # inline: the window's time, measured alongside

    def note_inline(self, own: float, span: float) -> None:
        """Inline: ``span`` seconds passed, ``own`` of them outside the pipeline's work."""
        self._own += own
        self._span += span

    def count(self, elements: int) -> None:
        """Records a chunk of ``elements`` delivered."""
        self._elements += elements
        self._chunks += 1

    def switch_due(self, now: float) -> bool:
        """At a chunk boundary: closes a window when due; ``True`` (and toggles) to switch."""
        if self._start is None:
            if self._settle:  # the first chunk after a switch carries the thread's start-up
                self._settle -= 1
                return False
            self._start, self._elements, self._chunks = now, 0, 0
            return False
        elapsed = now - self._start
        if elapsed < self.WINDOW_SECONDS or self._chunks < self.WINDOW_CHUNKS:
            return False
        rate = self._elements / elapsed
        self._start, self._elements, self._chunks = now, 0, 0
        switch = False
        if self._probing:
            self._probing = False
            self._windows = 0
            self._reprobe = self.REPROBE
            # The thread must clearly win; inline wins ties (it costs no extra CPU).
            better = (
                rate > self.GAIN * self._rate if not self.inline else rate * self.GAIN >= self._rate
            )
            if better:
                self._rate = rate
            else:
                switch = True
        else:
            self._rate = rate
            self._windows += 1
            # A thread can only overlap the consumer's own work: with little of it
            # (an idle loop), trying one would only cost.
            worth = not self.inline or self._own > self.OVERLAP * self._span
            if self._windows >= self._reprobe and worth:
                self._probing = True
                switch = True
        self._own = self._span = 0.0
        if switch:
            self._start, self._settle = None, 1
            self.inline = not self.inline
        return switch
