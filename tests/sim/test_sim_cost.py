"""The simulator's money is the coordinator's cost model, checked on a case computed by hand."""
from __future__ import annotations

import pytest

from coordinator.cost import Usage, hourly_price, node_cost, swarm_cost
from coordinator.states import PeerState, StateThresholds
from sim.catalog import GPUS, LINKS
from sim.config import Population, RoundProtocol, SimConfig, const
from sim.ledger import Accounts
from sim.population import Nodes
from sim.run import simulate
from sim.scenarios import MODELS


def always_on(name, gpu, price, rate):
    return Population(name=name, count=1, gpus=((gpu, 1.0),), link=LINKS["loopback"], session_s=const(1e9),
                      gap_s=const(1e9), price=price, online_at_start=1.0, returns=False, tokens_per_s=(rate,))


def test_prices_are_the_coordinators():
    prices = SimConfig("x", (), RoundProtocol(1)).prices
    volunteer = hourly_price(GPUS["4090"].hardware(), 0.0, prices)
    assert (volunteer.usd_per_hour, volunteer.source) == (pytest.approx(0.450 * 0.15), "electricity")
    spot = hourly_price(GPUS["A100"].hardware(), GPUS["A100"].spot_usd_h, prices)
    assert (spot.usd_per_hour, spot.source) == (1.00, "declared")


def test_cost_of_a_volunteer_and_a_spot_gpu_for_one_hour_by_hand():
    cfg = SimConfig(
        scenario="hand",
        populations=(always_on("home", "4090", "volunteer", 1000.0), always_on("cloud", "A100", "spot", 3000.0)),
        protocol=RoundProtocol(round_tokens=40_000, target_group_size=2, matchmaking_s=2.0, assumed_bandwidth_mbps=400.0),
        model=MODELS["tiny"], codec="fp16", hours=1.0, sample_s=600.0,
    )
    s = simulate(cfg).summary
    burn = 0.450 * 0.15 + 1.00  # $/h: 450 W at $0.15/kWh, and the A100's declared spot price
    assert s["cost"]["true_usd"] == pytest.approx(burn)  # both online the whole hour
    # a round: 40k tokens at 4k tokens/s, 2 s matchmaking, 2(2-1)/2 x 842,496 params x 2 B at 50 MB/s
    period = 10.0 + 2.0 + 1.0 * 842_496 * 2 / 50e6
    rounds = int(3600 // period)  # reported by the end of the hour: 299
    assert s["rounds"]["mean_period_s"] == pytest.approx(period)
    assert s["cost"]["ledger_usd"] == pytest.approx(rounds * period / 3600 * burn)
    assert s["tokens"]["ok"] == pytest.approx(rounds * 40_000)
    assert s["cost"]["ledger_usd_per_mtok"] == pytest.approx(rounds * period / 3600 * burn / (rounds * 40_000) * 1e6)
    # and that is what coordinator.cost makes of the same two ledger rows
    prices = cfg.prices
    rows = [(Usage(rounds * 10_000, rounds * period, 1, 0.0, True), hourly_price(GPUS["4090"].hardware(), 0.0, prices)),
            (Usage(rounds * 30_000, rounds * period, 1, 0.0, True), hourly_price(GPUS["A100"].hardware(), 1.0, prices))]
    expected = swarm_cost([(u, node_cost(u, p)) for u, p in rows], 0)
    assert s["cost"]["ledger_usd"] == pytest.approx(expected.usd)
    assert s["cost"]["ledger_gpu_hours"] == pytest.approx(expected.gpu_hours)


def test_the_ledger_bills_less_than_the_truth_when_nodes_download_and_leave():
    from sim.scenarios import make_scenario

    cost = simulate(make_scenario("volunteers-spot", peers=80, hours=8.0)).summary["cost"]
    assert cost["ledger_usd"] < cost["true_usd"]


def _two_nodes() -> Accounts:
    nodes = Nodes()
    for _ in range(2):
        hw = GPUS["4090"].hardware()
        nodes.pop.append(0), nodes.rate.append(1.0), nodes.up.append(1.0), nodes.down.append(1.0)
        nodes.rtt.append(0.0), nodes.hardware.append(hw), nodes.declared.append(0.0), nodes.utc_offset_h.append(0.0)
        nodes.price.append(hourly_price(hw, 0.0, SimConfig("x", (), RoundProtocol(1)).prices))
    return Accounts(nodes, heartbeat_s=30.0, thresholds=StateThresholds(stale_after_s=90.0, offline_after_s=300.0))


def test_peer_states_follow_heartbeats_as_the_coordinator_sees_them():
    acct = _two_nodes()
    acct.join(0, 0.0)
    acct.report(0, 100.0, 20.0, ok=True)
    acct.join(1, 0.0)
    assert acct.state(0, 45.0) == PeerState.ONLINE and acct.state(1, 45.0) == PeerState.JOINING
    acct.leave(0, 100.0, graceful=False)  # a crash: last heartbeat at 90 s
    acct.leave(1, 50.0, graceful=True)  # said "leaving"
    assert acct.state(0, 179.0) == PeerState.ONLINE  # 89 s of silence: not stale yet
    assert acct.state(0, 181.0) == PeerState.STALE
    assert acct.state(0, 391.0) == PeerState.OFFLINE
    assert acct.state(1, 51.0) == PeerState.OFFLINE
    view = acct.ledger(181.0, 0)
    assert view.states == {"online": 0, "joining": 0, "stale": 1, "offline": 1, "paused": 0, "standby": 0}
    assert view.cost.burn_usd_per_hour == 0.0  # a stale node is not burning money on the dashboard
