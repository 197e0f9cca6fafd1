"""A real swarm behind the dashboard: three ``swarm join`` processes report to a coordinator.

Implements the ``SwarmFeed`` interface of ``coordinator_testing``. The nodes fetch the run
manifest from the coordinator (``--coordinator URL``), train the tiny model on 127.0.0.1 and
send signed reports after every round. One node's public name is an HTML/script payload, so
the browser test also sees escaping of real peer-supplied data.
"""
from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from node.cli.launcher import SwarmLauncher

NAMES = ["alice", "bob", "<img src=x onerror=alert(1)>"]


def _state(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/api/v1/state", timeout=5) as r:
        return json.loads(r.read())


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.3)


class RealSwarmFeed:
    def __init__(self, url: str, workdir: Path, startup_timeout: float = 120.0):
        self.url = url
        self.swarm = SwarmLauncher(workdir, coordinator_url=url, extra_args=["--heartbeat-interval-s", "5"])
        first = self.swarm.start_node("n0", extra=["--public-name", NAMES[0]])
        del first
        maddr = self.swarm.wait_for_maddr("n0", startup_timeout)
        for i, name in enumerate(NAMES[1:], start=1):
            self.swarm.start_node(f"n{i}", [maddr], extra=["--public-name", name])
        _wait(lambda: len(self.swarm.statuses()) == 3 and all(s.get("peer_id") for s in self.swarm.statuses().values()),
              startup_timeout, "three nodes")
        self.names = {st["peer_id"]: st["public_name"] for st in self.swarm.statuses().values()}

    def _loss_points(self) -> int:
        return len([p for p in _state(self.url)["loss"] if p.get("val_bpb") is not None])

    def advance(self, rounds: int, timeout: float) -> None:
        target = self._loss_points() + rounds
        _wait(lambda: self._loss_points() >= target, timeout, f"{rounds} more rounds in the ledger")

    def settle(self, timeout: float) -> dict[str, int]:
        self.swarm.stop()  # SIGTERM: each node flushes its outbox before it exits
        own = {st["peer_id"]: int(st["tokens_contributed"]) for st in self.swarm.statuses().values()}
        leftovers = [p for name in self.swarm.procs for p in (self.swarm.state_dir(name) / "outbox").glob("*.msg")]
        assert not leftovers, f"undelivered reports after shutdown: {leftovers}"

        def ledger_matches() -> bool:
            peers = {p["peer_id"]: p["tokens"] for p in _state(self.url)["peers"]}
            return peers == own

        _wait(ledger_matches, timeout, "the ledger to hold every node's tokens")
        return own

    def close(self) -> None:
        self.swarm.stop()
