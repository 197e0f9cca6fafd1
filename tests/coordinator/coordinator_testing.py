"""Helpers for the coordinator tests (imported by ``conftest.py`` and by test modules).

- :func:`identity`: deterministic identities; :class:`Clock`: a fake wall clock;
- :func:`post`, :func:`state`: talk to an in-process app through ``aiohttp_client``;
- :class:`CoordinatorProcess`: a ``python -m coordinator`` subprocess (see the fixture); :func:`api_state`;
- :class:`ReportStream`: reporters sending a known stream from a thread (the crash and failover tests),
  and :func:`ledger_contents`, what a ledger holds of it (either engine);
- :class:`SwarmFeed`: what the browser test needs from whatever feeds the coordinator, and
  :class:`ReporterFeed`, the default: three ``node.uplink.reporter.Reporter`` with distinct identities.
"""
from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from coordinator.keys import HUB
from node.cli.launcher import Coordinator
from protocol import PROTOCOL_VERSION, Identity, pack

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


def api_state(url: str) -> dict[str, Any]:
    """A running coordinator's ``/api/v1/state``."""
    return json.loads(http_get(url + "/api/v1/state"))


@dataclass
class CoordinatorProcess(Coordinator):
    """A ``python -m coordinator`` subprocess started by ``node.cli.launcher.start_coordinator`` (see the
    ``coordinator_process`` fixture), with its snapshot at hand."""

    def state(self) -> dict[str, Any]:
        return api_state(self.url)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class ReportStream:
    """``nodes`` reporters (``node.uplink.reporter.Reporter``: the node's own outbox and retry) to ``url``,
    fed from a thread with ``per_node`` messages each, every tenth a heartbeat, ``pause_s`` between rounds
    of them. ``produced``: (peer, seq) -> tokens (0 for heartbeats), whatever was delivered."""

    def __init__(self, url: str, outboxes: Path, *, first_identity: int, nodes: int, per_node: int,
                 pause_s: float) -> None:
        from node.uplink.reporter import Reporter

        self.idents = [identity(first_identity + i) for i in range(nodes)]
        self.reporters = [Reporter(ident, url, outboxes / f"outbox{i}", timeout=2.0, backoff_base=0.05, backoff_cap=0.3)
                          for i, ident in enumerate(self.idents)]
        self.per_node, self.pause_s = per_node, pause_s
        self.produced: dict[tuple[str, int], int] = {}
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._produce, daemon=True)

    def _produce(self) -> None:
        from protocol import ContributionReport, Heartbeat

        for seq in range(self.per_node):
            for i, (ident, reporter) in enumerate(zip(self.idents, self.reporters)):
                msg: ContributionReport | Heartbeat
                if seq % 10 == 0:
                    msg, tokens = Heartbeat(run_id=RUN_ID, peer_id=ident.peer_id, seq=seq, sent_at=time.time(), round=seq,
                                            status="training"), 0
                else:
                    tokens = 1000 * (i + 1) + seq
                    msg = ContributionReport(run_id=RUN_ID, peer_id=ident.peer_id, seq=seq, sent_at=time.time(), round=seq,
                                             tokens=tokens, samples=1, compute_s=0.1, wall_s=0.2, bytes_sent=1,
                                             bytes_received=1)
                reporter.submit(msg)
                self.produced[(ident.peer_id, seq)] = tokens
            time.sleep(self.pause_s)
        self.done.set()

    def start(self) -> None:
        for r in self.reporters:
            r.start()
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    @property
    def delivered(self) -> int:
        return sum(r.delivered for r in self.reporters)

    @property
    def pending(self) -> int:
        return sum(r.pending for r in self.reporters)

    def errors(self) -> list[str | None]:
        """The last error of each reporter that had a message refused (none, when all is well)."""
        return [r.last_error for r in self.reporters if r.rejected]

    def totals(self) -> dict[str, int]:
        return {i.peer_id: sum(t for (p, _), t in self.produced.items() if p == i.peer_id) for i in self.idents}

    def stop(self) -> None:
        for r in self.reporters:
            r.stop(flush_timeout=0.0)


def ledger_contents(db: str | Path) -> tuple[list[tuple[str, int]], int, dict[str, int]]:
    """What the ledger at ``db`` holds: every message's (peer, seq), the number of reports, tokens per peer."""
    from coordinator.database import Database

    conn = Database(db).connect()
    try:
        keys = [(row[0], row[1]) for row in conn.execute("SELECT peer_id, seq FROM messages").fetchall()]
        reports = conn.execute("SELECT COUNT(*) FROM reports").fetchone()[0]
        totals = {row[0]: row[1] for row in conn.execute("SELECT peer_id, tokens FROM peers").fetchall()}
    finally:
        conn.close()
    return keys, reports, totals


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


def signed_raw(signer: Identity, wire: dict[str, Any]) -> bytes:
    """A report envelope by ``signer`` around any payload map (the documented v1 wire format), so a
    test can send what ``protocol.seal`` would refuse to build."""
    payload = pack(wire)
    signed = b"capaswarm/envelope\x00" + pack([PROTOCOL_VERSION, "report", signer.peer_id, payload])
    return pack([PROTOCOL_VERSION, "report", signer.peer_id, payload, signer.sign(signed)])


def rejected_metric(text: str, reason: str) -> float:
    """``capaswarm_messages_rejected_total{reason=...}`` from a /metrics page."""
    import re

    match = re.search(rf'capaswarm_messages_rejected_total\{{reason="{reason}"\}} ([0-9.]+)', text)
    assert match, f"no metric line for {reason}"
    return float(match.group(1))
