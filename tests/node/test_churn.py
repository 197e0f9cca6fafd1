"""Churn during the all-reduce: a peer killed or frozen mid-all-reduce costs the others one round.

The fault fires through a seam (``node/host/faults.py``, ``CAPASWARM_FAULT``) right after the victim
streamed its first part to a remote reducer, so it is mid-all-reduce by construction, not by a
lucky sleep. The survivors must complete later rounds, hold no NaN, and end with identical
global parameters.
"""
from __future__ import annotations

import math
import signal
import time

import psutil
import pytest

from node.cli.launcher import SwarmLauncher
from swarm_helpers import common_hashes, wait_until

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(300)]


def _victim_is(swarm: SwarmLauncher, name: str, states: set[str]) -> bool:
    proc = swarm.procs[name]
    if proc.poll() is not None:
        return "dead" in states
    try:
        return psutil.Process(proc.pid).status() in states
    except psutil.NoSuchProcess:
        return "dead" in states


@pytest.mark.parametrize("action, states", [("kill", {"dead"}), ("hang", {psutil.STATUS_STOPPED})])
def test_survivors_finish_rounds_after_a_peer_fails_mid_allreduce(tmp_path, action, states):
    with SwarmLauncher(tmp_path, run_id=f"test-churn-{action}", round_tokens=30_000) as swarm:
        swarm.start_node("node-1")
        maddr = swarm.wait_for_maddr("node-1")
        swarm.start_node("node-2", [maddr])
        swarm.start_node("victim", [maddr], env={"CAPASWARM_FAULT": f"{action}_mid_allreduce:2"})
        deadline = time.monotonic() + 150
        while not _victim_is(swarm, "victim", states):
            assert time.monotonic() < deadline, "the fault never fired"
            time.sleep(0.2)
        t_fault = time.monotonic()
        at_fault = {n: swarm.statuses()[n]["rounds"] for n in ("node-1", "node-2")}

        survivors = ["node-1", "node-2"]
        # a survivor that was one round behind the other when the victim died downloads the other's
        # state, which can wait for the victim's last state announcement to lapse (announce.TTL_S):
        # so wait for the round both survivors hold, not only for their counts
        def after_fault(s):
            return {r: h for r, h in common_hashes(s, survivors).items() if int(r) > max(at_fault.values())}

        def healed(s):
            return all(s[n]["rounds"] >= at_fault[n] + 2 for n in survivors) and bool(after_fault(s))
        sts = wait_until(swarm, healed, 150, "two more rounds on the survivors, one of them held by both")
        print(f"{action}: survivors completed 2 more rounds {time.monotonic() - t_fault:.1f} s after the fault")
        for n in survivors:
            assert math.isfinite(sts[n]["final_val_bpb"]), f"{n} has a non-finite loss"
            assert sts[n]["final_val_bpb"] < sts[n]["initial_val_bpb"]
        after = after_fault(sts)
        assert after, "no round completed by both survivors after the fault"
        assert all(len(h) == 1 for h in after.values()), f"survivors disagree: {after}"
        swarm.stop_node("victim", signal.SIGKILL)  # a frozen node is reaped with its whole process group
