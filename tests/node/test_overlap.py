"""``diloco-overlap``: the all-reduce of round r runs behind round r+1's inner steps.

Three nodes train with the one-round-delayed outer update: the loss falls on every node, and
every node folds the same averages into identical global parameters in every round after every
node's first contribution. (A node that joins a running overlapped swarm downloads a state that
lacks the round then in flight; before its first launch it fetches the state its group launches
with, ``Overlap`` in node/train/rounds.py.)
"""
from __future__ import annotations

import pytest

from node.cli.launcher import SwarmLauncher
from swarm_helpers import common_hashes, fork_problems, wait_until

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(300)]


def test_overlapped_swarm_learns_with_identical_global_parameters(tmp_path):
    with SwarmLauncher(tmp_path, run_id="test-overlap", round_tokens=30_000,
                       extra_args=["--algorithm", "diloco-overlap"]) as swarm:
        names = swarm.start(3)
        sts = wait_until(swarm, lambda s: len(s) == 3 and all(st["rounds"] >= 6 for st in s.values()), 200, "6 rounds on 3 nodes")
        for n in names:
            assert sts[n]["final_val_bpb"] < 0.75 * sts[n]["initial_val_bpb"], (n, sts[n]["final_val_bpb"])
        settled = max(sts[n]["first_contribution"] for n in names) + 1
        shared = {r: h for r, h in common_hashes(sts, names).items() if int(r) > settled}
        assert len(shared) >= 2, f"too few rounds folded in by all three after they settled: {sorted(shared)}"
        assert not fork_problems(shared), f"global parameters differ between nodes: {fork_problems(shared)}: {shared}"
        assert all(sts[n]["bytes_sent"] > 0 for n in names)
