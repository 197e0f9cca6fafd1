"""A real loopback swarm with robust aggregation and one poisoner (CAPASWARM_FAULT=poison:-100).

Four ``swarm join`` processes report to a coordinator whose manifest says
``hparams.aggregation = "centered_clip"``; one of them sends its pseudo-gradients sign-flipped
and scaled by 100 (the fault seam of ``node.host.faults``). Every reducer clips the poisoner's parts
and signs an ``OutlierReport``; the coordinator flags it once two distinct reducers named it in
each of three rounds. Checked: the honest nodes' validation loss keeps falling, and the dashboard's
snapshot flags the poisoner (and nobody else) within 3 rounds of its first all-reduce.
"""
from __future__ import annotations

import json
import urllib.request

import pytest

from node.host.config import NodeConfig
from node.cli.launcher import SwarmLauncher
from node.uplink.manifests import manifest_from_flags
from swarm_helpers import wait_until

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(420)]


def _state(url: str) -> dict:
    with urllib.request.urlopen(url + "/api/v1/state", timeout=5) as r:
        return json.loads(r.read())


def test_poisoner_is_clipped_and_flagged_while_honest_nodes_learn(tmp_path):
    manifest = manifest_from_flags(NodeConfig(run_id="poison-test", round_tokens=40_000, aggregation="centered_clip"))
    with SwarmLauncher(tmp_path, extra_args=["--status-interval-s", "5", "--heartbeat-interval-s", "5"]) as swarm:
        url = swarm.start_coordinator(manifest).url
        swarm.start_node("node-1")
        first = swarm.wait_for_maddr("node-1")
        for name in ("node-2", "node-3"):
            swarm.start_node(name, [first])
        swarm.start_node("poisoner", [first], env={"CAPASWARM_FAULT": "poison:-100"})
        honest = ["node-1", "node-2", "node-3"]
        sts = wait_until(swarm, lambda s: len(s) == 4 and all((s[n].get("rounds") or 0) >= 2 for n in s), 240,
                         "every node's first rounds")
        poisoner_id = sts["poisoner"]["peer_id"]
        joined_at = sts["poisoner"]["first_contribution"]
        bpb_then = {n: sts[n]["final_val_bpb"] for n in honest}
        sts = wait_until(swarm, lambda s: all(s[n]["rounds"] >= sts[n]["rounds"] + 4 for n in honest), 240,
                         "4 more rounds with the poisoner")
        for n in honest:
            st = sts[n]
            assert st["final_val_bpb"] < bpb_then[n] < st["initial_val_bpb"], \
                f"{n} stopped learning with a poisoner in the swarm: {st['initial_val_bpb']} -> {bpb_then[n]} -> {st['final_val_bpb']}"
        snap = _state(url)
        flagged = {p["peer_id"]: p for p in snap["peers"] if p["flagged"]}
        assert list(flagged) == [poisoner_id], f"flagged: {list(flagged)}, poisoner {poisoner_id}"
        flag = flagged[poisoner_id]["flag"]
        assert flag["reducers"] >= 2 and flag["max_ratio"] > 10
        assert flag["flagged_at"] <= joined_at + 2, f"flagged at round {flag['flagged_at']}, first all-reduce {joined_at}"
        assert flagged[poisoner_id]["confirmed_tokens"] == 0
