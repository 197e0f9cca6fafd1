"""A transparent TCP delay relay: real round-trip latency for the namespace testbed without ``netem``.

Why this design: this kernel has no ``netem`` (nor ``fq``; only HTB, TBF, ingress and fifo qdiscs),
so packets cannot be held in the kernel. It does have nftables ``redirect``. A namespace's TCP is
sent to this relay (one process in that namespace) by a nat rule that skips the relay's own
connections by their mark::

    table ip csw_delay {
      chain output { type nat hook output priority -100; policy accept;
        meta l4proto tcp ip daddr != 127.0.0.0/8 meta mark != 0x1 redirect to :PORT } }

(``prerouting`` with ``iifname "lan0"`` instead of ``output`` for the traffic a router forwards.)
The relay reads each connection's original destination (``SO_ORIGINAL_DST``), dials it with
``SO_MARK`` = 1 (so that connection is not redirected again) and holds every chunk of each direction
for the one-way delay ``D``: a queue of ``(arrival, chunk)`` per direction whose writer sleeps until
``arrival + D`` for the head chunk, so chunks pipeline and throughput is the link's, not one chunk
per ``D``. An EOF (half-close) is passed on ``D`` after it arrived.

Dialing: the client's ``connect()`` returns at once (the kernel completes the handshake with the
local relay), so the round trip a real SYN/SYN-ACK costs is charged before the first byte: the relay
dials on ``2 D`` after accepting, and writes nothing onward before ``dialed + D``. A dial then one
request/response costs ``4 D`` (= 2 RTT, as on a real link), a further exchange on the same
connection ``2 D``.

What it is not: a split connection (like a performance-enhancing proxy). Each leg runs its own TCP
with its own pacing and windows, but neither leg sees the long RTT, so slow start and loss recovery
across the delayed path are not reproduced; bulk throughput is bounded by the ``tbf`` cap, not by
window / RTT. TCP only: the nodes' p2pd listens on TCP only (``node/host/config.py`` ``host_maddrs``
defaults to ``/ip4/0.0.0.0/tcp/0``, no QUIC), so UDP is not delayed.

Run inside a namespace: ``ip netns exec NS python -m benchmarks.delayrelay --port P --delay-ms D``;
it prints ``ready`` once listening. Stdlib only.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import socket
import struct
import sys
import time

__all__ = ["MARK", "SO_ORIGINAL_DST", "nft_ruleset", "original_dst", "serve"]

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
SO_MARK = 36  # asm-generic/socket.h
MARK = 0x1
CHUNK = 1 << 16
QUEUE_CHUNKS = 512  # per direction: 32 MiB at most held (more than any bandwidth-delay product here)


def nft_ruleset(port: int, hook: str = "output", iifname: str | None = None) -> str:
    """The nftables table that sends a namespace's TCP (``output``: its own; ``prerouting``: what it
    forwards from ``iifname``) to the relay on ``port``; the relay's own marked dials pass."""
    if hook not in ("output", "prerouting"):
        raise ValueError("hook: output or prerouting")
    match = f'iifname "{iifname}" ' if iifname else ""
    return (
        "table ip csw_delay {\n"
        f"  chain {hook} {{ type nat hook {hook} priority -100; policy accept;\n"  # -100: dstnat (output takes no keyword)
        f"    {match}meta l4proto tcp ip daddr != 127.0.0.0/8 meta mark != {MARK:#x} redirect to :{port}\n"
        "  }\n"
        "}\n"
    )


def original_dst(sock: socket.socket) -> tuple[str, int]:
    """Where a redirected connection was going (raises OSError if it was not redirected)."""
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack("!H", raw[2:4])[0]
    return str(ipaddress.IPv4Address(raw[4:8])), port


class Relay:
    def __init__(self, delay_s: float):
        self.delay_s = delay_s
        self.accepted = 0
        self.refused = 0

    async def handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        accepted = time.monotonic()
        self.accepted += 1
        try:
            host, port = original_dst(c_writer.get_extra_info("socket"))
        except OSError:  # dialed directly, not redirected: nowhere to relay to
            self.refused += 1
            c_writer.close()
            return
        up: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)
        down: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)
        pump_up = asyncio.create_task(_pump(c_reader, up))  # queue the client's bytes while we dial
        await _sleep_until(accepted + 2 * self.delay_s)  # the handshake's round trip
        try:
            s_reader, s_writer = await _dial(host, port)
        except OSError:
            self.refused += 1
            pump_up.cancel()
            c_writer.close()
            return
        dialed = time.monotonic()
        tasks = [pump_up, asyncio.create_task(_pump(s_reader, down)),
                 asyncio.create_task(self._deliver(up, s_writer, not_before=dialed + self.delay_s)),
                 asyncio.create_task(self._deliver(down, c_writer, not_before=0.0))]
        try:
            await asyncio.gather(*tasks[2:])  # both directions delivered their EOF (or failed)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for t in tasks:
                t.cancel()
            for w in (c_writer, s_writer):
                w.close()

    async def _deliver(self, q: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter,
                       not_before: float) -> None:
        while True:
            arrival, chunk = await q.get()
            await _sleep_until(max(arrival + self.delay_s, not_before))
            if not chunk:  # EOF, passed on after its delay
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(chunk)
            await writer.drain()


async def _pump(reader: asyncio.StreamReader, q: asyncio.Queue[tuple[float, bytes]]) -> None:
    try:
        while True:
            chunk = await reader.read(CHUNK)
            await q.put((time.monotonic(), chunk))
            if not chunk:
                return
    except OSError:
        await q.put((time.monotonic(), b""))


async def _dial(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_MARK, MARK)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (host, port)), 20)
    except (OSError, asyncio.TimeoutError) as e:
        sock.close()
        raise OSError(f"dial {host}:{port}: {e}") from None
    return await asyncio.open_connection(sock=sock)


async def _sleep_until(t: float) -> None:
    wait = t - time.monotonic()
    if wait > 0:
        await asyncio.sleep(wait)


async def serve(port: int, delay_s: float, host: str = "0.0.0.0") -> None:
    relay = Relay(delay_s)

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):  # one broken connection never stops the others
            w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await relay.handle(r, w)

    server = await asyncio.start_server(handle, host, port, reuse_address=True, backlog=512)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.delayrelay", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True, help="where the nftables redirect sends TCP")
    p.add_argument("--delay-ms", type=float, required=True, help="one-way delay added to each direction")
    args = p.parse_args(argv)
    if not 0 <= args.delay_ms <= 10_000:
        p.error("--delay-ms: 0..10000")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.delay_ms / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
