"""The node's side of the cost plan: only plans signed by the pinned run key are obeyed, in order,
and they set or clear the work gate's "standby" reason."""
from __future__ import annotations

import pytest

from node.host.gate import WorkGate
from node.uplink.planfollow import PlanFollower, read_plan
from protocol import Identity, PeerPlan, Plan, SignatureError, seal

RUN_KEY, OTHER, ME = Identity.generate(), Identity.generate(), Identity.generate()


def plan_bytes(seq: int, state: str, signer: Identity = RUN_KEY, run_id: str = "r") -> bytes:
    return seal(Plan(run_id=run_id, seq=seq, made_at=0.0, round=3, peers=[PeerPlan(ME.peer_id, state, "why")]), signer)


def test_read_plan_verifies_signer_and_run():
    assert read_plan(plan_bytes(2, "standby"), run_key=RUN_KEY.peer_id, run_id="r", peer_id=ME.peer_id) == (2, "standby", "why")
    assert read_plan(plan_bytes(2, "standby"), run_key=RUN_KEY.peer_id, run_id="r", peer_id=OTHER.peer_id)[1] == "active"
    with pytest.raises(SignatureError):
        read_plan(plan_bytes(2, "standby", signer=OTHER), run_key=RUN_KEY.peer_id, run_id="r", peer_id=ME.peer_id)
    with pytest.raises(ValueError):
        read_plan(plan_bytes(2, "standby", run_id="x"), run_key=RUN_KEY.peer_id, run_id="r", peer_id=ME.peer_id)


def test_follower_sets_the_gate_and_ignores_older_plans():
    gate = WorkGate()
    follower = PlanFollower("http://127.0.0.1:9", RUN_KEY.peer_id, "r", ME.peer_id, gate)
    follower.apply(5, "standby", "over the cap")
    assert not gate.open and list(gate.reasons) == ["standby"] and "over the cap" in gate.describe()
    follower.apply(4, "active", "replayed old plan")
    assert not gate.open
    follower.apply(6, "active", "cap raised")
    assert gate.open


def test_without_a_pinned_key_nothing_is_fetched_or_obeyed():
    gate = WorkGate()
    PlanFollower("http://127.0.0.1:9", None, "r", ME.peer_id, gate).poll()
    assert gate.open
