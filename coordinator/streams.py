"""Live dashboard streams (``GET /api/v1/events``, server-sent events): who may hold one, when it ends.

**Admission** (:class:`StreamSlots`): at most ``sse_max_clients`` streams in all and
``sse_per_ip`` per client address, the per-address limit below the cap (``config.py`` refuses
anything else), so one address can never hold every slot. An IPv6 client counts by its /64 (one
host is routinely given a whole /64: per address, it could open streams without end). The
address is the connection's peer, or behind a trusted proxy (``--trust-forwarded-for``) the last
``X-Forwarded-For`` entry (``routes.client_ip``): without that every viewer behind the proxy
shares one address and ``sse_per_ip`` viewers lock out the rest. A refusal is a 429 with a
reason (``too_many_streams``: this address holds its share; ``streams_full``: every slot is
taken), a detail the page shows, and ``Retry-After``; it is counted like any rejection.

**Ending** (:func:`serve_stream`): a stream is one-way, so the server cannot ask a client whether
it reads; what aiohttp does show is whether the bytes written leave. A stream is *idle* (its
client takes nothing: a stalled or malicious reader, a host gone without a FIN) when bytes
stay in the transport's buffer, the kernel's socket buffers full, for ``sse_write_timeout_s``,
or a write cannot finish in that time; it is then aborted. The kernel buffers a few hundred KB to
a few MB first, so against a client that never reads but whose TCP stack acknowledges, the real
bound is the **lifetime**: every stream ends after ``sse_max_lifetime_s`` (a normal end: an
EventSource or the page reconnects at once and gets the whole snapshot, so a viewer loses
nothing), and a slot held must be won again. Each end is counted by why
(``capaswarm_sse_closed_total{why}``: ``gone``, ``idle``, ``lifetime``, ``shutdown``).
"""
from __future__ import annotations

import asyncio
import ipaddress
import time
from collections import Counter
from typing import Protocol

from aiohttp import web

from .config import CoordinatorConfig


__all__ = ["StreamSlots", "address_key", "serve_stream"]


def address_key(address: str) -> str:
    """What a stream is counted under: an IPv4 address itself, an IPv6 address's /64 (an IPv4-mapped
    one as IPv4), anything unparsable as itself."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class StreamSlots:
    """Open streams, in all and per :func:`address_key`; used from the event loop only."""

    def __init__(self, max_clients: int, per_ip: int) -> None:
        self.max_clients, self.per_ip = max_clients, per_ip
        self.open = 0
        self.by_address: Counter[str] = Counter()

    def admit(self, address: str) -> tuple[str, str] | None:
        """Take a slot for ``address`` and return None, or return ``(reason, detail)`` and take nothing."""
        key = address_key(address)
        if self.by_address[key] >= self.per_ip:
            return "too_many_streams", (f"your address already holds {self.per_ip} live streams (the limit per "
                                        "address); close a tab, or wait")
        if self.open >= self.max_clients:
            return "streams_full", f"all {self.max_clients} live streams are taken; showing snapshots by polling"
        self.open += 1
        self.by_address[key] += 1
        return None

    def release(self, address: str) -> None:
        key = address_key(address)
        self.open -= 1
        self.by_address[key] -= 1
        if self.by_address[key] <= 0:
            del self.by_address[key]


class Feed(Protocol):
    """What a stream follows: the hub's current snapshot (``coordinator.hub.Hub``, which owns the
    stream slots and so cannot be imported from here)."""

    closing: bool
    version: int
    body: bytes

    async def wait_newer(self, version: int, timeout: float) -> bool: ...


async def serve_stream(request: web.Request, hub: Feed, config: CoordinatorConfig) -> tuple[web.StreamResponse, str]:
    """Write snapshots to an admitted stream until it ends; return it and why it ended (a ``why`` label)."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    return response, await _follow(response, request, hub, config)


async def _follow(response: web.StreamResponse, request: web.Request, hub: Feed, config: CoordinatorConfig) -> str:
    transport = request.transport
    ends_at = time.monotonic() + config.sse_max_lifetime_s
    tick = min(config.sse_keepalive_s, config.sse_write_timeout_s / 2)
    stalled_since: float | None = None  # since when bytes written wait in our buffer (none: None)

    async def write(data: bytes) -> bool:
        """False when the write could not finish (the transport stayed paused) in the timeout."""
        try:
            await asyncio.wait_for(response.write(data), timeout=config.sse_write_timeout_s)
        except asyncio.TimeoutError:
            return False
        return True

    try:
        await response.prepare(request)
        if not await write(b"retry: 2000\n\n"):
            return _abort(transport, "idle")
        sent, last_write = -1, time.monotonic()
        while not hub.closing:
            now = time.monotonic()
            if now >= ends_at:
                return "lifetime"
            if transport is not None and transport.get_write_buffer_size() > 0:
                # the kernel's buffers are full: write nothing more (the next snapshot is whole anyway)
                stalled_since = now if stalled_since is None else stalled_since
                if now - stalled_since >= config.sse_write_timeout_s:
                    return _abort(transport, "idle")
                await asyncio.sleep(min(1.0, tick, ends_at - now))
                continue
            stalled_since = None
            if hub.version != sent:
                sent = hub.version
                # every event is a whole snapshot, so a reconnecting page misses nothing
                data = b"id: %d\nevent: snapshot\ndata: %s\n\n" % (sent, hub.body)
            elif await hub.wait_newer(sent, timeout=min(tick, ends_at - now)):
                continue
            elif time.monotonic() - last_write >= config.sse_keepalive_s:
                data = b": keepalive\n\n"
            else:
                continue
            if not await write(data):
                return _abort(transport, "idle")
            last_write = time.monotonic()
        return "shutdown"
    except (ConnectionResetError, ConnectionError):
        return "gone"  # the page went away


def _abort(transport: asyncio.Transport | None, why: str) -> str:
    if transport is not None:
        transport.abort()  # drop what is buffered: the client took none of it
    return why
