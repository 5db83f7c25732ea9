"""Draws a profile's op graph, each op coloured by its share of the pipeline's time."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipestate.data._profile import ProfileReport


def plot_profile(report: ProfileReport, path: str | os.PathLike[str]) -> None:
    """Writes the op graph of ``report`` to ``path`` (format from its extension).

    Ops are drawn inputs first, left to right, with an arrow from each input
    to the op that reads it; the colour runs from pale (cheap) to red (the
    bottleneck), and each box says the op's self time and rate.

    Raises:
      ImportError: matplotlib is not installed (``pip install pipestate[plot]``).
    """
    try:
        # A Figure of its own, not pyplot: the caller's backend and figures are left alone.
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            "plotting a profile needs matplotlib: pip install 'pipestate[plot]'"
        ) from err
    ops = report.ops
    costs = [max(op.cost, 0.0) for op in ops]
    worst = max(costs, default=0.0) or 1.0
    depth = [0] * len(ops)
    for i, op in enumerate(ops):
        depth[i] = max((depth[j] + 1 for j in op.inputs), default=0)
    # Each op on the row of its first input where that is free, so chains run straight.
    taken: set[tuple[int, int]] = set()
    row_of = [0] * len(ops)
    for i, op in enumerate(ops):
        row = row_of[op.inputs[0]] if op.inputs else 0
        while (depth[i], row) in taken:
            row += 1
        taken.add((depth[i], row))
        row_of[i] = row
    width = max(depth, default=0) + 1
    height = max(row_of, default=0) + 1
    figure = Figure(figsize=(max(3.2 * width, 6), max(1.6 * height, 2.4) + 0.8))
    axes = figure.subplots()
    cmap = matplotlib.colormaps["YlOrRd"]
    centres = []
    for i, op in enumerate(ops):
        x, y = depth[i] * 3.2, -row_of[i] * 1.6
        centres.append((x, y))
        label = op.op if len(op.op) <= 34 else op.op[:31] + "..."
        rate = "-" if op.rate == float("inf") else f"{op.rate:,.0f}/s"
        text = f"{label}\nself {op.self_seconds * 1e3:.1f} ms · {rate}"
        axes.text(
            x,
            y,
            text,
            ha="center",
            va="center",
            fontsize=8,
            color="white" if costs[i] / worst > 0.6 else "black",
            bbox={
                "boxstyle": "round,pad=0.5",
                "facecolor": cmap(0.1 + 0.85 * costs[i] / worst),
                "edgecolor": "black" if op.op == report.bottleneck else "grey",
                "linewidth": 2.0 if op.op == report.bottleneck else 0.8,
            },
        )
        for j in op.inputs:
            axes.annotate(
                "",
                xy=(x - 1.35, y),
                xytext=(centres[j][0] + 1.35, centres[j][1]),
                arrowprops={"arrowstyle": "->", "color": "grey"},
            )
    axes.set_xlim(-1.7, (width - 1) * 3.2 + 1.7)
    axes.set_ylim(-(height - 1) * 1.6 - 0.9, 0.9)
    axes.axis("off")
    axes.set_title(
        f"{report.elements} elements, {report.rate:,.0f}/s; bottleneck: {report.bottleneck}",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path)
