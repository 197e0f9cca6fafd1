"""``benchmarks/gpu.py`` keeps working on machines without a GPU: its smoke mode runs every phase
(inner steps, outer step, a 2-rank gloo data-parallel group) on the CPU and prints its figures."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from benchmarks.gpu import peak_flops

ROOT = Path(__file__).resolve().parents[2]


def test_smoke_mode_measures_every_phase_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    run = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--smoke", "--json", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["device"] == "cpu" and figures["preset"] == "tiny" and figures["params"] == 842_496
    assert figures["inner"]["tokens_per_s"] > 0 and math.isfinite(figures["inner"]["loss"])
    assert figures["inner"]["mfu"] is None  # no peak is made up for a CPU
    assert figures["outer"]["outer_step_s"] > 0
    assert figures["data_parallel"]["devices"] == 2 and figures["data_parallel"]["tokens_per_s"] > 0
    assert "inner:" in run.stdout and "data-parallel over 2 cpu" in run.stdout
    assert json.loads(run.stdout.strip().splitlines()[-1]) == figures


def test_mfu_uses_the_named_cards_peak_and_no_other():
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("Some Future Card") is None
