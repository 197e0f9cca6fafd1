"""A joiner whose progress tracker has not seen the swarm yet still downloads the state first.

The tracker's view of the swarm comes from one DHT read when it starts; a joiner whose DHT had
just bootstrapped could find no record there, believe the swarm was at round 0, skip the state
download, train from the seed weights and average that work into the others' later round (seen
in CI: ``node-2: round 0 val 7.567`` while node-1 was at round 3). ``CAPASWARM_FAULT=blind_tracker``
makes that first read come back empty, every time.
"""
from __future__ import annotations

import os
import time

import pytest

from node.cli.launcher import SwarmLauncher, read_status

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(240)]


def _wait(predicate, timeout: float, swarm: SwarmLauncher) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        assert all(p.poll() is None for p in swarm.procs.values()), "a node exited; see its node.log"
        time.sleep(0.5)
    return predicate()


def test_a_joiner_with_a_blind_tracker_downloads_the_state_before_its_first_round(tmp_path):
    with SwarmLauncher(tmp_path, run_id="join-race", round_tokens=20_000, extra_args=["--status-interval-s", "1"]) as swarm:
        swarm.start_node("node-1")
        first = swarm.wait_for_maddr("node-1")
        assert _wait(lambda: (read_status(tmp_path / "node-1") or {}).get("rounds", 0) >= 2, 120, swarm)
        swarm.start_node("node-2", [first], env={"CAPASWARM_FAULT": "blind_tracker"})
        st2 = lambda: read_status(tmp_path / "node-2") or {}  # noqa: E731
        assert _wait(lambda: st2().get("synced_from_peers") is not None or st2().get("first_contribution") is not None,
                     120, swarm), (tmp_path / "node-2" / "node.log").read_text()[-3000:]
        st = st2()
        log = (tmp_path / "node-2" / "node.log").read_text()
        # it joined at the swarm's round (>= 2), never contributed a round-0 from the seed weights
        assert st["synced_from_peers"] is not None and st["synced_from_peers"]["round"] >= 2, (st, log[-3000:])
        assert "round 0: our global state differs" not in log, log[-3000:]
        assert os.environ.get("CAPASWARM_FAULT") is None  # the fault went to node-2 only
