"""``diloco-overlap``: the all-reduce of round r runs behind round r+1's inner steps.

Three nodes train with the one-round-delayed outer update: the loss falls on every node, and
every node folds the same averages into identical global parameters. (A node that joins a
running overlapped swarm folds its first average into a stale state; the group's state hashes
show it, and it downloads the swarm's state: joining costs a round or two of divergence, so
the check looks at the rounds after that.)
"""
from __future__ import annotations

import pytest

from node.launcher import SwarmLauncher
from swarm_helpers import common_hashes, wait_until

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(300)]


def test_overlapped_swarm_learns_with_identical_global_parameters(tmp_path):
    with SwarmLauncher(tmp_path, run_id="test-overlap", round_tokens=30_000,
                       extra_args=["--algorithm", "diloco-overlap"]) as swarm:
        names = swarm.start(3)
        sts = wait_until(swarm, lambda s: len(s) == 3 and all(st["rounds"] >= 6 for st in s.values()), 200, "6 rounds on 3 nodes")
        for n in names:
            assert sts[n]["final_val_bpb"] < 0.75 * sts[n]["initial_val_bpb"], (n, sts[n]["final_val_bpb"])
        shared = common_hashes(sts, names)
        last = sorted(shared, key=int)[-2:]
        assert len(last) == 2, f"too few rounds folded in by all three: {sorted(shared)}"
        assert all(len(shared[r]) == 1 for r in last), f"global parameters differ between nodes: {shared}"
        assert all(sts[n]["bytes_sent"] > 0 for n in names)
