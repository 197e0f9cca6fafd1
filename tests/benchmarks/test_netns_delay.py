"""Real latency in the namespace testbed: the delay relay (:mod:`benchmarks.delayrelay`) behind an
nftables redirect makes the round trip between two namespaces the set one (2 x 40 ms), within 10 %.

Two nodes with ``delay_ms=40``: an echo server in node 2, a client in node 1 pings 20 small messages
over one connection (median round trip) and times a fresh dial plus its first echo (two round trips).
The same client with ``SO_MARK`` = 1 bypasses the redirect: under 5 ms, so the delay is the relay's.
The namespaces (and the relays inside) are removed afterwards, also on failure. Root, ``ip``, ``tc``
and ``nft`` are required: without them this skips, except under CI=true where it fails.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks import netns  # noqa: E402
from benchmarks.delayrelay import nft_ruleset  # noqa: E402

DELAY_MS = 40.0
PORT = 5301

_ECHO = r"""
import socket, sys, threading
srv = socket.socket(); srv.settimeout(60)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); srv.bind((sys.argv[1], int(sys.argv[2]))); srv.listen(8)
print("ready", flush=True)
def serve(c):
    c.settimeout(60); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with c:
        while data := c.recv(4096):
            c.sendall(data)
for _ in range(8):  # bounded: the test makes three connections
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""

_CLIENT = r"""
import json, socket, statistics, sys, time
host, port, mark = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def dial():
    s = socket.socket(); s.settimeout(10)
    if mark:
        s.setsockopt(socket.SOL_SOCKET, 36, 1)  # SO_MARK: what the redirect lets pass
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.connect((host, port)); return s
def ping(s, msg=b"x" * 32):
    t = time.perf_counter(); s.sendall(msg); got = b""
    while len(got) < len(msg):
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("echo closed early")
        got += chunk
    return time.perf_counter() - t
t0 = time.perf_counter(); s = dial(); ping(s); first = time.perf_counter() - t0
rtts = [ping(s) for _ in range(20)]
s.shutdown(socket.SHUT_WR); eof = s.recv(1); s.close()
print(json.dumps({"first_s": first, "median_s": statistics.median(rtts), "rtts": rtts, "eof": eof == b""}))
"""


@pytest.fixture(autouse=True)
def _needs_the_delay_testbed():
    missing = [t for t in ("ip", "tc", "nft") if shutil.which(t) is None]
    problem = "needs root" if os.geteuid() != 0 else (f"needs {', '.join(missing)}" if missing else None)
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the delay testbed {problem} (install nftables: scripts/test.sh does)")
        pytest.skip(f"the delay testbed {problem}")


def _tag() -> str:
    return f"d{os.getpid() % 10000}{int(time.time() * 10) % 100}"


def _namespaces(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


def _measure(bed: netns.Testbed, mark: int) -> dict:
    proc = subprocess.run([*bed.prefix(1), sys.executable, "-c", _CLIENT, bed.addr(2), str(PORT), str(mark)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_nat_ruleset_redirects_tcp_but_not_the_relays_own_dials():
    rules = nft_ruleset(7399)
    assert "type nat hook output priority -100" in rules
    assert "meta l4proto tcp ip daddr != 127.0.0.0/8 meta mark != 0x1 redirect to :7399" in rules
    assert 'iifname "lan0" meta l4proto tcp' in nft_ruleset(7399, "prerouting", "lan0")
    with pytest.raises(ValueError):
        nft_ruleset(7399, "input")
    with pytest.raises(ValueError):
        netns.Topology("x", 2, delay_ms=-1)
    topo = netns.Topology("ab12", 2, homes=1, delay_ms=25)
    relays = topo.relay_commands()
    assert [c[3] for c in relays] == ["csw-ab12-n1", "csw-ab12-n2", "csw-ab12-h1"]
    assert relays[0][-4:] == ["--port", str(netns.RELAY_PORT), "--delay-ms", "25"]
    assert netns.Topology("ab12", 2).relay_commands() == []


@pytest.mark.timeout(90)
def test_round_trip_between_two_namespaces_is_the_set_delay():
    topo = netns.Topology(_tag(), 2, delay_ms=DELAY_MS)
    echo = None
    try:
        with netns.Testbed(topo) as bed:
            echo = subprocess.Popen([*bed.prefix(2), sys.executable, "-c", _ECHO, bed.addr(2), str(PORT)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert echo.stdout is not None and echo.stdout.readline().strip() == "ready", echo.stderr.read()
            direct = _measure(bed, mark=1)
            delayed = _measure(bed, mark=0)
            print(f"direct: {direct['median_s'] * 1e3:.2f} ms; relayed: median {delayed['median_s'] * 1e3:.1f} ms, "
                  f"dial + first echo {delayed['first_s'] * 1e3:.1f} ms (set: one way {DELAY_MS:g} ms)")
            rtt = 2 * DELAY_MS / 1000
            assert direct["median_s"] < 0.005, direct
            assert abs(delayed["median_s"] - rtt) <= 0.1 * rtt, delayed
            assert all(r >= 0.9 * rtt for r in delayed["rtts"]), delayed["rtts"]  # never faster than the link
            assert abs(delayed["first_s"] - 2 * rtt) <= 0.1 * 2 * rtt, delayed  # a dial costs one more round trip
            assert delayed["eof"]  # the half-close crossed the relay both ways
    finally:
        if echo is not None:
            if echo.poll() is None:
                echo.kill()
            echo.wait(5)
    assert _namespaces(f"csw-{topo.tag}-") == []
