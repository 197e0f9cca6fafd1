"""The swarm as a whole: determinism, conservation of tokens and time, scenario behaviour."""
from __future__ import annotations

import dataclasses
import json

import pytest

from sim.run import simulate
from sim.scenarios import SCENARIOS, make_scenario
from sim.status import AVERAGING, COMPUTING, EVAL


def small(name, peers=60, hours=4.0, seed=0, **changes):
    cfg = make_scenario(name, peers=peers, hours=hours, seed=seed)
    return dataclasses.replace(cfg, **changes) if changes else cfg


def test_same_seed_same_trace_and_outputs():
    cfg = small("volunteers-spot", peers=150, hours=8.0, keep_trace=True)
    a, b = simulate(cfg), simulate(cfg)
    assert a.trace_sha256 == b.trace_sha256
    assert a.trace == b.trace and len(a.trace) > 500
    assert json.dumps([a.summary, a.series, a.rounds]) == json.dumps([b.summary, b.series, b.rounds])


def test_another_seed_gives_another_trace():
    assert simulate(small("volunteers-spot", seed=1)).trace_sha256 != simulate(small("volunteers-spot", seed=2)).trace_sha256


def test_trace_hash_sees_a_change_in_the_protocol():
    cfg = small("volunteers")
    other = dataclasses.replace(cfg, protocol=dataclasses.replace(cfg.protocol, matchmaking_s=16.0))
    assert simulate(cfg).trace_sha256 != simulate(other).trace_sha256


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_runs_and_conserves_tokens(name):
    result = simulate(small(name, peers=4 if name == "loopback4" else 60, hours=1.0 if name == "loopback4" else 10.0))
    s, acct = result.summary, result.swarm.acct
    assert s["rounds"]["closed"] > 0 and s["tokens"]["ok"] > 0
    tok = s["tokens"]
    # the integral of the swarm rate over time == per-node accounting of every token
    assert tok["computed"] == pytest.approx(tok["ok"] + tok["wasted"] + tok["in_flight"], rel=1e-9)
    assert tok["wasted"] == pytest.approx(sum(acct.tokens_wasted), rel=1e-9)
    assert tok["ok"] == pytest.approx(sum(acct.tokens_ok), rel=1e-9)
    # node-seconds computing: integral == per-node sums (+ the stretch still running at the end)
    sw, end = result.swarm, result.swarm.cfg.duration_s
    running = sum(end - sw.start[i] for i in sw.computing)
    assert acct.compute_node_s == pytest.approx(sum(acct.compute_s) + running, rel=1e-9)
    assert acct.online_node_s == pytest.approx(sum(acct.online_seconds(i, end) for i in range(len(sw.nodes))), rel=1e-9)
    # true cost: the integral of the burn == coordinator.cost over every online hour
    assert s["cost"]["true_usd"] == pytest.approx(s["cost"]["true_usd_integral"], rel=1e-9)
    assert 0 < s["utilization"] <= 1 and 0 < s["useful_share"] <= 1
    for row in result.rounds:  # a round closes when the swarm reached its target (and not long after)
        assert row["tokens"] >= sw.proto.round_tokens * (1 - 1e-9)
    statuses = {sw.status[i] for i in range(len(sw.nodes))}
    assert statuses & {COMPUTING, AVERAGING, EVAL}


def test_leavers_waste_tokens_and_a_stable_swarm_wastes_none():
    churny = simulate(small("volunteers", hours=12.0)).summary["tokens"]["wasted_by_cause"]
    assert churny["leave"] > 0
    stable = simulate(make_scenario("loopback4")).summary["tokens"]
    assert stable["wasted"] == 0.0


def test_flash_crowd_arrives_and_mass_leave_halves_the_swarm():
    crowd = simulate(small("flash-crowd", peers=200, hours=9.0)).series
    before = max(n for t, n in zip(crowd["t_h"], crowd["online"]) if t < 6.0)
    after = max(n for t, n in zip(crowd["t_h"], crowd["online"]) if 6.0 < t < 7.0)
    assert after > 1.5 * before

    leave = simulate(small("mass-leave", peers=200, hours=9.0)).series
    at = {round(t, 3): n for t, n in zip(leave["t_h"], leave["online"])}
    assert at[8.0] == pytest.approx(at[7.833] / 2, rel=0.15)


def test_daily_pattern_moves_the_online_count():
    series = simulate(small("volunteers", peers=400, hours=48.0)).series
    online = series["online"][36:]  # after the start-up transient
    assert max(online) > 1.3 * min(online)


def test_smaller_codecs_waste_less_time_on_home_links():
    util = {codec: simulate(small(f"home125m-{codec}", peers=80, hours=12.0)).summary["utilization"]
            for codec in ("none", "int8", "q2ef", "topk")}
    assert util["none"] < util["int8"] < util["q2ef"] < util["topk"]


def test_bandwidth_tiers_fail_fewer_groups_than_random_groups_under_a_tight_timeout():
    def failures(grouping):
        cfg = small("home125m-none", peers=120, hours=12.0)
        proto = dataclasses.replace(cfg.protocol, grouping=grouping, assumed_bandwidth_mbps=20.0, group_failure_rate=0.0)
        return simulate(dataclasses.replace(cfg, protocol=proto)).summary["rounds"]["group_failures"]

    assert failures("bandwidth") < failures("random")


def test_joiners_share_the_providers_uplink():
    """Ten joiners at once, one node to download from: the k-th gets 1/k of its uplink."""
    from sim.config import LinkProfile, Population, RoundProtocol, SimConfig, const
    from sim.scenarios import MODELS

    def pop(name, mbps, **kw):
        link = LinkProfile(up_mbps=const(mbps), down_mbps=const(mbps), max_mbps=1e6)
        return Population(name=name, count=kw.pop("count", 1), gpus=(("cpu", 1.0),), link=link, session_s=const(1e9),
                          gap_s=const(1e9), returns=False, tokens_per_s=(100.0,), **kw)

    cfg = SimConfig(scenario="contention", model=MODELS["tiny"], hours=0.1,
                    populations=(pop("seed", 80.0, online_at_start=1.0), pop("joiners", 1e5, count=10, arrive_at_s=100.0)),
                    protocol=RoundProtocol(round_tokens=10**12, assumed_bandwidth_mbps=80.0))
    result = simulate(cfg)
    sw = result.swarm
    state_s = 842_496 * 8 / 10e6  # params x (fp32 + outer momentum) at 80 Mbit/s
    assert sorted(sw.start[1:]) == pytest.approx([100.0 + k * state_s for k in range(1, 11)])
    assert result.summary["bytes"]["downloads"] == 10


def _leave_mid_allreduce(fails: bool, graceful: float):
    """4 nodes at 1,000 tokens/s, 40k tokens per round: target at 10 s, all-reduce from 12 s to
    14.53 s at 1 MB/s. One member leaves at 13 s; the rest would notice 5 s later."""
    from sim.config import LinkProfile, Population, RoundProtocol, SimConfig, const
    from sim.scenarios import MODELS

    link = LinkProfile(up_mbps=const(8.0), down_mbps=const(8.0))

    def pop(name, count, session):
        return Population(name=name, count=count, gpus=(("cpu", 1.0),), link=link, session_s=const(session),
                          gap_s=const(1e9), returns=False, online_at_start=1.0, tokens_per_s=(1000.0,),
                          throughput_sigma=0.0, graceful=graceful)

    proto = RoundProtocol(round_tokens=40_000, target_group_size=4, matchmaking_s=2.0, assumed_bandwidth_mbps=8.0,
                          failure_detect_s=5.0, leave_fails_group=fails)
    cfg = SimConfig(scenario="leave", populations=(pop("stay", 3, 1e9), pop("go", 1, 13.0)), protocol=proto,
                    model=MODELS["tiny"], hours=20 / 3600)
    return simulate(cfg)


@pytest.mark.parametrize("fails", [True, False])
def test_a_member_crashing_mid_allreduce(fails):
    """The node finishes the round without the dead member; ``leave_fails_group`` models giving it up."""
    result = _leave_mid_allreduce(fails, graceful=0.0)
    waste = result.summary["tokens"]["wasted_by_cause"]
    assert waste["leave"] == pytest.approx(10_000)
    assert waste["left_group"] == pytest.approx(30_000 if fails else 0.0)
    assert result.summary["tokens"]["ok"] == pytest.approx(0.0 if fails else 30_000)
    assert result.rounds[0]["last_done"] == pytest.approx(18.0)
    assert result.rounds[0]["failed_groups"] == (1 if fails else 0)


def test_a_graceful_leaver_finishes_its_allreduce_first():
    result = _leave_mid_allreduce(True, graceful=1.0)
    assert result.summary["tokens"]["wasted"] == 0.0
    assert result.summary["tokens"]["ok"] == pytest.approx(40_000)
    end = 12.0 + 1.5 * 842_496 * 2 / 1e6
    assert result.rounds[0]["last_done"] == pytest.approx(end)
    assert result.swarm.acct.left_at[3] == pytest.approx(end) and result.swarm.acct.last_status[3] == "leaving"
