"""Volunteers behind NAT routers (the namespace testbed's "home" nodes, nftables masquerade and a
stateful forward filter: replies in, nothing new in) join with the same one line as everyone else.

1. coordinator + 2 public nodes + 2 home nodes, every volunteer started with the same
   ``swarm join --coordinator URL ...`` line: the home nodes are told "private", become all-reduce
   clients, and contribute rounds that their group members confirm in the ledger; all replicas'
   state hashes agree; a third home node joining late downloads the state and trains.
2. one public seed + 3 home volunteers: the swarm still trains.

Root, ``ip`` and ``nft`` are required; without them these tests skip, except under CI=true where
they fail (a missing testbed must not pass for a working one).
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks import netns  # noqa: E402
from benchmarks.netns import Topology  # noqa: E402
from node.cli.launcher import Place, SwarmLauncher  # noqa: E402
from node.uplink.manifests import manifest_from_flags  # noqa: E402
from node.host.config import NodeConfig  # noqa: E402
from swarm_helpers import latest_agrees, wait_until  # noqa: E402

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(420)]

ANY = "/ip4/0.0.0.0/tcp/0"
PORT = 8080
BEATS = ["--heartbeat-interval-s", "2", "--status-interval-s", "2"]


@pytest.fixture(autouse=True)
def _needs_the_nat_testbed():
    missing = [t for t in ("ip", "tc", "nft") if shutil.which(t) is None]
    problem = "needs root" if os.geteuid() != 0 else (f"needs {', '.join(missing)}" if missing else None)
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the NAT testbed {problem} (install nftables: scripts/test.sh does)")
        pytest.skip(f"the NAT testbed {problem}")


def _tag() -> str:
    return f"n{os.getpid() % 1000}{int(time.time()) % 100}"


def _coordinator(swarm: SwarmLauncher, bed: netns.Testbed, round_tokens: int) -> None:
    manifest = manifest_from_flags(NodeConfig(run_id="nat", round_tokens=round_tokens, model="tiny"))
    swarm.start_coordinator(manifest, host=bed.hub_addr, port=PORT, prefix=bed.hub_prefix())


def _at(prefix: list[str]) -> Place:
    """Listen on every address of the namespace ``prefix`` runs in."""
    return Place(tuple(prefix), ANY)


def _ledger(workdir: Path) -> dict[str, dict]:
    with sqlite3.connect(f"file:{workdir / 'ledger.sqlite3'}?mode=ro", uri=True) as c:
        c.row_factory = sqlite3.Row
        return {row["peer_id"]: dict(row) for row in c.execute("SELECT * FROM peers")}


def _roles(sts: dict, names: list[str]) -> dict[str, tuple[str, str]]:
    return {n: (sts[n].get("role"), sts[n].get("reachability")) for n in names}


def test_public_and_home_volunteers_train_with_one_join_line(tmp_path):
    topo = Topology(_tag(), nodes=2, homes=3)
    with netns.Testbed(topo) as bed, SwarmLauncher(tmp_path, extra_args=BEATS) as swarm:
        _coordinator(swarm, bed, round_tokens=20_000)
        swarm.start_node("pub-1", place=_at(bed.prefix(1)))  # the organizer's seed: --new-swarm
        # every volunteer: the same line, whatever its network
        swarm.start_node("pub-2", [], place=_at(bed.prefix(2)))
        swarm.start_node("home-1", [], place=_at(bed.home_prefix(1)))
        swarm.start_node("home-2", [], place=_at(bed.home_prefix(2)))
        names = ["pub-1", "pub-2", "home-1", "home-2"]
        sts = wait_until(swarm, lambda s: len(s) == 4 and all(st["rounds"] >= 3 for st in s.values())
                         and latest_agrees(s, names), 240, "3 rounds on all four nodes, the newest one agreed")
        assert _roles(sts, names) == {"pub-1": ("reducer", "public"), "pub-2": ("reducer", "public"),
                                      "home-1": ("client", "private"), "home-2": ("client", "private")}
        homes = [sts["home-1"]["peer_id"], sts["home-2"]["peer_id"]]
        # every round since it first contributed carried its tokens
        for n in ("home-1", "home-2"):
            first = sts[n]["first_contribution"]
            assert first is not None, f"{n} never contributed"
            done = [int(r) for r, (_, tokens) in sts[n]["round_log"].items() if int(r) > first]
            assert done and all(sts[n]["round_log"][str(r)][1] > 0 for r in done), sts[n]["round_log"]
        ledger = wait_until_ledger(tmp_path, lambda rows: all(rows.get(p, {}).get("confirmed_tokens", 0) > 0 for p in homes),
                                   60, "confirmed tokens of the home nodes")
        for p in homes:
            assert ledger[p]["role"] == "client" and ledger[p]["reachability"] == "private"

        # a third home node joins late: it downloads the state from a reachable peer and trains
        swarm.start_node("home-3", [], place=_at(bed.home_prefix(3)))
        sts = wait_until(swarm, lambda s: "home-3" in s and (s["home-3"].get("rounds") or 0) >= 1, 180,
                         "home-3's first round")
        synced = sts["home-3"]["synced_from_peers"]
        assert synced is not None, "home-3 trained without downloading the swarm's state"
        assert synced["state_hash"] == sts["pub-1"]["hashes"].get(str(synced["round"]))


def test_one_public_seed_and_three_home_volunteers_still_train(tmp_path):
    topo = Topology(_tag(), nodes=1, homes=3)
    with netns.Testbed(topo) as bed, SwarmLauncher(tmp_path, extra_args=BEATS) as swarm:
        _coordinator(swarm, bed, round_tokens=15_000)
        swarm.start_node("seed", place=_at(bed.prefix(1)))
        for j in (1, 2, 3):
            swarm.start_node(f"home-{j}", [], place=_at(bed.home_prefix(j)))
        names = ["seed", "home-1", "home-2", "home-3"]
        sts = wait_until(swarm, lambda s: len(s) == 4 and all(st["rounds"] >= 3 for st in s.values())
                         and latest_agrees(s, names), 240, "3 rounds on all four nodes, the newest one agreed")
        assert all(sts[n]["role"] == "client" for n in names[1:]) and sts["seed"]["role"] == "reducer"
        assert all(sts[n]["final_val_bpb"] < sts[n]["initial_val_bpb"] for n in names)


def wait_until_ledger(workdir: Path, predicate, timeout: float, what: str) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    rows: dict[str, dict] = {}
    while time.monotonic() < deadline:
        rows = _ledger(workdir)
        if predicate(rows):
            return rows
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}: {rows}")
