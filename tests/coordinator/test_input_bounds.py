"""Bounds on the ledger's and the dashboard's inputs (issue 23 item 3): the two attacks of the
hostile-client run that still succeeded, each now refused with a reason and counted, while honest
input alongside is served.

- a report with seq 2**62 was accepted (and would have locked its peer's ledger row): now
  ``seq_out_of_window`` (ledger.check_seq_window), an outbox replayed after days offline still in;
- one address holding the live streams locked every other viewer out: now each address (IPv6: each
  /64) holds at most ``sse_per_ip`` below the cap, a viewer from another address still gets one,
  a stream whose client reads nothing is closed, and every stream ends at its lifetime.

Streams from other addresses use real sockets bound to 127.0.0.2, 127.0.0.3, ... (all on lo).
"""
from __future__ import annotations

import asyncio
import json
import re
import socket
import time

import aiohttp
import pytest
from coordinator_testing import identity, post, rejected_metric, state

from coordinator.app import create_app
from coordinator.config import CoordinatorConfig
from coordinator.keys import HUB
from coordinator.ledger import Reject, check_seq_window
from coordinator.streams import StreamSlots, address_key
from protocol import seal


async def _metrics(client) -> str:
    return await (await client.get("/metrics")).text()


def _closed(text: str, why: str) -> float:
    match = re.search(rf'capaswarm_sse_closed_total\{{why="{why}"\}} ([0-9.]+)', text)
    assert match, f"no capaswarm_sse_closed_total line for {why}"
    return float(match.group(1))


# --- seq -----------------------------------------------------------------------------------------


def test_seq_window_rule():
    check_seq_window(100, None, None, 0.0, window=100, per_s=2.0)  # a first message up to the window
    with pytest.raises(Reject) as info:
        check_seq_window(101, None, None, 0.0, window=100, per_s=2.0)
    assert info.value.reason == "seq_out_of_window" and info.value.status == 422
    check_seq_window(110, 10, 50.0, 50.0, window=100, per_s=2.0)
    with pytest.raises(Reject):
        check_seq_window(111, 10, 50.0, 50.0, window=100, per_s=2.0)
    check_seq_window(111 + 199, 10, 50.0, 150.0, window=100, per_s=2.0)  # 100 s of silence: 200 more
    with pytest.raises(Reject):
        check_seq_window(111 + 200, 10, 50.0, 150.0, window=100, per_s=2.0)
    check_seq_window(110, 10, 80.0, 50.0, window=100, per_s=2.0)  # last_seen ahead of now: no credit, no error


async def test_a_seq_of_2_62_is_refused_with_a_reason_and_counted(client, make_report, make_heartbeat):
    honest = [identity(i) for i in range(1, 6)]
    mallory = identity(66)
    bodies = [seal(make_report(h, 1, tokens=1000), h) for h in honest]
    bodies.insert(2, seal(make_report(mallory, 2**62), mallory))
    results = await asyncio.gather(*(post(client, b) for b in bodies))
    status, body = results.pop(2)
    assert (status, body["error"]) == (422, "seq_out_of_window")
    assert "first seq must be at most 1048576" in body["detail"], body
    assert [s for s, _ in results] == [200] * len(honest)
    # a known peer cannot jump either; its next honest message still goes in
    alice = honest[0]
    status, body = await post(client, seal(make_heartbeat(alice, 2**62), alice))
    assert (status, body["error"]) == (422, "seq_out_of_window") and "last seq 1" in body["detail"]
    assert (await post(client, seal(make_heartbeat(alice, 2), alice)))[0] == 200
    snap = await state(client)
    assert snap["swarm"]["peers"] == len(honest) and snap["swarm"]["tokens"] == 1000 * len(honest)
    assert snap["rejections"]["seq_out_of_window"] == 2
    assert rejected_metric(await _metrics(client), "seq_out_of_window") == 2


async def test_outbox_replayed_after_three_days_offline_is_accepted(aiohttp_client, config, clock, make_heartbeat):
    """A node that signs one message a second (half the per-peer rate) while the coordinator is
    unreachable for three days: what is older than max_age is refused as stale, the rest goes in,
    although its first seq is ~237,600 past the last one, far over a window of 1000."""
    client = await aiohttp_client(create_app(config.replace(seq_window=1000), clock=clock))
    node = identity(7)
    for seq in range(1, 4):
        assert (await post(client, seal(make_heartbeat(node, seq), node)))[0] == 200
    went_away = clock.now
    clock.advance(3 * 86_400)
    for seq in (4, 5000, 200_000):  # a few of the old ones: stale (refused before the ledger)
        hb = make_heartbeat(node, seq, sent_at=went_away + seq - 3)
        assert (await post(client, seal(hb, node)))[1]["error"] == "stale"
    first_fresh = 3 + 3 * 86_400 - int(config.max_age_s) + 60  # signed a minute inside the window
    for seq in range(first_fresh, first_fresh + 5):
        hb = make_heartbeat(node, seq, sent_at=went_away + seq - 3)
        status, body = await post(client, seal(hb, node))
        assert status == 200, body
    snap = await state(client)
    assert snap["rejections"].get("seq_out_of_window", 0) == 0 and snap["swarm"]["peers"] == 1


# --- streams: who gets one -----------------------------------------------------------------------


def test_address_keys_count_ipv6_by_its_64():
    assert address_key("203.0.113.7") == "203.0.113.7"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:198.51.100.4") == "198.51.100.4"
    assert address_key("unknown") == "unknown"
    slots = StreamSlots(max_clients=3, per_ip=2)
    assert slots.admit("2001:db8::1") is None and slots.admit("2001:db8::2") is None
    assert slots.admit("2001:db8::3")[0] == "too_many_streams"  # the same /64
    assert slots.admit("2001:db9::1") is None
    assert slots.admit("198.51.100.4")[0] == "streams_full"
    slots.release("2001:db8::2")
    assert slots.admit("198.51.100.4") is None and slots.open == 3


def test_per_ip_limit_must_be_below_the_cap(tmp_path):
    with pytest.raises(ValueError, match="must be below sse_max_clients"):
        CoordinatorConfig(db_path=tmp_path / "l.sqlite3", sse_per_ip=8, sse_max_clients=8)


def _session(source: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0), force_close=True))


async def _first_snapshot(resp: aiohttp.ClientResponse) -> dict:
    for _ in range(200):  # lines; bounded
        line = await asyncio.wait_for(resp.content.readline(), timeout=10.0)
        if line.startswith(b"data: "):
            return json.loads(line[6:])
    raise AssertionError("no snapshot event in 200 lines")


async def test_one_address_holding_its_streams_cannot_lock_out_another(aiohttp_client, config, clock):
    client = await aiohttp_client(create_app(config.replace(sse_per_ip=3, sse_max_clients=5), clock=clock))
    url = str(client.make_url("/api/v1/events"))
    sessions = [_session(f"127.0.0.{i}") for i in (2, 3, 4, 5)]
    mallory, viewer, other, late = sessions
    try:
        held = [await mallory.get(url) for _ in range(3)]
        assert [r.status for r in held] == [200] * 3
        refused = await mallory.get(url)
        body = await refused.json()
        assert (refused.status, body["error"]) == (429, "too_many_streams")
        assert refused.headers["Retry-After"] == "10" and body["retry_after"] == 10 and "3 live streams" in body["detail"]
        # a viewer at another address gets a live stream and its snapshots
        seen = await viewer.get(url)
        assert seen.status == 200 and "swarm" in await _first_snapshot(seen)
        # the cap itself: the next address fills it, a fourth is refused with its own reason
        assert (await other.get(url)).status == 200
        full = await late.get(url)
        assert (full.status, (await full.json())["error"]) == (429, "streams_full")
        assert client.server.app[HUB].streams.by_address["127.0.0.2"] == 3
        text = await _metrics(client)
        assert rejected_metric(text, "too_many_streams") == 1 and rejected_metric(text, "streams_full") == 1
        assert "capaswarm_sse_clients 5.0" in text
    finally:
        for s in sessions:
            await s.close()


# --- streams: when one ends ----------------------------------------------------------------------


def _silent_stream(port: int, source: str) -> socket.socket:
    """A client that asks for the stream and then reads nothing (a receive buffer of a few KB)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
    return sock


async def test_a_stream_whose_client_reads_nothing_is_closed(aiohttp_client, config, clock, make_report):
    cfg = config.replace(sse_write_timeout_s=1.0, sse_keepalive_s=0.2, snapshot_max_age_s=60.0)
    client = await aiohttp_client(create_app(cfg, clock=clock))
    hub = client.server.app[HUB]
    for i in range(1, 41):  # a snapshot of some size (40 peers), so that buffers fill in a few hundred events
        ident = identity(i)
        assert (await post(client, seal(make_report(ident, 1, public_name="n" * 32), ident)))[0] == 200
    await hub.refresh()
    silent = _silent_stream(client.server.port, "127.0.0.6")
    reader = _session("127.0.0.7")
    try:
        viewer = await reader.get(str(client.make_url("/api/v1/events")))
        assert viewer.status == 200
        await _first_snapshot(viewer)
        deadline = time.monotonic() + 60.0
        published = 0
        while _closed(await _metrics(client), "idle") == 0:  # bounded: 60 s, 3000 snapshots
            assert time.monotonic() < deadline and published < 3000, f"not closed after {published} snapshots"
            await hub.refresh()
            published += 1
            await _first_snapshot(viewer)  # the reading viewer takes each one
            if published % 50 == 0:
                await asyncio.sleep(0.25)
        assert hub.streams.by_address.get("127.0.0.6", 0) == 0 and hub.streams.open == 1
        await hub.refresh()
        assert "swarm" in await _first_snapshot(viewer)  # the reader was never cut
        silent.settimeout(5.0)
        try:  # the server dropped the connection: what was buffered, then a reset or EOF
            for _ in range(10_000):
                if not silent.recv(1 << 16):
                    break
        except ConnectionResetError:
            pass
    finally:
        silent.close()
        await reader.close()


async def test_every_stream_ends_at_its_lifetime_and_can_reconnect(aiohttp_client, config, clock):
    client = await aiohttp_client(create_app(config.replace(sse_max_lifetime_s=0.5, sse_keepalive_s=0.1), clock=clock))
    async with _session("127.0.0.8") as s:
        for _ in range(2):
            resp = await s.get(str(client.make_url("/api/v1/events")))
            assert resp.status == 200
            body = await asyncio.wait_for(resp.read(), timeout=10.0)  # the server ends it
            assert b"event: snapshot" in body
    text = await _metrics(client)
    assert _closed(text, "lifetime") == 2 and client.server.app[HUB].streams.open == 0
