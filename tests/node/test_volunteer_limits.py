"""A real ``swarm join`` outside its ``--schedule`` never trains, says why, and leaves on ``swarm ctl leave``."""
from __future__ import annotations

import time

import pytest

from node.host.ctl import request
from node.cli.launcher import SwarmLauncher
from swarm_helpers import wait_until

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(180)]


def _hours_from_now(a: int, b: int) -> str:
    t = time.localtime()
    return f"{(t.tm_hour + a) % 24:02d}:{t.tm_min:02d}-{(t.tm_hour + b) % 24:02d}:{t.tm_min:02d}"


def test_node_outside_its_schedule_waits_paused_and_leaves_on_ctl(tmp_path):
    schedule = _hours_from_now(2, 3)  # an hour that starts two hours from now: not now
    with SwarmLauncher(tmp_path, run_id="test-schedule", round_tokens=30_000) as swarm:
        swarm.start_node("solo", extra=["--schedule", schedule, "--status-interval-s", "1"])
        sts = wait_until(swarm, lambda s: s.get("solo", {}).get("status") == "paused", 120, "the node to wait for its schedule")
        assert sts["solo"]["gate"] == {"schedule": f"outside the schedule {schedule}"}
        time.sleep(3)
        reply = request(swarm.state_dir("solo"), "status")
        assert reply["status"] == "paused" and list(reply["gate"]) == ["schedule"]
        assert reply["tokens"] == 0 and reply["rounds"] == 0  # it never trained
        assert request(swarm.state_dir("solo"), "leave")["leaving"] is True
        assert swarm.procs["solo"].wait(60) == 0  # an orderly exit
        assert not (swarm.state_dir("solo") / "ctl.sock").exists()
