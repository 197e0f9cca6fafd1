"""The dial-back probe: ``python -m node.net.dialback [--timeout S] MADDR...`` dials each address with
a stock py-libp2p host, in order, until one completes the secure handshake with the peer id the
address names and answers a ping. Prints one JSON line: ``{"results": {maddr: {"ok", "error"}}}``.

Why here, and why a separate program: the coordinator confirms the addresses a node claims in
its heartbeats before it hands them to strangers for bootstrap, and confirming means a real
libp2p dial. The coordinator may not import libp2p (import contract: it stays a small aiohttp
service), and py-libp2p cannot share an interpreter with hivemind (both register the same
protobuf symbols), so the dial runs in its own short-lived process that the coordinator starts
with a timeout (``coordinator/peerbook.py``). ``node`` is the package that speaks libp2p; this
module imports nothing from the rest of ``node`` and no module imports it.

The handshake authenticates the remote: a listener at that address with any other key fails
the dial, so a node cannot get another peer's address listed as its own. Addresses are tried in
the order given and the first success ends the probe (after it, the connection is reused, so
later "successes" would prove nothing).
"""
from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main", "probe"]


async def probe(maddrs: list[str], timeout: float) -> dict[str, dict[str, object]]:
    import multiaddr
    import trio
    from libp2p import new_host
    from libp2p.host.ping import PingService
    from libp2p.peer.peerinfo import info_from_p2p_addr

    results: dict[str, dict[str, object]] = {}
    host = new_host()
    async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        for maddr in maddrs:
            try:
                info = info_from_p2p_addr(multiaddr.Multiaddr(maddr))
                with trio.fail_after(timeout):
                    await host.connect(info)
                    await PingService(host).ping(info.peer_id, ping_amt=1)
            except BaseException as e:  # trio.TooSlowError, OSError, handshake errors ...: all mean "not dialable"
                if isinstance(e, (KeyboardInterrupt, SystemExit)):
                    raise
                results[maddr] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:200]}
                continue
            results[maddr] = {"ok": True, "error": ""}
            break
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m node.net.dialback", description=__doc__.split("\n\n")[0])
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per address")
    p.add_argument("maddrs", nargs="+")
    args = p.parse_args(argv)
    import trio

    results = trio.run(probe, args.maddrs, args.timeout)
    print(json.dumps({"results": results}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
