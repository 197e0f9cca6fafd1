"""Join by the coordinator URL alone, on 127.0.0.1.

The organizer's seed node starts with ``--new-swarm --coordinator URL``; its heartbeat names the
addresses it listens on, the coordinator dials them back (``node/net/dialback.py`` in a probe process)
and lists them at ``/api/v1/peers``. A volunteer then types only
``swarm join --coordinator URL --public-name NAME`` (plus loopback test plumbing: state dir, listen
address): it must find the seed through the coordinator, train rounds with it, and end with the
same global state. Every node learns from the dial-back that it is reachable ("public"); in auto
mode that makes it a reducer (it starts as a client and restarts its DHT as a server); a third node
forced to ``--role client`` contributes every round without reducing anything.
"""
from __future__ import annotations

import json
import urllib.request

import pytest

from node.host.config import NodeConfig
from node.cli.launcher import SwarmLauncher
from node.uplink.manifests import manifest_from_flags
from swarm_helpers import latest_agrees, wait_until

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(240)]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def test_a_volunteer_joins_with_the_coordinator_url_alone(tmp_path):
    beats = ["--heartbeat-interval-s", "2", "--status-interval-s", "2"]
    with SwarmLauncher(tmp_path, extra_args=beats) as swarm:
        url = swarm.start_coordinator(manifest_from_flags(NodeConfig(run_id="by-url", round_tokens=20_000))).url
        join = _get(url + "/api/v1/join")
        assert join["run_key"] and f"--run-key {join['run_key']}" in join["join_line"]
        swarm.start_node("seed")  # --new-swarm --coordinator URL
        # the volunteer's command: no --initial-peers, no --new-swarm; the run key pinned as printed
        swarm.start_node("volunteer", initial_peers=[], extra=["--run-key", join["run_key"]])
        # and one that says it is a client (as a node behind NAT would be told): it sends, reduces nothing
        swarm.start_node("client", initial_peers=[], extra=["--role", "client"])
        names = ["seed", "volunteer", "client"]
        sts = wait_until(swarm, lambda s: len(s) == 3 and all(st["rounds"] >= 3 for st in s.values()) and latest_agrees(s, names),
                         180, "3 rounds on all nodes, the newest one agreed")
        assert sts["client"]["tokens_contributed"] > 0 and sts["client"]["first_contribution"] is not None
        peers = _get(url + "/api/v1/peers")["peers"]
        listed = {p["peer_id"] for p in peers}
        assert sts["seed"]["peer_id"] in listed, f"the seed was never confirmed by a dial-back: {peers}"
        for p in peers:
            assert all(m.startswith("/ip4/127.0.0.1/tcp/") and m.endswith("/p2p/" + p["peer_id"]) for m in p["maddrs"])
        log = (swarm.state_dir("volunteer") / "node.log").read_text()
        assert "bootstrapping from 1 peer address" in log or "bootstrapping from 2 peer address" in log, log[-2000:]
        sts = wait_until(swarm, lambda s: all(st.get("reachability") == "public" for st in s.values()), 60,
                         "every node told it is reachable")
        assert {n: sts[n]["role"] for n in names} == {"seed": "reducer", "volunteer": "reducer", "client": "client"}
        state = _get(url + "/api/v1/state")
        rows = {p["peer_id"]: p for p in state["peers"]}
        for name in names:
            row = rows[sts[name]["peer_id"]]
            assert row["software_version"] == state["run"]["software_version"] and row["version_status"] == "ok"
            assert row["reachability"] == "public" and row["role"] == sts[name]["role"]
        assert state["run"]["join_line"] == join["join_line"]
