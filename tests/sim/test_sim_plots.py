"""The simulator's PNG line charts (sim/plots.py): gaps, lone values, same series same bytes."""
from __future__ import annotations

import math

import matplotlib

from sim.plots import COLORS, _lone, line_chart, trailing_mean

XS = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]


def test_lone_values_between_gaps_are_found():
    nan = math.nan
    assert _lone([1.0, nan, 2.0, nan, nan, 3.0, 4.0, nan, 5.0]) == [0, 2, 8]
    assert _lone([1.0, 2.0]) == [] and _lone([nan]) == [] and _lone([7.0]) == [0]


def test_values_between_gaps_are_drawn_and_gaps_are_not(read_png):
    dots = read_png(line_chart("t", XS, [("a", [1.0, None, 2.0, None, 3.0, None, 4.0]), ("b", [None] * 7)]), 640, 300)
    legend_only = read_png(line_chart("t", XS, [("a", [None] * 7), ("b", [None] * 7)]), 640, 300)
    assert dots.count(COLORS[0]) > legend_only.count(COLORS[0]) + 4 * 5  # four dots of ~3 px across
    line = read_png(line_chart("t", XS, [("a", [1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0])], width=800, height=400), 800, 400)
    assert line.count(COLORS[0]) > 2 * dots.count(COLORS[0])
    assert line.count(COLORS[1]) == 0


def test_same_series_same_bytes_whatever_the_local_settings():
    series = [("tokens/s", [1e5, 2e6, None, 3e6, 2.5e6, 2.4e6, 2.6e6]), ("US$ / 1M tokens", [1.0] * 7)]
    first = line_chart("$ per 1M tokens", XS, series, subtitle="seed 0")
    with matplotlib.rc_context({"lines.linewidth": 6, "axes.facecolor": "black"}):
        assert line_chart("$ per 1M tokens", XS, series, subtitle="seed 0") == first
    assert line_chart("$ per 1M tokens", XS, series, subtitle="seed 1") != first
    assert b"tEXt" not in first  # no software version or time in the file


def test_trailing_mean_keeps_gaps():
    assert trailing_mean([1.0, 3.0, None, 5.0], 3) == [1.0, 2.0, None, 4.0]
    assert trailing_mean([1.0, 3.0, None, 5.0], 2) == [1.0, 2.0, None, 5.0]  # the gap counts in the window
