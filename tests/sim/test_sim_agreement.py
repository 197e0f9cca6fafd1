"""The agreement on failed reducers in the simulator: the node's own settle() decides each group's round."""
from __future__ import annotations

import dataclasses

import pytest

from node.policies.agreement import MIN_WAIT_S
from sim.agreement import agree
from sim.run import simulate
from sim.scenarios import make_scenario


@pytest.mark.parametrize("kind", ["lie", "withhold", "stall"])
def test_a_hostile_minority_costs_the_group_nothing(kind):
    for hostile in ([True, False, False], [False, True, False, False, True], [True] + [False] * 15):
        decision = agree(hostile, kind)
        assert decision.applied and decision.waited_s == 0.0, (hostile, decision)


def test_a_lying_majority_zeroes_every_share_and_the_group_drops():
    decision = agree([True, True, False], "lie")
    assert not decision.applied and decision.waited_s == 0.0 and "every reducer" in decision.reason


@pytest.mark.parametrize("kind", ["withhold", "stall"])
def test_a_silent_majority_leaves_the_decision_open_until_the_deadline(kind):
    assert agree([True, True, False, False], kind).applied  # 2 unheard of 4 cannot make a quorum of 3
    decision = agree([True, True, True, False], kind)  # 3 unheard could: open until the deadline
    assert not decision.applied and decision.waited_s == MIN_WAIT_S and "no majority" in decision.reason


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="hostile kind"):
        agree([True, False], "bribe")
    with pytest.raises(ValueError, match="hostile_kind"):
        dataclasses.replace(make_scenario("volunteers").protocol, hostile_kind="bribe")


def _run(group_size, hostile, kind="lie", seed=0):
    cfg = make_scenario("volunteers", peers=300, hours=4.0, seed=seed)
    proto = dataclasses.replace(cfg.protocol, target_group_size=group_size, hostile_fraction=hostile, hostile_kind=kind)
    return simulate(dataclasses.replace(cfg, protocol=proto)).summary


def test_small_groups_lose_rounds_to_lying_majorities_and_large_groups_do_not():
    """10 % liars: a group of 3 has a lying majority with p ~ 2.8 %, a group of 16 almost never."""
    honest, small, large = _run(3, 0.0), _run(3, 0.1), _run(16, 0.1)
    assert honest["hostile"]["nodes"] == 0 and honest["tokens"]["wasted_by_cause"]["agreement"] == 0
    assert small["hostile"]["nodes"] == large["hostile"]["nodes"] > 15  # the same nodes: one stream draws them
    share = small["tokens"]["wasted_by_cause"]["agreement"] / small["tokens"]["computed"]
    assert 0.005 < share < 0.08, share
    assert large["tokens"]["wasted_by_cause"]["agreement"] < 0.1 * small["tokens"]["wasted_by_cause"]["agreement"]
    assert small["rounds"]["member_dropped"] > honest["rounds"]["member_dropped"]
    # tokens are still conserved with the new cause of waste
    tok = small["tokens"]
    assert tok["computed"] == pytest.approx(tok["ok"] + tok["wasted"] + tok["in_flight"], rel=1e-9)
    assert _run(3, 0.1) == small  # deterministic
