"""Bootstrap addresses: what nodes claim in their signed heartbeats, confirmed by a dial-back.

A node puts the multiaddrs it listens on into its heartbeats. The coordinator never lists a
claim as such: it dials the address back with a real libp2p handshake (``node/net/dialback.py``,
run as a separate short-lived process with a timeout: the coordinator may not import libp2p),
and only addresses that reached the claiming peer's key go into ``GET /api/v1/peers``. The
verdict ("public": dialable, "private": no claimed address answered) also goes back to the
node in the heartbeat's HTTP response, which is how a node behind NAT learns that it is one.

Rules (the trust rule is hard to undo, so here is why):

* only addresses on the IP the heartbeat came from are dialed (``same_ip``): otherwise any
  client could make the coordinator dial arbitrary hosts and ports (a port scanner for hire).
  Behind a reverse proxy, set ``trust_forwarded_for`` so the client's IP is read from the
  proxy's ``X-Forwarded-For``;
* the dialed address always ends in the *signer's* peer id, so the handshake proves the key;
* probes are bounded: ``dialback_concurrency`` at once, ``dialback_queue`` waiting at most, one per
  peer at a time, each killed after its timeout; a verdict is reused for ``dialback_recheck_s``
  (``dialback_retry_s`` after a failure) unless the claimed addresses change;
* the book is memory only (bounded to ``peerbook_max`` peers): after a restart it refills
  within one heartbeat interval.

``candidates`` is pure; ``PeerBook`` owns the probe tasks and cancels them at shutdown.
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["MAX_CANDIDATES", "PeerBook", "candidates", "run_probe"]

logger = logging.getLogger(__name__)

MAX_CANDIDATES = 4  # addresses dialed per peer per probe
Prober = Callable[[list[str]], Awaitable[dict[str, bool]]]


def candidates(peer_id: str, maddrs: Sequence[str], remote_ip: str | None, *, same_ip: bool = True) -> list[str]:
    """The claimed addresses worth dialing, as ``/ip4|ip6/ADDR/tcp/PORT/p2p/<peer_id>``, deduplicated.

    Dropped: anything but plain TCP over an IP literal (relay circuits, DNS, QUIC), unspecified
    addresses, a ``/p2p/`` suffix naming another peer, and, with ``same_ip``, any IP other than
    ``remote_ip`` (the address the heartbeat came from).
    """
    out: list[str] = []
    for maddr in maddrs:
        parts = maddr.strip().split("/")
        if len(parts) not in (5, 7) or parts[0] != "" or parts[1] not in ("ip4", "ip6") or parts[3] != "tcp":
            continue
        if len(parts) == 7 and (parts[5] != "p2p" or parts[6] != peer_id):
            continue
        try:
            ip = ipaddress.ip_address(parts[2])
            port = int(parts[4])
        except ValueError:
            continue
        if ip.is_unspecified or ip.is_multicast or not 0 < port < 65536:
            continue
        if same_ip and (remote_ip is None or _ip(remote_ip) != ip):
            continue
        norm = f"/{parts[1]}/{ip}/tcp/{port}/p2p/{peer_id}"
        if norm not in out:
            out.append(norm)
        if len(out) >= MAX_CANDIDATES:
            break
    return out


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


async def run_probe(command: Sequence[str], maddrs: list[str], timeout_s: float) -> dict[str, bool]:
    """Run the dial-back program on ``maddrs``; ``{maddr: dialed}``. Killed (whole process group)
    past its time; any failure of the program itself means "not confirmed"."""
    proc = await asyncio.create_subprocess_exec(
        *command, "--timeout", str(timeout_s), *maddrs,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=timeout_s * len(maddrs) + 15.0)
    except BaseException:  # timeout or cancellation (shutdown): no probe outlives its wait
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(proc.wait(), 5.0)
        raise
    try:
        results = json.loads(out.decode().strip().splitlines()[-1])["results"]
        return {m: bool(results.get(m, {}).get("ok")) for m in maddrs}
    except (ValueError, KeyError, IndexError, AttributeError, TypeError):
        logger.warning("dial-back probe exited %s without a result", proc.returncode)
        return {m: False for m in maddrs}


@dataclass
class _Entry:
    claimed: tuple[str, ...] = ()  # candidates from the latest heartbeat
    last_heartbeat: float = 0.0
    verified: tuple[str, ...] = ()  # the addresses a dial-back reached
    verdict: str = "unknown"  # "public" | "private" | "unknown" (never probed, or nothing to dial)
    checked_at: float | None = None
    checked: tuple[str, ...] = ()  # what the last probe dialed
    probing: bool = False
    fails: int = field(default=0)


class PeerBook:
    """Claimed -> confirmed addresses, and the probe tasks that confirm them."""

    def __init__(self, *, prober: Prober, clock: Callable[[], float], concurrency: int = 2, queue: int = 64,
                 recheck_s: float = 600.0, retry_s: float = 120.0, fresh_s: float = 120.0, listed: int = 32,
                 max_peers: int = 10_000) -> None:
        self.prober, self.clock = prober, clock
        self.recheck_s, self.retry_s, self.fresh_s, self.listed, self.max_peers = recheck_s, retry_s, fresh_s, listed, max_peers
        self.queue = queue
        self.probes = 0  # probes run (a metric for tests and /healthz)
        self._sem = asyncio.Semaphore(concurrency)
        self._entries: dict[str, _Entry] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def verdict(self, peer_id: str) -> str:
        entry = self._entries.get(peer_id)
        return entry.verdict if entry else "unknown"

    def observe(self, peer_id: str, maddrs: Sequence[str], remote_ip: str | None, *, same_ip: bool = True) -> str:
        """A heartbeat from ``peer_id`` (its signature already checked) claims ``maddrs``; returns the
        current verdict and starts a probe when one is due."""
        now = self.clock()
        entry = self._entries.get(peer_id)
        if entry is None:
            if len(self._entries) >= self.max_peers:
                oldest = min(self._entries, key=lambda p: self._entries[p].last_heartbeat)
                if not self._entries[oldest].probing:
                    del self._entries[oldest]
            entry = self._entries[peer_id] = _Entry()
        entry.last_heartbeat = now
        entry.claimed = tuple(candidates(peer_id, maddrs, remote_ip, same_ip=same_ip))
        if maddrs:  # an address the node no longer claims (it restarted on another port) is not handed out
            entry.verified = tuple(m for m in entry.verified if m in entry.claimed)
        if not entry.claimed:
            if not maddrs:
                return entry.verdict  # an older node, or one not yet listening: nothing new to judge
            entry.verified, entry.verdict, entry.checked_at, entry.checked = (), "private", now, ()
            return entry.verdict
        wait = self.recheck_s if entry.verdict == "public" else self.retry_s
        due = entry.checked != entry.claimed or entry.checked_at is None or now - entry.checked_at >= wait
        if due and not entry.probing and len(self._tasks) < self.queue:
            entry.probing = True
            task = asyncio.get_running_loop().create_task(
                self._probe(peer_id, entry, entry.claimed), name=f"dialback-{peer_id[-6:]}"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return entry.verdict

    async def _probe(self, peer_id: str, entry: _Entry, maddrs: tuple[str, ...]) -> None:
        try:
            async with self._sem:
                self.probes += 1
                try:
                    results = await self.prober(list(maddrs))
                except (OSError, asyncio.TimeoutError) as e:
                    logger.warning("dial-back of %s failed to run: %s", peer_id[-8:], e)
                    results = {}
            entry.verified = tuple(m for m in maddrs if results.get(m))
            entry.verdict = "public" if entry.verified else "private"
            entry.checked_at, entry.checked = self.clock(), maddrs
            logger.info("dial-back %s: %s (%s)", peer_id[-8:], entry.verdict, ", ".join(entry.verified) or "no address answered")
        finally:
            entry.probing = False

    def listing(self) -> list[dict[str, object]]:
        """Confirmed peers that sent a heartbeat within ``fresh_s``, newest first, at most ``listed``."""
        now = self.clock()
        fresh = [(p, e) for p, e in self._entries.items() if e.verified and now - e.last_heartbeat <= self.fresh_s]
        fresh.sort(key=lambda pe: -pe[1].last_heartbeat)
        return [{"peer_id": p, "maddrs": list(e.verified), "verified_at": e.checked_at, "last_heartbeat": e.last_heartbeat}
                for p, e in fresh[: self.listed]]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
