"""A real swarm on 127.0.0.1: nodes train together, a late joiner syncs, a killed node is survived.

One scenario, three stages, because each stage needs the swarm the previous one built
(starting a swarm costs ~15 s of a 2-core CI machine):
  1. three nodes train the tiny model: validation bits/byte falls well below its start on
     every node, and once all have joined, every outer step leaves them with identical global
     parameters;
  2. a fourth node joins mid-run and holds the swarm's exact global parameters (same hash)
     before its first contribution;
  3. one node is ``kill -9``-ed (with its p2pd): the others complete later rounds within the
     configured timeouts, keep identical parameters and keep improving.
"""
from __future__ import annotations

import signal

import pytest

from node.demo import DemoSwarm
from swarm_helpers import common_hashes, wait_until

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(420)]

ROUND_TOKENS = 30_000  # ~15 inner steps of the tiny model across the swarm


def test_swarm_trains_syncs_joiner_and_survives_kill(tmp_path):
    with DemoSwarm(tmp_path, run_id="test-swarm", round_tokens=ROUND_TOKENS, extra_args=["--status-interval-s", "5"]) as swarm:
        names = swarm.start(3)

        # --- 1. three nodes train together ------------------------------------------------
        sts = wait_until(swarm, lambda s: len(s) == 3 and all(st["rounds"] >= 5 for st in s.values()), 180, "5 rounds on 3 nodes")
        for name in names:
            st = sts[name]
            assert st["final_val_bpb"] < 0.75 * st["initial_val_bpb"], f"{name} did not learn: {st['initial_val_bpb']} -> {st['final_val_bpb']}"
        # node-1 starts alone and the others join while it trains: a round that raced a join can fork
        # (a node that believed it was alone stepped on its own); the group's state hashes reveal it and
        # the forked nodes download the reference state. From the round after everyone's first
        # contribution on, every outer step must leave all nodes with identical parameters.
        settled = max(sts[n]["first_contribution"] for n in names) + 1
        shared = {r: h for r, h in common_hashes(sts, names).items() if int(r) > settled}
        assert len(shared) >= 2, f"too few rounds completed by all three nodes after they settled: {sorted(shared)}"
        assert all(len(h) == 1 for h in shared.values()), f"global parameters differ between nodes: {shared}"
        assert all(sts[n]["bytes_sent"] > 0 and sts[n]["bytes_received"] > 0 for n in names)

        # --- 2. a fourth node joins mid-run --------------------------------------------------
        swarm.start_node("node-4", [sts["node-1"]["maddrs"][0]])
        sts = wait_until(swarm, lambda s: "node-4" in s and (s["node-4"].get("rounds") or 0) >= 1, 150, "node-4's first round")
        joined = sts["node-4"]
        synced = joined["synced_from_peers"]
        assert synced is not None, "node-4 contributed without downloading the swarm's state"
        assert synced["round"] >= 4
        assert joined["first_contribution"] >= synced["round"], "node-4 contributed before it synchronised"
        peer_hash = sts["node-1"]["hashes"].get(str(synced["round"]))
        assert synced["state_hash"] == peer_hash, "node-4 downloaded state that differs from the swarm's"

        # --- 3. kill -9 one node mid-run -------------------------------------------------------
        before = {n: sts[n]["rounds"] for n in ("node-1", "node-3", "node-4")}
        bpb_at_kill = {n: sts[n]["final_val_bpb"] for n in before}
        swarm.stop_node("node-2", signal.SIGKILL)
        sts = wait_until(swarm, lambda s: all(s[n]["rounds"] >= before[n] + 3 for n in before), 180, "3 more rounds after the kill")
        survivors = list(before)
        later = {r: h for r, h in common_hashes(sts, survivors).items() if int(r) > max(before.values())}
        assert later and all(len(h) == 1 for h in later.values()), f"survivors disagree after the kill: {later}"
        for n in survivors:
            assert sts[n]["final_val_bpb"] < bpb_at_kill[n], f"{n} stopped improving after the kill"
