"""``swarm join --role validator`` on 127.0.0.1: a free rider is caught by a spot check.

Two honest nodes and a free rider (``CAPASWARM_FAULT=poison:0``: it trains, claims its tokens, and
puts zeros into the all-reduce) report to a coordinator that lists the validator's peer id
(``--validator``, ``--flag-quorum 1``). The validator trains nothing: it follows the swarm's global
state, downloads each peer's last update (the one it put into the all-reduce) and judges it on the
peer's own data windows. Checked: the free rider gets ``spot_check`` flags and its flagged rounds
lose their credit; the honest nodes are checked too and never flagged; the validator's verdicts are
what its status says it sent.
"""
from __future__ import annotations

import json
import time
import urllib.request

import pytest

from node.host.config import NodeConfig
from node.cli.launcher import SwarmLauncher
from node.uplink.manifests import manifest_from_flags
from protocol import Identity
from swarm_helpers import wait_until

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(300)]


def _state(url: str) -> dict:
    with urllib.request.urlopen(url + "/api/v1/state", timeout=5) as r:
        return json.loads(r.read())


def test_a_validator_flags_a_free_rider_and_passes_honest_nodes(tmp_path):
    manifest = manifest_from_flags(NodeConfig(run_id="validator-test", round_tokens=30_000))
    with SwarmLauncher(tmp_path, extra_args=["--status-interval-s", "2", "--heartbeat-interval-s", "5"]) as swarm:
        validator_id = Identity.load_or_create(swarm.state_dir("validator") / "identity.key").peer_id
        url = swarm.start_coordinator(manifest, args=["--validator", validator_id, "--flag-quorum", "1"]).url
        swarm.start_node("node-1")
        first = swarm.wait_for_maddr("node-1")
        swarm.start_node("node-2", [first])
        swarm.start_node("free-rider", [first], env={"CAPASWARM_FAULT": "poison:0"})
        swarm.start_node("validator", [first], extra=["--role", "validator"])
        sts = wait_until(swarm, lambda s: len(s) == 4 and s["validator"].get("verdicts", {}).get("ok", 0) >= 1
                         and sum(n for r, n in s["validator"]["verdicts"].items() if r != "ok") >= 1, 200,
                         "the validator's verdicts: one passed, one failed")
        ids = {n: sts[n]["peer_id"] for n in ("node-1", "node-2", "free-rider")}
        assert sts["validator"]["role"] == "validator" and sts["validator"]["tokens"] == 0
        # the verdict travels through the validator's outbox, and the rider's claim through its own: the
        # ledger shows both a moment after the validator counted its verdict (bounded wait, then the asserts)
        deadline = time.monotonic() + 30
        while True:
            rows = {p["peer_id"]: p for p in _state(url)["peers"]}
            rider = rows.get(ids["free-rider"], {"flags": {}, "unconfirmed_tokens": 0})
            if (rider["flags"].get("spot_check") and rider["unconfirmed_tokens"] > 0) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert rider["flags"].get("spot_check", 0) >= 1, f"the free rider was not flagged: {rider}"
        assert rider["unconfirmed_tokens"] > 0, "a flagged round must lose its credit"
        for n in ("node-1", "node-2"):
            assert rows[ids[n]]["flags"] == {}, f"{n} was flagged: {rows[ids[n]]['flags']}"
        log = (swarm.state_dir("validator") / "node.log").read_text()
        honest_checked = [ids[n] for n in ("node-1", "node-2") if f"spot check of {ids[n]}" in log]
        assert honest_checked, "no honest node was checked"
        assert f"spot check of {ids['free-rider']}" in log
