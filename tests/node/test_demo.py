"""The main job, as a user runs it: ``swarm demo --nodes 3 --seconds 90 --report r.json``."""
from __future__ import annotations

import json
import shutil
import subprocess

import psutil
import pytest

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(300)]


def test_swarm_demo_learns_and_writes_its_report(tmp_path):
    exe = shutil.which("swarm")
    assert exe, "the `swarm` console script is not installed (pip install -e .)"
    report = tmp_path / "r.json"
    out = subprocess.run([exe, "demo", "--nodes", "3", "--seconds", "90", "--report", str(report), "--workdir", str(tmp_path / "w")],
                         capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "dashboard: http://127.0.0.1:" in out.stdout
    nodes = json.loads(report.read_text())["nodes"]
    assert len(nodes) == 3
    assert len({n["peer_id"] for n in nodes}) == 3
    for n in nodes:
        assert set(n) >= {"peer_id", "initial_val_bpb", "final_val_bpb", "rounds", "tokens", "bytes_sent", "bytes_received"}
        assert n["final_val_bpb"] <= 0.75 * n["initial_val_bpb"], n
        assert n["rounds"] >= 2 and n["tokens"] > 0 and n["bytes_sent"] > 0 and n["bytes_received"] > 0
    leftovers = [p for p in psutil.process_iter(["name", "cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert not leftovers, f"the demo left processes running: {[p.pid for p in leftovers]}"
