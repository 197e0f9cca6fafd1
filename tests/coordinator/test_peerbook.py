"""Bootstrap addresses: only dial-back-confirmed claims are listed; probes are bounded and owned.

``candidates`` is pure. ``PeerBook`` is driven with a small in-process prober (our own logic under
test, not the product's dial: the real probe process is exercised by
tests/node/test_join_by_coordinator.py and test_dialback_probe below).
"""
from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from coordinator.peerbook import MAX_CANDIDATES, PeerBook, candidates, run_probe
from protocol import Identity

PEER = Identity.generate().peer_id
OTHER = Identity.generate().peer_id


def test_candidates_keep_tcp_on_the_senders_ip_and_name_the_signer():
    claimed = [
        "/ip4/10.0.0.5/tcp/4001",
        f"/ip4/10.0.0.5/tcp/4002/p2p/{PEER}",
        f"/ip4/10.0.0.5/tcp/4003/p2p/{OTHER}",  # another peer's id: dropped
        "/ip4/10.0.0.6/tcp/4001",  # not where the heartbeat came from: never dialed
        "/ip4/0.0.0.0/tcp/4001", "/ip4/10.0.0.5/udp/4001/quic", "/dns4/example.org/tcp/1",
        f"/ip4/10.0.0.5/tcp/4001/p2p/{PEER}/p2p-circuit", "/ip4/10.0.0.5/tcp/99999", "garbage", "",
        "/ip4/10.0.0.5/tcp/4001",  # duplicate
    ]
    assert candidates(PEER, claimed, "10.0.0.5") == [f"/ip4/10.0.0.5/tcp/4001/p2p/{PEER}", f"/ip4/10.0.0.5/tcp/4002/p2p/{PEER}"]
    assert candidates(PEER, claimed, "::ffff:10.0.0.5")[:1] == [f"/ip4/10.0.0.5/tcp/4001/p2p/{PEER}"]
    assert candidates(PEER, claimed, None) == []
    assert f"/ip4/10.0.0.6/tcp/4001/p2p/{PEER}" in candidates(PEER, claimed, None, same_ip=False)
    many = [f"/ip4/10.0.0.5/tcp/{port}" for port in range(1000, 1100)]
    assert len(candidates(PEER, many, "10.0.0.5")) == MAX_CANDIDATES


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def test_only_confirmed_fresh_addresses_are_listed_and_verdicts_return():
    clock, dialed = Clock(), []
    reachable = {f"/ip4/127.0.0.1/tcp/1/p2p/{PEER}"}

    async def prober(maddrs: list[str]) -> dict[str, bool]:
        dialed.append(list(maddrs))
        return {m: m in reachable for m in maddrs}

    book = PeerBook(prober=prober, clock=clock, fresh_s=60, recheck_s=600, retry_s=30)
    assert book.observe(PEER, ["/ip4/127.0.0.1/tcp/1"], "127.0.0.1") == "unknown"  # probing now
    assert book.observe(OTHER, ["/ip4/127.0.0.1/tcp/2"], "127.0.0.1") == "unknown"
    assert book.listing() == []  # claims alone are never listed
    await asyncio.sleep(0.01)
    assert [p["peer_id"] for p in book.listing()] == [PEER]
    assert book.listing()[0]["maddrs"] == [f"/ip4/127.0.0.1/tcp/1/p2p/{PEER}"]
    assert book.observe(PEER, ["/ip4/127.0.0.1/tcp/1"], "127.0.0.1") == "public"
    assert book.observe(OTHER, ["/ip4/127.0.0.1/tcp/2"], "127.0.0.1") == "private"
    assert len(dialed) == 2, "a fresh verdict is reused, not re-dialed on every heartbeat"
    assert book.observe(OTHER, ["/ip4/192.168.1.9/tcp/2"], "127.0.0.1") == "private"  # only a LAN address: nothing to dial
    book.observe(PEER, ["/ip4/127.0.0.1/tcp/7"], "127.0.0.1")  # restarted on another port: the old address is gone
    assert book.listing() == [], "an address the peer no longer claims is not handed out"
    await asyncio.sleep(0.01)
    assert book.listing() == [] and book.verdict(PEER) == "private"  # and the new one did not answer
    book.observe(PEER, ["/ip4/127.0.0.1/tcp/1"], "127.0.0.1")
    await asyncio.sleep(0.01)
    assert [p["peer_id"] for p in book.listing()] == [PEER]
    clock.t += 61
    assert book.listing() == [], "a peer silent for longer than fresh_s is not handed out"
    clock.t += 600
    book.observe(PEER, ["/ip4/127.0.0.1/tcp/1"], "127.0.0.1")
    await asyncio.sleep(0.01)
    assert len(dialed) == 5, "re-dialed after recheck_s"
    await book.close()


async def test_probes_are_bounded_and_cancelled_at_close():
    clock, started, release = Clock(), [], asyncio.Event()

    async def slow(maddrs: list[str]) -> dict[str, bool]:
        started.append(maddrs)
        await release.wait()
        return {}

    book = PeerBook(prober=slow, clock=clock, concurrency=2, queue=5)
    ids = [Identity.generate().peer_id for _ in range(8)]
    for i, peer in enumerate(ids):
        book.observe(peer, [f"/ip4/127.0.0.1/tcp/{i + 1}"], "127.0.0.1")
        book.observe(peer, [f"/ip4/127.0.0.1/tcp/{i + 1}"], "127.0.0.1")  # one probe per peer at a time
    await asyncio.sleep(0.01)
    assert len(started) == 2, "at most `concurrency` probes run at once"
    assert len(book._tasks) == 5, "at most `queue` probes wait"
    await book.close()
    assert not book._tasks


@pytest.mark.swarm
async def test_dialback_probe_confirms_a_real_node_and_refuses_a_wrong_key(tmp_path):
    """The real probe process against a real hivemind DHT. The DHT runs in a child process of its
    own and the probe in another: py-libp2p and hivemind cannot share an interpreter."""
    script = (
        "import hivemind, sys, time\n"
        "dht = hivemind.DHT(host_maddrs=['/ip4/127.0.0.1/tcp/0'], nat_port_map=False, start=True)\n"
        "print(dht.get_visible_maddrs()[0], flush=True)\n"
        "sys.stdin.read()\n"
        "dht.shutdown()\n"
    )
    dht = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        maddr = dht.stdout.readline().strip()
        peer = maddr.rsplit("/", 1)[1]
        base = maddr.rsplit("/p2p/", 1)[0]
        command = (sys.executable, "-m", "node.net.dialback")
        assert await run_probe(command, [maddr], 10.0) == {maddr: True}
        forged = f"{base}/p2p/{OTHER}"  # the right address, claimed for another key
        closed = f"/ip4/127.0.0.1/tcp/1/p2p/{peer}"
        assert await run_probe(command, [forged, closed], 5.0) == {forged: False, closed: False}
    finally:
        dht.stdin.close()
        dht.wait(30)
