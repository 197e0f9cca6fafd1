"""benchmarks/sim_agreement.py, the command docs/simulator.md quotes, runs and prints its table and JSON."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_command_prints_a_row_per_grouping_and_fault():
    done = subprocess.run([sys.executable, "benchmarks/sim_agreement.py", "--peers", "300", "--hours", "3"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| 300 |")]
    assert len(rows) == 4 * 3
    report = json.loads(done.stdout.strip().splitlines()[-1])
    by = {(r["grouping"], r["fault"]): r for r in report["rows"]}
    assert by[("random 16", "10 % lie")]["agreement_dropped"] == 0.0  # a lying minority costs nothing
    assert by[("random 3", "10 % lie")]["agreement_dropped"] > 0.0  # a lying majority of 2 in 3 drops the round
    assert by[("random 3", "honest")]["agreement_dropped"] == 0.0
