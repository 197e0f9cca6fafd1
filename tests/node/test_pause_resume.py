"""Pause and resume through ``swarm ctl`` in a loopback swarm of 3 real nodes.

While paused, the node contributes nothing (no tokens, no rounds, in no group's all-reduce) and
the other two keep training; after ``swarm ctl resume`` it downloads the swarm's state and holds
the same global state hash as the others within 2 rounds. The paused node's real ``/metrics``
endpoint is scraped on the way.
"""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest

from node.cli.launcher import SwarmLauncher
from swarm_helpers import wait_until

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(300)]

OTHERS = ["node-1", "node-2"]


def ctl(swarm: SwarmLauncher, name: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "node", "ctl", *args, "--json", "--state-dir", str(swarm.state_dir(name))],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def scrape(port: int) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {s.name + "".join(f"[{v}]" for v in s.labels.values() if s.name.endswith("gate_reason")): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_paused_node_contributes_nothing_and_agrees_within_two_rounds_after_resume(tmp_path):
    fast_status = ["--status-interval-s", "1"]
    with SwarmLauncher(tmp_path, run_id="test-pause", round_tokens=30_000, extra_args=fast_status) as swarm:
        swarm.start_node("node-1")
        maddr = swarm.wait_for_maddr("node-1")
        swarm.start_node("node-2", [maddr])
        swarm.start_node("node-3", [maddr], extra=["--metrics-port", "0"])
        sts = wait_until(swarm, lambda s: len(s) == 3 and all(s[n]["rounds"] >= 1 for n in s), 150,
                         "every node to contribute a round")
        peer3 = sts["node-3"]["peer_id"]
        port = sts["node-3"]["metrics_port"]
        m = scrape(port)
        assert m["capaswarm_node_tokens_total"] > 0 and m["capaswarm_node_paused"] == 0

        reply = ctl(swarm, "node-3", "pause", "--reason", "test")
        assert reply["ok"] and "paused" in reply["gate"]
        sts = wait_until(swarm, lambda s: s["node-3"]["status"] == "paused", 120, "node-3 to pause")
        paused = sts["node-3"]
        at_pause = {n: sts[n]["rounds"] for n in OTHERS}
        assert scrape(port)["capaswarm_node_paused"] == 1
        assert scrape(port)["capaswarm_node_gate_reason[paused]"] == 1

        # the others keep training: two more rounds each, none with node-3 in the group
        groups: dict[tuple[str, int], list[str]] = {}

        def two_more_rounds(s: dict) -> bool:
            for n in OTHERS:
                if s[n]["rounds"] > at_pause[n]:
                    groups[(n, s[n]["rounds"])] = s[n]["last_group"]
            return all(s[n]["rounds"] >= at_pause[n] + 2 for n in OTHERS)

        sts = wait_until(swarm, two_more_rounds, 150, "two rounds of the others while node-3 is paused")
        assert groups and all(peer3 not in g for g in groups.values()), f"node-3 was in a group while paused: {groups}"
        assert all(len(g) == 2 for g in groups.values()), groups  # node-1 and node-2 averaged together
        now3 = sts["node-3"]
        assert now3["status"] == "paused"
        assert (now3["tokens"], now3["rounds"], now3["round_log"]) == (paused["tokens"], paused["rounds"], paused["round_log"])
        assert scrape(port)["capaswarm_node_tokens_total"] == paused["tokens"]

        # resume: node-3 downloads the state, then agrees with the others within 2 rounds
        swarm_round = max(int(r) for n in OTHERS for r in sts[n]["hashes"])
        reply = ctl(swarm, "node-3", "resume")
        assert reply["ok"] and reply["gate"] == {}

        def agrees_within_two(s: dict) -> bool:
            mine = s["node-3"]["hashes"]
            return any(int(r) <= swarm_round + 2 and int(r) >= swarm_round and all(s[n]["hashes"].get(r) == h for n in OTHERS)
                       for r, h in mine.items())

        sts = wait_until(swarm, lambda s: agrees_within_two(s) and s["node-3"]["rounds"] > paused["rounds"], 150,
                         "node-3 to agree on the state and contribute again")
        assert sts["node-3"]["synced_from_peers"]["round"] >= swarm_round
        assert sts["node-3"]["tokens"] > paused["tokens"]
        assert sts["node-3"]["pauses"] == 1
        print(f"paused {sts['node-3']['paused_s']} s while the others did {len(groups)} rounds between them; node-3 resynced "
              f"at round {sts['node-3']['synced_from_peers']['round']} (swarm at {swarm_round} when it resumed)")
