"""What the README lists as working, on real loopback swarms: the ``sync`` baseline and a 2-bit codec.

* ``--algorithm sync`` (plain ``hivemind.Optimizer``): two nodes count their samples towards one
  swarm-wide target batch, so together they take about the steps per global step that a node alone
  would (the target batch over its own batch), not twice that; they stay on the same global step,
  and the loss falls.
* ``q2ef`` (2-bit with error feedback) next to ``fp16``: the same two-node swarm with each codec
  learns, every node ends each round with identical global parameters, and a q2ef round sends
  a fraction of an fp16 round's bytes.
"""
from __future__ import annotations

import pytest

from node.cli.launcher import SwarmLauncher
from protocol import Hyperparameters
from swarm_helpers import latest_agrees, wait_until

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(360)]


def test_sync_baseline_shares_global_steps_and_learns(tmp_path):
    hp = Hyperparameters()
    alone = hp.target_batch / hp.batch_size  # steps per global step of a node training alone
    with SwarmLauncher(tmp_path, run_id="test-sync", extra_args=["--algorithm", "sync", "--status-interval-s", "5"]) as swarm:
        names = swarm.start(2)
        sts = wait_until(swarm, lambda s: len(s) == 2 and all(st["rounds"] >= 6 for st in s.values()), 240,
                         "6 global steps on 2 sync nodes")
    for n in names:
        st = sts[n]
        assert st["final_val_bpb"] < st["initial_val_bpb"], (n, st["initial_val_bpb"], st["final_val_bpb"])
        assert 0 < st["inner_steps"] / st["rounds"] < alone, (n, st["inner_steps"], st["rounds"], alone)
    # both feed one target batch: together they take about what one node alone takes per global step,
    # not twice it. (Their shares differ from run to run: measured 85 + 32 steps in 7 global steps on a
    # loaded machine, where the node that joins second spends its first seconds loading state.)
    together = sum(sts[n]["inner_steps"] for n in names) / max(sts[n]["rounds"] for n in names)
    assert together < 1.5 * alone, ({n: (sts[n]["inner_steps"], sts[n]["rounds"]) for n in names}, alone)
    assert abs(sts["node-1"]["round"] - sts["node-2"]["round"]) <= 1, {n: sts[n]["round"] for n in names}


def _swarm_rounds(tmp_path, codec: str) -> dict[str, dict]:
    with SwarmLauncher(tmp_path / codec, run_id=f"test-{codec}", codec=codec, round_tokens=30_000,
                       extra_args=["--status-interval-s", "5"]) as swarm:
        names = swarm.start(2)
        return wait_until(swarm, lambda s: len(s) == 2 and all(st["rounds"] >= 4 for st in s.values()) and latest_agrees(s, names),
                          240, f"4 agreed rounds on 2 nodes with {codec}")


def test_two_bit_codec_learns_next_to_fp16_for_a_fraction_of_the_bytes(tmp_path):
    runs = {codec: _swarm_rounds(tmp_path, codec) for codec in ("fp16", "q2ef")}
    per_round = {}
    for codec, sts in runs.items():
        for n, st in sts.items():
            assert st["final_val_bpb"] < 0.85 * st["initial_val_bpb"], (codec, n, st["initial_val_bpb"], st["final_val_bpb"])
        per_round[codec] = sum(st["bytes_sent"] for st in sts.values()) / sum(st["rounds"] for st in sts.values())
    # 2 bits (plus per-block scales) against 16: an eighth and a bit; allow for rounds a node spent alone
    assert per_round["q2ef"] < 0.35 * per_round["fp16"], per_round
