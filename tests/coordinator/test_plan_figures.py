"""Ledger rows -> planner inputs (``coordinator.plans.figures_from_rows``): a newcomer is judged on
measured rounds, not on its joining round (its link: ``Store.link_rates``, a median of recent rounds,
tested in test_ledger_store.py).

The figures are those of a loaded CI run of ``test_plan_swarm``: two volunteers with many rounds, and a
paid joiner whose one report was its joining round (state download and matchmaking in its network wait,
a partial round of compute). Planned on that round alone, it was put on standby, where it sends no
reports that could correct the plan.
"""
from __future__ import annotations

from typing import Any

from coordinator.cost import PriceTable
from coordinator.planner import Budget, PlanSettings, make_plan
from coordinator.plans import MEASURED_AFTER_REPORTS, figures_from_rows


def row(peer_id: str, price: float, reports: int, tokens: int, compute_s: float, bytes_sent: int,
        blocked_s: float) -> dict[str, Any]:
    return {"peer_id": peer_id, "device": "cpu", "device_count": 1, "memory_gb": 8.0, "declared_price": price,
            "reports": reports, "tokens": tokens, "compute_s": compute_s, "bytes_sent": bytes_sent,
            "blocked_s": blocked_s, "failed_rounds": 0, "confirmed_tokens": tokens, "first_seen": 0.0,
            "last_seen": 100.0, "online_s": 100.0}


VOLUNTEERS = [row("vol-1", 0.0, 40, 40 * 12_288, 40 * 3.1, 40 * 1_686_455, 40 * 3.15),
              row("vol-2", 0.0, 39, 39 * 12_288, 39 * 3.0, 39 * 1_686_441, 39 * 3.2)]
SETTINGS = PlanSettings(round_tokens=20_000, payload_bytes=1_133_913)


LINKS = {"vol-1": 1_686_455 / 3.15, "vol-2": 1_686_441 / 3.2}  # Store.link_rates: medians of recent rounds


def plan_for(joiner: dict[str, Any], link: float) -> dict[str, tuple[bool, str]]:
    figures, _ = figures_from_rows([*VOLUNTEERS, joiner], PriceTable(), {}, {**LINKS, "cheap": link})
    result = make_plan(figures, Budget(cap_usd_per_hour=1.5), SETTINGS)
    return {d.peer_id: (d.active, d.reason) for d in result.decisions}


def test_a_joiner_is_planned_as_fast_as_the_measured_peers_until_it_has_reported_enough():
    joining_round = row("cheap", 1.0, 1, 2048, 1.75, 2_280_611, 7.27)
    figures, _ = figures_from_rows([*VOLUNTEERS, joining_round], PriceTable(), {}, {**LINKS, "cheap": 2_280_611 / 7.27})
    cheap = figures[-1]
    assert cheap.link_bytes_per_s is None
    assert cheap.tokens_per_s == sum(f.tokens_per_s for f in figures[:2]) / 2
    assert plan_for(joining_round, 2_280_611 / 7.27)["cheap"] == (True, "best tokens per $ within the cap")


def test_a_peer_measured_slow_over_enough_rounds_is_put_on_standby():
    n = MEASURED_AFTER_REPORTS
    slow = row("cheap", 1.0, n, n * 2048, n * 1.75, n * 2_280_611, n * 7.27)
    figures, _ = figures_from_rows([*VOLUNTEERS, slow], PriceTable(), {}, {**LINKS, "cheap": 2_280_611 / 7.27})
    assert figures[-1].link_bytes_per_s == 2_280_611 / 7.27
    active, reason = plan_for(slow, 2_280_611 / 7.27)["cheap"]
    assert not active and reason.startswith("adds no throughput"), reason
