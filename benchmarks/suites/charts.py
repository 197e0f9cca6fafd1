"""Benchmark charts as PNG bytes, drawn by matplotlib's Agg renderer (no display, no pyplot): grouped
bars and lines, each with a title, a subtitle, an optional dashed reference line (a bound or a
target) and a legend when there is more than one series.

``width`` x ``height`` are the PNG's pixels. Every chart is drawn in matplotlib's default style,
whatever a local matplotlibrc says, and the PNG carries no metadata (no software version, no
time), so the same figures give the same bytes on one installation. The figure set-up is the simulator's (:func:`sim.plots.figure`), so every chart of the project
looks alike. ``output.write_outputs``
writes them as ``<suite>-<name>.png``; ``benchmarks.quality`` draws its curves with
:func:`line_chart` too.
"""
from __future__ import annotations

import math
from collections.abc import Collection, Sequence

from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.ticker import EngFormatter

from sim.plots import figure, png

__all__ = ["COLORS", "bar_chart", "line_chart"]

COLORS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#ca8a04", "#db2777")
LEGEND_INSIDE_MAX = 3  # more series than this: the legend goes to the right of the plot


def _finish(ax: Axes, *, x_label: str, y_label: str, ref: float | None, legend: bool, outside: bool = False) -> None:
    """The reference line, axis labels and legend (right of the plot with many series or ``outside``);
    call it before fixing the y limits (the line counts)."""
    if ref is not None:
        ax.axhline(ref, color="#111", linestyle=(0, (4, 3)), linewidth=1)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    if legend and (outside or len(ax.get_legend_handles_labels()[1]) > LEGEND_INSIDE_MAX):
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    elif legend:
        ax.legend(fontsize="small")


def _compact(axis: Axis, values: Sequence[float]) -> None:
    """Tick labels 20k, 3M, 1.5G once the numbers get long."""
    if max(map(abs, values), default=0.0) >= 1e4:
        axis.set_major_formatter(EngFormatter(sep=""))


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def bar_chart(title: str, groups: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]], *,
              subtitle: str = "", y_label: str = "", ref: float | None = None, width: int = 640, height: int = 300) -> bytes:
    """One cluster of bars per group, one bar per series; None leaves a gap. The y axis starts at 0."""
    with figure(title, subtitle, width, height) as (fig, ax):
        slot = 0.8 / max(1, len(series))
        for k, (name, values) in enumerate(series):
            bars = [(g + (k + 0.5) * slot - 0.4, v) for g, v in enumerate(values[: len(groups)]) if _finite(v)]
            ax.bar([x for x, _ in bars], [v for _, v in bars], width=slot * 0.9, color=COLORS[k % len(COLORS)], label=name)
        ax.set_xticks(range(len(groups)), groups, rotation=30 if len(groups) > 5 else 0,
                      ha="right" if len(groups) > 5 else "center")
        ax.set_xlim(-0.5, len(groups) - 0.5)
        _compact(ax.yaxis, [v for _, vs in series for v in vs if _finite(v)])
        _finish(ax, x_label="", y_label=y_label, ref=ref, legend=len(series) > 1, outside=True)  # bars fill the plot
        ax.set_ylim(bottom=0.0)
        return png(fig)


def line_chart(title: str, series: Sequence[tuple[str, Sequence[tuple[float, float]]]], *, subtitle: str = "",
               x_label: str = "", y_label: str = "", ref: float | None = None, width: int = 640, height: int = 300,
               y_zero: bool = True, y_range: tuple[float, float] | None = None, dashed: Collection[str] = (),
               markers: bool = True) -> bytes:
    """Named series of (x, y) points, each a line through its finite points (with dots unless ``markers``
    is False). ``y_zero``: the y axis starts at 0; ``y_range``: the y axis shows that range (plus a
    margin) and lines leaving it are clipped; series named in ``dashed`` are drawn dashed (references)."""
    with figure(title, subtitle, width, height) as (fig, ax):
        xs: list[float] = []
        ys: list[float] = []
        for k, (name, points) in enumerate(series):
            pts = [(x, y) for x, y in points if _finite(y)]
            xs += [x for x, _ in pts]
            ys += [y for _, y in pts]
            ax.plot([x for x, _ in pts], [y for _, y in pts], color=COLORS[k % len(COLORS)], linewidth=1.5,
                    linestyle="--" if name in dashed else "-", marker="o" if markers else "", markersize=3, label=name)
        _compact(ax.xaxis, xs)
        _compact(ax.yaxis, ys)
        _finish(ax, x_label=x_label, y_label=y_label, ref=ref, legend=len(series) > 1)
        if y_range is not None:
            lo, hi = y_range
            pad = 0.05 * (hi - lo) or 1.0
            ax.set_ylim(lo - pad, hi + pad)
        elif y_zero:
            ax.set_ylim(bottom=0.0)
        return png(fig)
