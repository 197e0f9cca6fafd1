"""Line charts as small, self-contained SVG files, written by hand (no matplotlib here).

One function, :func:`line_chart`: a title, an x axis in hours, one or more named series (``None``
leaves a gap), "nice" 1-2-5 ticks, a legend. Text is escaped; the output is deterministic.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from xml.sax.saxutils import escape

__all__ = ["line_chart", "nice_ticks", "trailing_mean"]

COLORS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2")
LEFT, RIGHT, TOP, BOTTOM = 72, 16, 52, 44


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round numbers (1, 2 or 5 x 10^k apart) covering ``[lo, hi]``."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    k = 0
    while True:
        v = start + k * step
        ticks.append(round(v, 12))
        if v >= hi - 1e-12 * step:
            return ticks
        k += 1


def trailing_mean(ys: Sequence[float | None], window: int) -> list[float | None]:
    """Mean of the last ``window`` values (fewer at the start); None where the value is None."""
    out: list[float | None] = []
    for k, y in enumerate(ys):
        recent = [v for v in ys[max(0, k - window + 1) : k + 1] if v is not None]
        out.append(None if y is None else sum(recent) / len(recent))
    return out


def _label(v: float) -> str:
    a = abs(v)
    if a >= 1e9:
        return f"{v / 1e9:g}G"
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e4:
        return f"{v / 1e3:g}k"
    return f"{v:.4g}"


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
) -> str:
    values = [y for _, ys in series for y in ys if y is not None and math.isfinite(y)]
    x_ticks = nice_ticks(min(xs, default=0.0), max(xs, default=1.0))
    y_ticks = nice_ticks(min(values) if y_min is None and values else (y_min or 0.0), max(values, default=1.0))
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]
    pw, ph = width - LEFT - RIGHT, height - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return TOP + ph - (y - y0) / (y1 - y0) * ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="system-ui, sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
        f'<text x="{LEFT}" y="18" font-size="14" font-weight="600" fill="#111">{escape(title)}</text>',
        f'<text x="{LEFT}" y="34" fill="#666">{escape(subtitle)}</text>',
    ]
    for v in y_ticks:
        out.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="#e5e7eb"/>')
        out.append(f'<text x="{LEFT - 6}" y="{py(v) + 4:.1f}" text-anchor="end" fill="#555">{_label(v)}</text>')
    for v in x_ticks:
        out.append(f'<line x1="{px(v):.1f}" x2="{px(v):.1f}" y1="{TOP + ph}" y2="{TOP + ph + 4}" stroke="#999"/>')
        out.append(f'<text x="{px(v):.1f}" y="{TOP + ph + 16}" text-anchor="middle" fill="#555">{_label(v)}</text>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    out.append(f'<text x="{LEFT + pw / 2}" y="{height - 8}" text-anchor="middle" fill="#333">{escape(x_label)}</text>')
    if y_label:
        out.append(f'<text transform="translate(14 {TOP + ph / 2}) rotate(-90)" text-anchor="middle" fill="#333">'
                   f"{escape(y_label)}</text>")
    legend_x = LEFT + 8
    for k, (name, ys) in enumerate(series):
        color = COLORS[k % len(COLORS)]
        runs: list[list[str]] = [[]]
        for x, y in zip(xs, ys):
            if y is None or not math.isfinite(y):
                runs.append([])
            else:
                runs[-1].append(f"{px(x):.1f},{py(y):.1f}")
        for run in runs:
            if len(run) == 1:
                cx, cy = run[0].split(",")
                out.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{color}"/>')
            elif run:
                out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{" ".join(run)}"/>')
        if len(series) > 1:
            ly = TOP - 6
            out.append(f'<line x1="{legend_x}" x2="{legend_x + 16}" y1="{ly - 4}" y2="{ly - 4}" stroke="{color}" stroke-width="2"/>')
            out.append(f'<text x="{legend_x + 20}" y="{ly}" fill="#333">{escape(name)}</text>')
            legend_x += 36 + 6 * len(name)  # ~6 px per character at 11 px
    out.append("</svg>")
    return "\n".join(out) + "\n"
