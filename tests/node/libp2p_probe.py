"""A stock py-libp2p host (trio) dials a multiaddr, checks the peer id, lists protocols and pings.

Run as a script in its own process: py-libp2p and hivemind register the same protobuf
symbols (``crypto.pb.KeyType``) and cannot be imported into one interpreter.
Prints one JSON line: {"peer_id", "protocols", "rtts"}.
"""
from __future__ import annotations

import json
import sys

import multiaddr
import trio
from libp2p import new_host
from libp2p.host.ping import PingService
from libp2p.peer.peerinfo import info_from_p2p_addr


async def probe(maddr: str) -> dict[str, object]:
    host = new_host()
    async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        info = info_from_p2p_addr(multiaddr.Multiaddr(maddr))
        with trio.fail_after(30):
            await host.connect(info)  # TCP + security handshake + muxer: fails if the remote is not info.peer_id
            rtts = await PingService(host).ping(info.peer_id, ping_amt=3)
            await trio.sleep(0.5)  # identify runs in the background after connect
            protocols = host.get_peerstore().get_protocols(info.peer_id)
        connected = [str(p) for p in host.get_network().connections]
        return {"peer_id": info.peer_id.to_base58(), "connected": connected, "protocols": [str(p) for p in protocols],
                "rtts": list(rtts)}


if __name__ == "__main__":
    print(json.dumps(trio.run(probe, sys.argv[1])))
