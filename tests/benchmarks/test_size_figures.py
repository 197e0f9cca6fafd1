"""The size suite's own measurements: a process group's memory, and the cross-node hash comparison."""
from __future__ import annotations

import os
import subprocess
import sys

from benchmarks.suites.size import hash_agreement, process_group_memory


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


def test_hash_agreement_compares_every_round_two_nodes_hold_and_names_the_differing():
    statuses = {
        "node-1": {"hashes": {"1": "a", "2": "b", "3": "c"}},
        "node-2": {"hashes": {"2": "b", "3": "X"}},
        "node-3": {"hashes": {"3": "c", "4": "d"}},  # round 4: one node only, not compared
    }
    got = hash_agreement(statuses)
    assert got["rounds_compared"] == 2 and got["rounds_differing"] == [3]
    assert got["nodes_per_round"] == {"2": ["node-1", "node-2"], "3": ["node-1", "node-2", "node-3"]}
    assert hash_agreement({"node-1": {"hashes": {"1": "a"}}, "node-2": {}})["rounds_compared"] == 0
