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
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib import pyplot as plt
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
    rows: dict[int, int] = {}
    row_of = [0] * len(ops)
    for i in range(len(ops)):
        row_of[i] = rows.get(depth[i], 0)
        rows[depth[i]] = row_of[i] + 1
    width = max(depth, default=0) + 1
    height = max(rows.values(), default=1)
    figure, axes = plt.subplots(figsize=(max(3.2 * width, 6), max(1.6 * height, 2.4) + 0.8))
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
    plt.close(figure)
