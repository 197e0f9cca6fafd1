"""The one launcher (node/cli/launcher.py): the command lines it builds, and a coordinator that fails to start.

Real swarms started with it are exercised by every multi-process test (``swarm`` marker); these are
the quick checks of its own logic.
"""
from __future__ import annotations

import sys

import pytest

from node.cli.launcher import LOOPBACK, Place, SwarmLauncher, start_coordinator


def _after(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_a_node_runs_on_loopback_with_its_manifest_from_flags_by_default(tmp_path):
    swarm = SwarmLauncher(tmp_path, run_id="r", codec="int8", round_tokens=1234, batch_size=4, extra_args=["--max-rounds", "2"])
    first = swarm.node_command("node-1")
    assert first[:4] == [sys.executable, "-m", "node", "join"]
    assert _after(first, "--host-maddrs") == LOOPBACK and "--announce-maddrs" not in first
    assert _after(first, "--state-dir") == str(tmp_path / "node-1") and _after(first, "--public-name") == "node-1"
    assert "--new-swarm" in first and "--coordinator" not in first
    flags = ("--run-id", "--codec", "--round-tokens", "--batch-size")
    assert [_after(first, f) for f in flags] == ["r", "int8", "1234", "4"]
    joiner = swarm.node_command("node-2", ["/ip4/127.0.0.1/tcp/1/p2p/X"], extra=["--role", "client"])
    assert "--new-swarm" not in joiner and _after(joiner, "--initial-peers") == "/ip4/127.0.0.1/tcp/1/p2p/X"
    assert joiner[-4:] == ["--max-rounds", "2", "--role", "client"]  # every node's extras, then this one's


def test_the_place_hook_puts_each_node_in_its_namespace_and_a_coordinator_replaces_the_manifest_flags(tmp_path):
    def place(name: str) -> Place:
        i = name.removeprefix("node-")
        return Place(("ip", "netns", "exec", f"ns{i}"), f"/ip4/10.0.0.{i}/tcp/7", f"/ip4/10.0.0.{i}/tcp/7")

    swarm = SwarmLauncher(tmp_path, coordinator_url="http://10.0.0.254:8080", place=place)
    cmd = swarm.node_command("node-3")
    assert cmd[:5] == ["ip", "netns", "exec", "ns3", sys.executable]
    assert _after(cmd, "--host-maddrs") == _after(cmd, "--announce-maddrs") == "/ip4/10.0.0.3/tcp/7"
    assert _after(cmd, "--coordinator") == "http://10.0.0.254:8080" and "--run-id" not in cmd
    assert "--new-swarm" in cmd  # the organizer's seed
    volunteer = swarm.node_command("node-4", [], place=Place())  # peers from the coordinator; placed by the call
    assert "--new-swarm" not in volunteer and "--initial-peers" not in volunteer
    assert volunteer[0] == sys.executable and _after(volunteer, "--host-maddrs") == LOOPBACK


def test_a_coordinator_that_cannot_start_is_an_error_with_its_log(tmp_path):
    with pytest.raises(RuntimeError, match="the coordinator did not start") as failed:
        start_coordinator(tmp_path, args=["--no-such-flag"], timeout=60)
    assert "--no-such-flag" in str(failed.value)  # the log's tail says why
    assert (tmp_path / "coordinator.log").exists() and not (tmp_path / "coordinator.port").exists()


def test_nodes_of_a_launched_coordinator_pin_its_run_key_as_the_join_line_does(tmp_path):
    import json
    import urllib.request

    from protocol import RunManifest

    swarm = SwarmLauncher(tmp_path)
    with swarm.start_coordinator(RunManifest(run_id="pinned", round_tokens=1000)) as coordinator:
        with urllib.request.urlopen(coordinator.url + "/api/v1/join", timeout=10) as r:
            join = json.loads(r.read())
        cmd = swarm.node_command("node-2", [])
    assert coordinator.run_key.startswith("12D3KooW") and join["run_key"] == coordinator.run_key
    assert _after(cmd, "--coordinator") == coordinator.url and _after(cmd, "--run-key") == coordinator.run_key
