"""Benchmark charts (benchmarks/suites/charts.py): real PNGs of the asked size, every series drawn,
the same bytes for the same figures whatever the local matplotlib settings, and the suites' files."""
from __future__ import annotations

import json

import matplotlib

from benchmarks.suites.charts import COLORS, bar_chart, line_chart
from benchmarks.suites.output import write_outputs

BLUE, RED, GREEN, PURPLE = COLORS[:4]


def _bars(**kw: object) -> bytes:
    series = [("N=2", [1.0, 0.98, None]), ("N=4", [1.02, 1.0, 1.4]), ("N=8", [1.0, 1.0, 2.1])]
    return bar_chart("payload sent / bound", ["none", "fp16", "topkef"], series, subtitle="median", y_label="ratio",
                     ref=1.0, **kw)


def _lines(**kw: object) -> bytes:
    series = [("diloco", [(0, 5.0), (30, 4.2), (60, 3.8), (90, 3.5)]),
              ("sync", [(0, 5.0), (40, 4.6), (80, float("nan")), (120, 3.9)])]
    return line_chart("val bpb over time", series, x_label="s", y_label="bpb", ref=3.6, y_zero=False, **kw)


def test_bar_chart_is_a_png_of_the_asked_size_with_every_series(read_png):
    png = read_png(_bars(width=500, height=260), 500, 260)
    # bars are areas: thousands of pixels per series; the legend's swatch alone is under 150
    assert min(png.count(BLUE), png.count(RED), png.count(GREEN)) > 1000
    assert png.count(PURPLE) == 0  # no fourth series


def test_line_chart_is_a_png_of_the_asked_size_with_every_series(read_png):
    png = read_png(_lines(), 640, 300)
    assert min(png.count(BLUE), png.count(RED)) > 300  # lines across the plot, not just the legend's
    assert png.count(GREEN) == 0
    one = read_png(line_chart("one", [("only", [(0, 1.0), (1e6, 2.0)])], width=720, height=380), 720, 380)
    assert one.count(BLUE) > 300 and one.count(RED) == 0


def test_a_series_with_no_finite_value_draws_nothing():
    empty = [("N=2", [None, None]), ("N=4", [1.0, 2.0])]
    assert bar_chart("t", ["a", "b"], empty) != bar_chart("t", ["a", "b"], [("N=2", [0.5, None]), ("N=4", [1.0, 2.0])])
    assert line_chart("t", [("a", [(0, float("nan")), (1, float("inf"))])]).startswith(b"\x89PNG")


def test_same_figures_same_bytes_whatever_the_local_settings():
    first = _lines()
    assert _lines() == first and _bars() == _bars()
    with matplotlib.rc_context({"lines.linewidth": 8, "figure.facecolor": "red", "font.size": 20}):
        assert _lines() == first
    assert _lines(subtitle="another") != first
    assert b"tEXt" not in first and b"matplotlib" not in first.lower()  # no version or date in the file


def test_write_outputs_writes_json_markdown_and_one_png_per_chart(tmp_path, read_png):
    paths = write_outputs(tmp_path / "out", "bytes", {"suite": "bytes"}, "| table |\n",
                          {"payload_sent": _bars(), "wire_up": _bars(height=320)})
    out = tmp_path / "out"
    assert paths == [out / "bytes.json", out / "bytes.md", out / "bytes-payload_sent.png", out / "bytes-wire_up.png"]
    assert json.loads(paths[0].read_text()) == {"suite": "bytes"}
    assert paths[2].read_bytes() == _bars()
    read_png(paths[3], 640, 320)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)

