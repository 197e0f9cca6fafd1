"""Helpers for the coordinator tests (imported by ``conftest.py`` and by test modules).

- :func:`identity`: deterministic identities; :class:`Clock`: a fake wall clock;
- :func:`post`, :func:`state`: talk to an in-process app through ``aiohttp_client``;
- :class:`CoordinatorProcess`: a ``python -m coordinator`` subprocess (see the fixture);
- :class:`SwarmFeed`: what the browser test needs from whatever feeds the coordinator, and
  :class:`ReporterFeed`, the default: three ``node.reporter.Reporter`` with distinct identities.
"""
from __future__ import annotations

import json
import math
import random
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from coordinator.keys import HUB
from node.reporter import Reporter
from protocol import ContributionReport, GroupClaim, Hardware, Heartbeat, Identity

RUN_ID = "test-run"
REPO = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0


def identity(i: int) -> Identity:
    """A deterministic identity per small integer."""
    return Identity.from_seed(bytes([i % 256]) * 31 + bytes([i // 256]))


class Clock:
    """A fake wall clock: tests move time explicitly."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def post(client: Any, body: bytes, content_type: str = "application/msgpack") -> tuple[int, dict[str, Any]]:
    resp = await client.post("/api/v1/reports", data=body, headers={"Content-Type": content_type})
    return resp.status, await resp.json()


async def state(client: Any, refresh: bool = True) -> dict[str, Any]:
    """The snapshot, rebuilt first (the hub is the app's, so this is what the page would see)."""
    if refresh:
        await client.server.app[HUB].refresh()
    resp = await client.get("/api/v1/state")
    assert resp.status == 200
    return await resp.json()


# --- subprocesses ---------------------------------------------------------------------------


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


@dataclass
class CoordinatorProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def state(self) -> dict[str, Any]:
        return json.loads(http_get(self.url + "/api/v1/state"))

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# --- the dashboard's feed -------------------------------------------------------------------


class SwarmFeed(Protocol):
    """What the browser test needs from whatever feeds the coordinator.

    ``url``: the coordinator the nodes report to. ``names``: peer id -> public name.
    ``advance(rounds, timeout)``: return once ``rounds`` more rounds are in the ledger.
    ``settle(timeout)``: stop producing, wait until every node's reports are delivered, and
    return each node's own count of tokens that went into the model, by peer id.
    """

    url: str
    names: dict[str, str]

    def advance(self, rounds: int, timeout: float) -> None: ...

    def settle(self, timeout: float) -> dict[str, int]: ...


@dataclass
class _Node:
    identity: Identity
    reporter: Reporter
    name: str
    hardware: Hardware
    price: float
    base_tokens: int
    seq: int = 0
    tokens: int = 0  # the node's own count: tokens of rounds that went into the model


@dataclass
class ReporterFeed:
    """Three reporters with distinct identities, each sending what a training node would: a
    heartbeat on joining, then per round a ContributionReport with the group's claims. One
    node's round 2 fails (ok=False). Loss falls round by round."""

    url: str
    outbox_root: Path
    run_id: str = RUN_ID
    nodes: list[_Node] = field(default_factory=list)
    round: int = 0
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    def __post_init__(self) -> None:
        specs = [
            ("alice-h100", Hardware(device="NVIDIA H100 80GB HBM3", count=1, memory_gb=80.0), 2.49, 6000),
            ("bob's 4090", Hardware(device="NVIDIA GeForce RTX 4090", count=1, memory_gb=24.0), 0.0, 3000),
            ("<img src=x onerror=alert(1)>", Hardware(device="cpu", count=1, memory_gb=16.0), 0.0, 800),
        ]
        for i, (name, hardware, price, base) in enumerate(specs):
            ident = identity(100 + i)
            reporter = Reporter(ident, self.url, self.outbox_root / f"node{i}", timeout=5.0, backoff_base=0.05, backoff_cap=0.5)
            reporter.start()
            node = _Node(ident, reporter, name, hardware, price, base)
            self.nodes.append(node)
            node.reporter.submit(Heartbeat(
                run_id=self.run_id, peer_id=ident.peer_id, seq=node.seq, sent_at=time.time(), round=0,
                status="joining", hardware=hardware, price_per_hour=price, public_name=name,
            ))
            node.seq += 1

    @property
    def names(self) -> dict[str, str]:
        return {n.identity.peer_id: n.name for n in self.nodes}

    def _round(self) -> None:
        self.round += 1
        r = self.round
        claims = {n.identity.peer_id: n.base_tokens + self.rng.randrange(0, 500) for n in self.nodes}
        group = [GroupClaim(peer_id=p, tokens=t) for p, t in claims.items()]
        for i, n in enumerate(self.nodes):
            ok = not (i == 2 and r == 2)
            tokens = claims[n.identity.peer_id]
            n.reporter.submit(ContributionReport(
                run_id=self.run_id, peer_id=n.identity.peer_id, seq=n.seq, sent_at=time.time(), round=r,
                tokens=tokens, samples=tokens // 128, compute_s=1.5, wall_s=2.0 + i * 0.1,
                bytes_sent=400_000, bytes_received=400_000, payload_bytes=1_600_000, group=group if ok else [],
                hardware=n.hardware, price_per_hour=n.price, public_name=n.name,
                val_bpb=2.0 + 3.0 * math.exp(-0.15 * r) + self.rng.uniform(-0.02, 0.02) if ok else None,
                train_loss=1.5 * math.exp(-0.1 * r) + 0.8, ok=ok,
            ))
            n.seq += 1
            if ok:
                n.tokens += tokens

    def _delivered(self, timeout: float) -> None:
        wait_until(lambda: all(n.reporter.pending == 0 for n in self.nodes), timeout, what="reports delivered")
        rejected = [(n.name, n.reporter.last_error) for n in self.nodes if n.reporter.rejected]
        assert not rejected, f"the coordinator refused feed reports: {rejected}"

    def advance(self, rounds: int, timeout: float) -> None:
        for _ in range(rounds):
            self._round()
        self._delivered(timeout)

    def settle(self, timeout: float) -> dict[str, int]:
        self._delivered(timeout)
        return {n.identity.peer_id: n.tokens for n in self.nodes}

    def close(self) -> None:
        for n in self.nodes:
            n.reporter.stop(flush_timeout=2.0)
