"""`swarm sim` / `python -m sim`: outputs, calibration entry, and a frozen option surface."""
from __future__ import annotations

import json
import subprocess
import sys

from sim.cli import build_parser, main
from sim.plots import COLORS
from sim.report import PLOTS
from sim.scenarios import SCENARIOS


def test_cli_writes_json_and_plots(tmp_path, capsys, read_png):
    out = tmp_path / "run"
    assert main(["--scenario", "volunteers", "--peers", "40", "--hours", "3", "--seed", "5", "--out", str(out)]) == 0
    assert "volunteers: 40 peers" in capsys.readouterr().out
    data = json.loads((out / "sim.json").read_text())
    assert {"config", "summary", "series", "rounds", "trace_sha256", "run"} <= set(data)
    assert data["config"]["seed"] == 5 and data["summary"]["peers"]["identities"] == 40
    lengths = {len(v) for v in data["series"].values()}
    assert lengths == {3 * 6 + 1}  # a row every 10 min and one at the end
    assert sorted(p.name for p in out.glob("*.png")) == sorted(PLOTS)
    for name in PLOTS:
        png = read_png(out / name, 640, 300)
        assert png.count(COLORS[0]) > 150, name  # the first series' line, not only its legend entry (~60 px)
    assert read_png(out / "peers.png", 640, 300).count(COLORS[1]) > 150  # online and computing


def test_overrides_reach_the_config(tmp_path):
    out = tmp_path / "run"
    argv = ["--scenario", "home125m-int8", "--peers", "20", "--hours", "1", "--codec", "topk", "--grouping", "bandwidth",
            "--round-tokens", "12345", "--group-size", "8", "--straggler-policy", "ban", "--assumed-mbps", "7",
            "--out", str(out), "--no-plots"]
    assert main(argv) == 0
    cfg = json.loads((out / "sim.json").read_text())["config"]
    assert cfg["codec"] == "topk"
    assert {k: cfg["protocol"][k] for k in ("grouping", "round_tokens", "target_group_size", "straggler_policy",
                                             "assumed_bandwidth_mbps")} == {
        "grouping": "bandwidth", "round_tokens": 12345, "target_group_size": 8, "straggler_policy": "ban",
        "assumed_bandwidth_mbps": 7.0}
    assert list(out.glob("*.png")) == []


def test_calibrate_entry(tmp_path, capsys, demo_report_path):
    assert main(["--calibrate", str(demo_report_path), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "rounds_per_hour" in printed and "error" in printed
    result = json.loads((tmp_path / "calibration.json").read_text())
    assert {"predicted", "measured", "relative_error", "analytic", "inputs"} <= set(result)


def test_calibrate_with_a_bad_report_fails_cleanly(tmp_path, capsys):
    assert main(["--calibrate", str(tmp_path / "missing.json")]) == 1
    (tmp_path / "bad.json").write_text('{"nodes": []}')
    assert main(["--calibrate", str(tmp_path / "bad.json")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_the_option_surface_is_frozen():
    """Changing a flag is a change to the CLI contract: update this list on purpose."""
    options = {o for action in build_parser()._actions for o in action.option_strings if o.startswith("--")}
    assert options == {
        "--help", "--scenario", "--calibrate", "--list", "--peers", "--hours", "--seed", "--out", "--no-plots",
        "--codec", "--round-tokens", "--group-size", "--grouping", "--straggler-policy", "--assumed-mbps",
        "--sample-s", "--loopback-mbps", "--progress-lag-s", "--hostile", "--hostile-kind",
    }


def test_python_dash_m_sim_lists_every_scenario():
    done = subprocess.run([sys.executable, "-m", "sim", "--list"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert [line.split()[0] for line in done.stdout.splitlines()] == list(SCENARIOS)
