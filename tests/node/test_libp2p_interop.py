"""Interoperability: an independent libp2p implementation (py-libp2p) talks to a running node."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from node.cli.launcher import SwarmLauncher
from swarm_helpers import wait_until

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(180)]
PROBE = Path(__file__).with_name("libp2p_probe.py")


def test_py_libp2p_host_dials_and_pings_a_node(tmp_path):
    with SwarmLauncher(tmp_path, run_id="test-interop") as swarm:
        swarm.start_node("node-1")
        st = wait_until(swarm, lambda s: bool(s.get("node-1", {}).get("maddrs")), 90, "the node to listen")["node-1"]
        maddr = st["maddrs"][0]
        assert maddr.startswith("/ip4/127.0.0.1/") and maddr.endswith(st["peer_id"])

        out = subprocess.run([sys.executable, str(PROBE), maddr], capture_output=True, text=True, timeout=90)
        assert out.returncode == 0, f"py-libp2p probe failed:\n{out.stderr[-3000:]}"
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["peer_id"] == st["peer_id"]
        assert st["peer_id"] in result["connected"], "the handshake did not leave a connection to the expected peer"
        # RTTs in whole ms: 0 on loopback
        assert len(result["rtts"]) == 3 and all(r >= 0 for r in result["rtts"]), "expected three pongs"
        assert "/ipfs/ping/1.0.0" in result["protocols"], result["protocols"]


def test_probe_rejects_a_wrong_peer_id(tmp_path):
    """The handshake authenticates the key: dialing the right address with another peer id fails."""
    from protocol import Identity

    with SwarmLauncher(tmp_path, run_id="test-interop-wrong") as swarm:
        swarm.start_node("node-1")
        st = wait_until(swarm, lambda s: bool(s.get("node-1", {}).get("maddrs")), 90, "the node to listen")["node-1"]
        wrong = st["maddrs"][0].replace(st["peer_id"], Identity.generate().peer_id)
        out = subprocess.run([sys.executable, str(PROBE), wrong], capture_output=True, text=True, timeout=90)
        assert out.returncode != 0, f"a dial to the wrong peer id succeeded: {out.stdout}"
