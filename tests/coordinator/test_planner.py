"""The cost planner's pure rules: ranking by marginal tokens per $, the cap, the all-reduce's cost,
hysteresis, round-size advice and the forecast range."""
from __future__ import annotations

import random

import pytest

from coordinator.planner import (
    Budget,
    PeerFigures,
    PlanSettings,
    allreduce_bytes_per_peer,
    effective_cap,
    make_plan,
    price_check,
    swarm_rate,
)

S = PlanSettings(round_tokens=100_000, payload_bytes=1e6, overhead_s=2.0)


def free(name: str, rate: float = 1000.0, **kw: object) -> PeerFigures:
    kw.setdefault("link_bytes_per_s", 1e7)
    return PeerFigures(name, rate, 0.01, paid=False, **kw)  # type: ignore[arg-type]


def paid(name: str, price: float, rate: float = 1000.0, **kw: object) -> PeerFigures:
    kw.setdefault("link_bytes_per_s", 1e7)
    return PeerFigures(name, rate, price, paid=True, **kw)  # type: ignore[arg-type]


def states(result) -> dict[str, bool]:
    return {d.peer_id: d.active for d in result.decisions}


def test_butterfly_bytes():
    assert allreduce_bytes_per_peer(100.0, 1) == 0.0
    assert allreduce_bytes_per_peer(100.0, 2) == 100.0
    assert allreduce_bytes_per_peer(100.0, 4) == 150.0


def test_no_cap_admits_every_useful_peer_and_volunteers_always():
    peers = [free("v1"), free("v2"), paid("p1", 1.0), paid("p2", 2.0)]
    result = make_plan(peers, Budget(), S)
    assert states(result) == {"v1": True, "v2": True, "p1": True, "p2": True}
    assert result.burn_usd_per_hour == pytest.approx(3.02)


def test_cap_that_affords_one_keeps_the_cheaper_of_two_equal_peers():
    peers = [free("v1"), free("v2"), paid("dear", 2.0), paid("cheap", 1.0)]
    result = make_plan(peers, Budget(cap_usd_per_hour=1.5), S)
    assert states(result) == {"v1": True, "v2": True, "dear": False, "cheap": True}
    assert result.burn_usd_per_hour <= 1.5
    reason = next(d.reason for d in result.decisions if d.peer_id == "dear")
    assert "cap" in reason


def test_ranks_by_tokens_per_dollar_not_by_price():
    # the dearer peer is four times as fast: it buys more tokens per $
    peers = [free("v1"), paid("fast", 2.0, rate=4000.0), paid("slow", 1.0, rate=1000.0)]
    result = make_plan(peers, Budget(cap_usd_per_hour=2.5), S)
    assert states(result)["fast"] and not states(result)["slow"]


def test_slow_link_peer_that_slows_everyone_stays_standby_even_without_cap():
    # 100 kB/s: the all-reduce of 1 MB would take ~15 s, the peer adds 1/3 of the compute of a 33 s round
    peers = [free("v1"), free("v2"), free("v3"), paid("slowlink", 0.5, link_bytes_per_s=1e5)]
    result = make_plan(peers, Budget(), S)
    assert not states(result)["slowlink"]
    assert "no throughput" in next(d.reason for d in result.decisions if d.peer_id == "slowlink")
    alone = swarm_rate([free("v1"), free("v2"), free("v3")], S)[0]
    assert result.tokens_per_s == pytest.approx(alone)


def test_scaling_is_not_linear():
    one = swarm_rate([free("a")], S)[0]
    four = swarm_rate([free(x) for x in "abcd"], S)[0]
    assert one == pytest.approx(1000.0)  # alone: no all-reduce
    assert 1000.0 < four < 4 * one


def test_unreliable_peer_is_worth_less():
    peers = [free("v1"), paid("flaky", 1.0, reliability=0.3), paid("solid", 1.0)]
    result = make_plan(peers, Budget(cap_usd_per_hour=1.05), S)
    assert states(result) == {"v1": True, "flaky": False, "solid": True}


def test_hysteresis_keeps_a_near_equal_active_peer_on_noise():
    rng = random.Random(0)
    active = {"a": True, "b": False}
    flips = 0
    for _ in range(200):  # +-5 % measurement noise on two peers of equal worth
        peers = [free("v"), *(paid(n, 1.0, rate=1000.0 * (1 + rng.uniform(-0.05, 0.05)), active_before=active[n]) for n in "ab")]
        new = states(make_plan(peers, Budget(cap_usd_per_hour=1.05), S))
        flips += new["a"] != active["a"]
        active = {n: new[n] for n in "ab"}
    assert flips == 0
    # without hysteresis the same noise flips it
    active, flips = {"a": True, "b": False}, 0
    rng = random.Random(0)
    for _ in range(200):
        peers = [free("v"), *(paid(n, 1.0, rate=1000.0 * (1 + rng.uniform(-0.05, 0.05)), active_before=active[n]) for n in "ab")]
        new = states(make_plan(peers, Budget(cap_usd_per_hour=1.05), PlanSettings(**{**S.__dict__, "hysteresis": 0.0})))
        flips += new["a"] != active["a"]
        active = {n: new[n] for n in "ab"}
    assert flips > 10


def test_hysteresis_never_breaks_the_cap():
    peers = [free("v"), paid("a", 2.0, active_before=True), paid("b", 1.0, active_before=True)]
    result = make_plan(peers, Budget(cap_usd_per_hour=1.5), S)
    assert result.burn_usd_per_hour <= 1.5


def test_round_size_advice_keeps_utilization():
    peers = [free(x) for x in "abcd"]
    result = make_plan(peers, Budget(), S)
    compute = result.round_tokens / 4000.0
    comm = result.comm_s
    assert compute / (compute + comm) == pytest.approx(0.9, abs=0.01)
    fast = make_plan([free(x, link_bytes_per_s=None) for x in "abc"], Budget(), PlanSettings(round_tokens=1000))
    assert fast.round_tokens == 10.0 * 3000.0  # comm is free: min_round_s of compute


def test_forecast_range_brackets_the_estimate():
    peers = [free("v", reliability=0.8, uptime=0.9), paid("p", 1.0, reliability=0.7)]
    result = make_plan(peers, Budget(), S, remaining_tokens=1e9)
    assert result.eta_low_s < result.eta_s < result.eta_high_s
    assert result.usd_to_target_low < result.usd_to_target < result.usd_to_target_high
    assert result.usd_to_target == pytest.approx(result.burn_usd_per_hour * result.eta_s / 3600)
    done = make_plan(peers, Budget(), S, remaining_tokens=0)
    assert done.eta_s == 0.0


def test_total_budget_and_deadline_lower_the_cap():
    b = Budget(cap_usd_per_hour=10.0, total_usd=100.0, deadline=36_000.0)
    assert effective_cap(b, spent_usd=50.0, now=0.0, eta_s=None) == pytest.approx(5.0)  # $50 over 10 h
    assert effective_cap(b, spent_usd=100.0, now=0.0, eta_s=None) == 0.0
    assert effective_cap(Budget(cap_usd_per_hour=3.0), spent_usd=1e9, now=0, eta_s=None) == 3.0
    result = make_plan([free("v"), paid("p", 1.0)], Budget(total_usd=1.0), S, spent_usd=1.0, remaining_tokens=1e6)
    assert states(result)["p"] is False


def test_deadline_note():
    result = make_plan([free("v")], Budget(deadline=10.0), S, remaining_tokens=1e9, now=0.0)
    assert any("deadline" in n for n in result.notes)


def test_budget_rejects_nonsense():
    with pytest.raises(ValueError):
        Budget(cap_usd_per_hour=-1)
    with pytest.raises(ValueError):
        Budget(total_usd=float("nan"))


def test_price_check():
    assert price_check(2.0, 1.8, 1.5) == ""
    assert "over" in price_check(5.0, 1.8, 1.5)
    assert price_check(5.0, None, 1.5) == ""
