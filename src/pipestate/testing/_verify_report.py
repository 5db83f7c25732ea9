"""The pipeline verifier's report: break points, the first divergence, what was found."""

from __future__ import annotations

import dataclasses
import statistics

from pipestate._progress import format_bytes

__all__ = ["BreakPoint", "Divergence", "VerifyReport"]


@dataclasses.dataclass
class BreakPoint:
    """One restore: at ``position`` (elements consumed before the save), under ``setting``.

    ``elements`` counts the elements read after the restore that matched the
    reference; ``restore_seconds`` is the time of ``Checkpoint.read`` into a
    fresh iterator; ``error`` is the traceback when the restore or a read raised.
    """

    position: int
    reason: str
    setting: str
    process: int
    elements: int = 0
    restore_seconds: float = 0.0
    diverged: bool = False
    error: str | None = None


@dataclasses.dataclass
class Divergence:
    """The first element a resumed run got wrong, and what the verifier can tell about why."""

    position: int
    """The break point: elements consumed before the save."""
    reason: str
    """Why that break point was chosen (``"start"``, ``"at a repeat boundary"``, ...)."""
    setting: str
    """How the resumed run read (``iter(dataset)`` or a ``Loader``'s settings)."""
    element: int
    """Index (in the reference run) of the first element that differs."""
    expected: str
    """The reference element (dtype, shape and value)."""
    actual: str
    """What the resumed run produced instead (or ``"end of data"``)."""
    op: str | None
    """The op whose saved state differs from the reference's at that element, if one does."""
    explanation: str
    """What the difference means and what to do about it."""


@dataclasses.dataclass
class VerifyReport:
    """What :func:`verify` found. ``holds`` is true when every resumed run equals the reference.

    Attributes:
      target: the ``module:function`` (or file) verified.
      pipeline: the dataset's ``repr``.
      elements: elements of the reference run (``num_elements``, or fewer if it ended).
      ended: whether the reference reached the end of the data.
      break_points: every restore, in order of position.
      divergence: the first element a resumed run got wrong (``None`` if none).
      findings: external state found (global RNG use, state that survives between runs).
      declared_external_state: ops declared with external state (``stateful=True``,
        ``from_generator``); their positions are saved, their inner state is not.
      state_bytes: bytes on disk of each break point's checkpoint (index and data).
      save_seconds: time of each ``Checkpoint.write`` of the iterator.
      notes: settings that were skipped, and why.
      fresh_processes: how many checking processes ran (0 when in-process).
    """

    target: str
    pipeline: str
    elements: int
    ended: bool
    break_points: list[BreakPoint]
    divergence: Divergence | None
    findings: list[str]
    declared_external_state: list[str]
    state_bytes: list[int]
    save_seconds: list[float]
    notes: list[str]
    fresh_processes: int

    @property
    def holds(self) -> bool:
        """Whether the pipeline resumes exactly: no divergence, error or external state found."""
        return (
            self.divergence is None
            and not self.findings
            and not any(bp.error for bp in self.break_points)
        )

    def __bool__(self) -> bool:
        return self.holds

    def __str__(self) -> str:
        return self.format()

    def format(self) -> str:
        """The report as text, as ``pipestate verify-pipeline`` prints it."""
        pipeline = self.pipeline if len(self.pipeline) <= 200 else self.pipeline[:197] + "..."
        lines = [f"pipeline {self.target}: {pipeline}"]
        end = "the end of the data" if self.ended else "not the end (raise num_elements for it)"
        lines.append(f"  reference: {self.elements} elements, {end}")
        restores = [bp.restore_seconds for bp in self.break_points if not bp.error]
        if self.state_bytes:
            lines.append(
                f"  state: {format_bytes(min(self.state_bytes))} to "
                f"{format_bytes(max(self.state_bytes))} per checkpoint; save "
                f"{_ms(statistics.median(self.save_seconds))}, restore "
                f"{_ms(statistics.median(restores)) if restores else '-'} (medians)"
            )
        settings = sorted({bp.setting for bp in self.break_points})
        where = (
            f"{self.fresh_processes} fresh process{'es' if self.fresh_processes != 1 else ''}"
            if self.fresh_processes
            else "this process (in-process mode)"
        )
        lines.append(
            f"  break points: {len({bp.position for bp in self.break_points})} positions x "
            f"{len(settings)} setting(s) ({', '.join(settings)}), restored in {where}"
        )
        by_position: dict[int, list[BreakPoint]] = {}
        for bp in self.break_points:
            by_position.setdefault(bp.position, []).append(bp)
        for position, group in by_position.items():
            failed = [bp.setting for bp in group if bp.diverged or bp.error]
            matched = min(bp.elements for bp in group)
            plural = "" if matched == 1 else "s"
            detail = (
                f"{matched} element{plural} matched"
                if not failed
                else "FAILS: " + ", ".join(failed)
            )
            lines.append(
                f"    {'FAIL' if failed else 'ok':4} {position:>6}  {group[0].reason:<36} {detail}"
            )
        for note in self.notes:
            lines.append(f"  note: {note}")
        for op in self.declared_external_state:
            lines.append(f"  declared external state: {op}")
        d = self.divergence
        if d is not None:
            lines.append(
                f"DIVERGES at break point {d.position} ({d.reason}, {d.setting}), "
                f"element {d.element}:"
            )
            lines.append(f"  expected: {d.expected}")
            lines.append(f"  got:      {d.actual}")
            if d.op is not None:
                lines.append(f"  op whose state differs: {d.op}")
            lines.append(f"  {d.explanation}")
        errors = [(bp, bp.error) for bp in self.break_points if bp.error]
        if errors:
            bp, error = errors[0]
            lines.append(f"ERROR at break point {bp.position} ({bp.setting}):")
            lines.extend(f"  {line}" for line in error.rstrip().splitlines()[-8:])
        for finding in self.findings:
            lines.append(f"EXTERNAL STATE: {finding}")
        lines.append(
            "OK: every resumed run equals the reference"
            if self.holds
            else "FAILED: this pipeline does not resume exactly"
        )
        return "\n".join(lines)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"
