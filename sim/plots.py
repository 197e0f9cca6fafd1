"""Line charts of a simulated run as PNG bytes, drawn by matplotlib's Agg renderer (no display, no pyplot).

:func:`figure` and :func:`png` are the project's one chart set-up (``benchmarks.suites.charts``
draws its bars and lines in them too). :func:`line_chart`: a title, an x axis in hours, one or more named series (``None``
leaves a gap, and a lone value between gaps is drawn as a dot), a legend. ``width`` x ``height``
are the PNG's pixels. Charts are drawn in matplotlib's default style whatever a local matplotlibrc
says, and the PNG carries no metadata (no software version, no time): same run, same bytes on
one installation. Also :func:`trailing_mean`, the smoothing the report applies to rates.

matplotlib is imported inside :func:`line_chart`, so importing ``sim`` or running a simulation
loads neither it nor numpy (tests/sim/test_sim_imports.py); only writing plots does.
"""
from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

__all__ = ["figure", "line_chart", "png", "trailing_mean"]

COLORS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2")
DPI = 100


def trailing_mean(ys: Sequence[float | None], window: int) -> list[float | None]:
    """Mean of the last ``window`` values (fewer at the start); None where the value is None."""
    out: list[float | None] = []
    for k, y in enumerate(ys):
        recent = [v for v in ys[max(0, k - window + 1) : k + 1] if v is not None]
        out.append(None if y is None else sum(recent) / len(recent))
    return out


def _lone(ys: Sequence[float]) -> list[int]:
    """Indices of finite values whose neighbours are both gaps: a line alone would not show them."""
    ok = [math.isfinite(y) for y in ys]
    return [k for k, good in enumerate(ok) if good and not (k > 0 and ok[k - 1]) and not (k + 1 < len(ok) and ok[k + 1])]


@contextmanager
def figure(title: str, subtitle: str, width: int, height: int) -> Iterator[tuple[Any, Any]]:
    """``(fig, ax)``: a figure of ``width`` x ``height`` pixels with one plot, in matplotlib's default
    style, with a bold title, an optional grey subtitle and a light horizontal grid."""
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # rcParams are read while drawing too: render inside. "$" in a label is a dollar, not math
    with matplotlib.style.context(["default", {"text.parse_math": False}]):
        fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        fig.suptitle(title, fontweight="bold")
        if subtitle:
            ax.set_title(subtitle, fontsize="small", color="#555")
        ax.grid(axis="y", color="#e5e7eb")
        ax.set_axisbelow(True)
        yield fig, ax


def png(fig: Any) -> bytes:
    """The figure as PNG bytes, without metadata (no software version, no time). Call it inside
    :func:`figure`: drawing reads the style."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def line_chart(
    title: str,
    xs: Sequence[float],
    series: Sequence[tuple[str, Sequence[float | None]]],
    *,
    subtitle: str = "",
    y_label: str = "",
    x_label: str = "simulated hours",
    width: int = 640,
    height: int = 300,
    y_min: float | None = 0.0,
) -> bytes:
    """PNG bytes of ``series`` (name, one value per x) over ``xs``; ``y_min=None`` fits the y axis to the data."""
    from matplotlib.ticker import EngFormatter

    with figure(title, subtitle, width, height) as (fig, ax):
        top = 0.0
        for k, (name, values) in enumerate(series):
            ys = [math.nan if v is None else float(v) for v in values[: len(xs)]]
            top = max([top, *(abs(y) for y in ys if math.isfinite(y))])
            lone = _lone(ys)
            ax.plot(xs[: len(ys)], ys, color=COLORS[k % len(COLORS)], linewidth=1.5, label=name,
                    marker="o" if lone else "", markersize=3, markevery=lone or None)
        if top >= 1e4:  # 20k, 3M, 1.5G
            ax.yaxis.set_major_formatter(EngFormatter(sep=""))
        if y_min is not None:
            ax.set_ylim(bottom=y_min)
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        if len(series) > 1:
            ax.legend(fontsize="small")
        return png(fig)
