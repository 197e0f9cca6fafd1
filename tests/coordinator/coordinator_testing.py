"""Helpers for the coordinator tests (imported by ``conftest.py`` and by test modules).

- :func:`identity`: deterministic identities; :class:`Clock`: a fake wall clock;
- :func:`post`, :func:`state`: talk to an in-process app through ``aiohttp_client``;
- :class:`CoordinatorProcess`: a ``python -m coordinator`` subprocess (see the fixture);
- :class:`SwarmFeed`: what the browser test needs from whatever feeds the coordinator, and
  :class:`ReporterFeed`, the default: three ``node.reporter.Reporter`` with distinct identities.
"""
from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from coordinator.keys import HUB
from protocol import Identity

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
