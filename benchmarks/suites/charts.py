"""Small self-contained SVG charts (matplotlib is not installed here): grouped bars and lines.

Deterministic output, escaped text, an optional dashed reference line (a bound or a target).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from xml.sax.saxutils import escape

__all__ = ["bar_chart", "line_chart"]

COLORS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563")
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 56, 48


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    n = math.ceil((hi - start) / step - 1e-9)
    return [round(start + k * step, 12) for k in range(n + 1)]


def _frame(title: str, subtitle: str, width: int, height: int, y_ticks: list[float], y_label: str,
           py: Callable[[float], float]) -> list[str]:
    pw = width - LEFT - RIGHT
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           'font-family="system-ui, sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="#fff"/>',
           f'<text x="{LEFT}" y="18" font-size="14" font-weight="600" fill="#111">{escape(title)}</text>',
           f'<text x="{LEFT}" y="34" fill="#666">{escape(subtitle)}</text>']
    for v in y_ticks:
        out.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="#e5e7eb"/>')
        out.append(f'<text x="{LEFT - 6}" y="{py(v) + 4:.1f}" text-anchor="end" fill="#555">{v:g}</text>')
    if y_label:
        out.append(f'<text transform="translate(14 {(TOP + height - BOTTOM) / 2}) rotate(-90)" text-anchor="middle" '
                   f'fill="#333">{escape(y_label)}</text>')
    return out


def _legend(names: Sequence[str]) -> list[str]:
    out, x = [], LEFT
    for k, name in enumerate(names):
        color = COLORS[k % len(COLORS)]
        out.append(f'<rect x="{x}" y="{TOP - 14}" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{x + 14}" y="{TOP - 5}" fill="#333">{escape(name)}</text>')
        x += 24 + 6 * len(name)
    return out


def _ref(ref: float | None, py: Callable[[float], float], width: int) -> list[str]:
    if ref is None:
        return []
    return [f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{py(ref):.1f}" y2="{py(ref):.1f}" stroke="#111" '
            'stroke-dasharray="4 3"/>']


def bar_chart(title: str, groups: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]], *,
              subtitle: str = "", y_label: str = "", ref: float | None = None, width: int = 640, height: int = 300) -> str:
    """One cluster of bars per group, one bar per series; None leaves a gap."""
    values = [v for _, vs in series for v in vs if v is not None and math.isfinite(v)] + ([ref] if ref is not None else [])
    y_ticks = _ticks(0.0, max(values, default=1.0))
    pw, ph = width - LEFT - RIGHT, height - TOP - BOTTOM

    def py(y: float) -> float:
        return TOP + ph - y / y_ticks[-1] * ph

    out = _frame(title, subtitle, width, height, y_ticks, y_label, py)
    slot = pw / max(1, len(groups))
    bar = slot * 0.8 / max(1, len(series))
    for g, group in enumerate(groups):
        x0 = LEFT + g * slot + slot * 0.1
        for k, (_, vs) in enumerate(series):
            v = vs[g] if g < len(vs) else None
            if v is None or not math.isfinite(v):
                continue
            out.append(f'<rect x="{x0 + k * bar:.1f}" y="{py(v):.1f}" width="{bar * 0.9:.1f}" height="{TOP + ph - py(v):.1f}" '
                       f'fill="{COLORS[k % len(COLORS)]}"><title>{escape(f"{group} {series[k][0]}: {v:.4g}")}</title></rect>')
        out.append(f'<text x="{LEFT + (g + 0.5) * slot:.1f}" y="{TOP + ph + 16}" text-anchor="middle" fill="#333">{escape(group)}</text>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    out += _ref(ref, py, width) + (_legend([n for n, _ in series]) if len(series) > 1 else [])
    return "\n".join(out + ["</svg>"]) + "\n"


def line_chart(title: str, series: Sequence[tuple[str, Sequence[tuple[float, float]]]], *, subtitle: str = "",
               x_label: str = "", y_label: str = "", ref: float | None = None, width: int = 640, height: int = 300,
               y_zero: bool = True) -> str:
    """Named series of (x, y) points, each drawn as a polyline with dots."""
    pts = [p for _, ps in series for p in ps if math.isfinite(p[1])]
    ys = [y for _, y in pts] + ([ref] if ref is not None else [])
    y_ticks = _ticks(0.0 if y_zero else min(ys, default=0.0), max(ys, default=1.0))
    x_ticks = _ticks(min((x for x, _ in pts), default=0.0), max((x for x, _ in pts), default=1.0))
    pw, ph = width - LEFT - RIGHT, height - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x_ticks[0]) / (x_ticks[-1] - x_ticks[0]) * pw

    def py(y: float) -> float:
        return TOP + ph - (y - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]) * ph

    out = _frame(title, subtitle, width, height, y_ticks, y_label, py)
    for v in x_ticks:
        out.append(f'<text x="{px(v):.1f}" y="{TOP + ph + 16}" text-anchor="middle" fill="#555">{v:g}</text>')
    out.append(f'<text x="{LEFT + pw / 2}" y="{height - 10}" text-anchor="middle" fill="#333">{escape(x_label)}</text>')
    for k, (_, ps) in enumerate(series):
        color = COLORS[k % len(COLORS)]
        coords = [f"{px(x):.1f},{py(y):.1f}" for x, y in ps if math.isfinite(y)]
        if len(coords) > 1:
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{" ".join(coords)}"/>')
        for c in coords:
            cx, cy = c.split(",")
            out.append(f'<circle cx="{cx}" cy="{cy}" r="2.2" fill="{color}"/>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    out += _ref(ref, py, width) + (_legend([n for n, _ in series]) if len(series) > 1 else [])
    return "\n".join(out + ["</svg>"]) + "\n"
