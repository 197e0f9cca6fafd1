"""coordinator.cost: pure pricing and cost arithmetic."""
from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.cost import NodeCost, PriceTable, Usage, hourly_price, node_cost, swarm_cost
from protocol import Hardware

TABLE = PriceTable(electricity_usd_per_kwh=0.2, gpu_usd_per_hour={"A100": 1.5}, cpu_usd_per_hour=0.02)


@pytest.mark.parametrize(
    ("hardware", "declared", "usd", "source"),
    [
        (Hardware(device="NVIDIA H100 80GB HBM3", count=8), 20.0, 20.0, "declared"),
        (Hardware(device="NVIDIA A100-SXM4-80GB", count=2), 0.0, 3.0, "table"),
        (Hardware(device="NVIDIA H100 80GB HBM3", count=2), 0.0, 2 * 700 / 1000 * 0.2, "electricity"),
        (Hardware(device="NVIDIA A10G", count=1), 0.0, 150 / 1000 * 0.2, "electricity"),  # "A10", not "A100"
        (Hardware(device="Some Future GPU", count=1), 0.0, 300 / 1000 * 0.2, "electricity"),
        (Hardware(device="cpu", count=1), 0.0, 0.02, "cpu_default"),
        (Hardware(device="CPU (16 cores)", count=1), 0.0, 0.02, "cpu_default"),
    ],
)
def test_hourly_price_rules(hardware, declared, usd, source):
    price = hourly_price(hardware, declared, TABLE)
    assert price.source == source
    assert price.usd_per_hour == pytest.approx(usd)


def test_node_cost_for_an_active_and_an_idle_node():
    price = hourly_price(Hardware(device="H100", count=2), 4.0, TABLE)
    active = node_cost(Usage(tokens=2_000_000, wall_s=1800.0, gpus=2, tokens_per_s=500.0, active=True), price)
    assert (active.compute_hours, active.gpu_hours, active.usd) == (0.5, 1.0, 2.0)
    assert active.usd_per_million_tokens == 1.0
    assert (active.tokens_per_s, active.burn_usd_per_hour) == (500.0, 4.0)
    idle = node_cost(Usage(tokens=0, wall_s=0.0, gpus=2, tokens_per_s=500.0, active=False), price)
    assert (idle.usd, idle.usd_per_million_tokens, idle.tokens_per_s, idle.burn_usd_per_hour) == (0.0, None, 0.0, 0.0)


def _node(tokens: int, wall_s: float, usd_per_hour: float, rate: float, active: bool = True) -> tuple[Usage, NodeCost]:
    usage = Usage(tokens=tokens, wall_s=wall_s, gpus=1, tokens_per_s=rate, active=active)
    return usage, node_cost(usage, hourly_price(Hardware(device="x"), usd_per_hour, TABLE))


def test_swarm_eta_burn_and_progress():
    nodes = [_node(400, 3600.0, 2.0, 10.0), _node(100, 3600.0, 1.0, 15.0), _node(0, 0.0, 5.0, 99.0, active=False)]
    swarm = swarm_cost(nodes, 1000)
    assert (swarm.tokens, swarm.tokens_per_s, swarm.burn_usd_per_hour) == (500, 25.0, 3.0)
    assert swarm.eta_s == 20.0 and swarm.progress == 0.5
    assert swarm.usd == 3.0 and swarm.usd_per_million_tokens == 6000.0
    assert swarm.usd_to_target == pytest.approx(3.0 * 20.0 / 3600.0)
    assert swarm_cost([_node(10, 1.0, 1.0, 0.0)], 1000).eta_s is None  # nothing training
    done = swarm_cost([_node(2000, 1.0, 1.0, 0.0)], 1000)
    assert (done.eta_s, done.progress) == (0.0, 1.0)


@given(st.lists(st.tuples(st.integers(0, 10**9), st.floats(0, 1e6), st.floats(0, 100), st.floats(0, 1e5), st.booleans()),
                max_size=30))
def test_swarm_totals_are_sums_of_node_figures(nodes):
    pairs = [_node(*n) for n in nodes]
    swarm = swarm_cost(pairs, 10**12)
    assert swarm.tokens == sum(u.tokens for u, _ in pairs)
    assert math.isclose(swarm.usd, sum(c.usd for _, c in pairs), rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(swarm.burn_usd_per_hour, sum(c.burn_usd_per_hour for _, c in pairs), rel_tol=1e-9, abs_tol=1e-9)
    if swarm.usd_per_million_tokens is not None:
        assert math.isclose(swarm.usd_per_million_tokens * swarm.tokens / 1e6, swarm.usd, rel_tol=1e-9, abs_tol=1e-9)
    assert 0.0 <= swarm.progress <= 1.0
