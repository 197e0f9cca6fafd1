"""Helpers for the coordinator tests (imported by ``conftest.py`` and by test modules).

- :func:`identity`: deterministic identities; :class:`Clock`: a fake wall clock;
- :func:`post`, :func:`state`: talk to an in-process app through ``aiohttp_client``;
- :class:`CoordinatorProcess`: a ``python -m coordinator`` subprocess (see the fixture); :func:`api_state`;
- :class:`SwarmFeed`: what the browser test needs from whatever feeds the coordinator, and
  :class:`ReporterFeed`, the default: three ``node.uplink.reporter.Reporter`` with distinct identities.
"""
from __future__ import annotations

import json
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
