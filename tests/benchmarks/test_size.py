"""The size suite: a process group's memory, the cross-node hash comparison, and a swarm of the ``small``
preset (10.8M) with a joiner, so the size-dependent paths (timeouts, state download, checkpoint, export)
stay covered in the suite at more than the tiny model's size."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.suites.size import process_group_memory

REPO = Path(__file__).resolve().parents[2]


def test_a_process_groups_memory_counts_every_member_and_what_it_holds():
    # a child in its own process group holding 200 MB it wrote to (so resident), and a grandchild beside it
    code = ("import os, subprocess, sys, time; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); print('ready', flush=True); time.sleep(30)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        pss, rss, count = process_group_memory(proc.pid)
        assert count == 2  # the child and its grandchild; not this test's process
        assert 200 * 2**20 < pss <= rss
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(5)
    assert process_group_memory(proc.pid) == (0, 0, 0)  # gone: nothing left to count


@pytest.mark.swarm
@pytest.mark.timeout(300)
def test_two_nodes_of_the_small_preset_and_a_joiner_agree_at_every_round(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.suites", "size", "--loopback", "--model", "small", "--nodes", "2", "--rounds", "2",
         "--run-seconds", "240", "--out", str(out), "--workdir", str(tmp_path / "work"), "--cpu-lock", ""],
        cwd=REPO, capture_output=True, text=True, timeout=290)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = json.loads((out / "size.json").read_text())["run"]
    assert run["completed"] and run["parameters"] == 10_844_160
    assert run["hashes"]["rounds_compared"] >= 2 and run["hashes"]["rounds_forked"] == []
    nodes = {n["node"]: n for n in run["nodes"]}
    assert nodes["node-1"]["rounds"] >= 2 and nodes["node-2"]["rounds"] >= 2
    joiner = nodes["node-3"]
    assert joiner["joiner"] and joiner["rounds"] >= 1 and joiner["state_download_s"] > 0  # it downloaded the state
    assert all(n["peak_pss_gb"] > 0 and n["processes"] >= 3 for n in nodes.values())  # node, averager, DHT (+ p2pd)
    assert nodes["node-1"]["checkpoint_write_s"] > 0 and run["transformers_parameters"] == run["parameters"]
