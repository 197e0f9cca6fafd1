"""Resume equivalence and clean shutdown of a real node process.

A node restarted from its checkpoint continues from the same round and parameters, with the
same identity; SIGTERM mid-training exits 0 and leaves no process behind (p2pd included).
"""
from __future__ import annotations

import signal

import psutil
import pytest

from node.cli.launcher import SwarmLauncher
from swarm_helpers import wait_until

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(240)]


def test_restart_resumes_same_round_and_parameters(tmp_path):
    with SwarmLauncher(tmp_path, run_id="test-resume", round_tokens=8_000) as swarm:
        proc = swarm.start_node("solo", extra=["--max-rounds", "2"])
        assert proc.wait(120) == 0
        first = swarm.statuses()["solo"]
        assert first["rounds"] == 2 and first["round"] == 2

        proc = swarm.start_node("solo")  # same state dir, same identity, no round limit
        st = wait_until(swarm, lambda s: s.get("solo", {}).get("pid") == proc.pid and s["solo"]["rounds"] >= 3, 120, "a third round")["solo"]
        assert st["peer_id"] == first["peer_id"], "the restarted node lost its identity"
        assert st["resumed_from"] == {"round": 2, "state_hash": first["state_hash"]}
        assert st["hashes"]["3"] != first["state_hash"], "the resumed node made no progress"
        assert st["tokens"] > first["tokens"]

        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("p2pd" in c.name() for c in children), "expected the node to run its own p2pd"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, "SIGTERM should shut the node down cleanly"
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"processes outlived the node: {[c.pid for c in alive]}"
