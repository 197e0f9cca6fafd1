"""The nat suite's arithmetic on hand-made ledger rows and counter samples (the suite itself needs namespaces)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from benchmarks.suites.allreduce import WIRE_FRAMING
from benchmarks.suites.bytes import round_rows
from benchmarks.suites.nat import full_group_rounds, other_bytes, relay_bound, summarize
from benchmarks.suites.swarm import Counters, Report


def _r(node: int, seq: int, *, wall: float = 10.0, group: int = 4, ok: bool = True, sent_at: float | None = None,
       sent: int = 1000, received: int = 1000) -> Report:
    return Report(node=node, peer=f"p{node}", seq=seq, round=seq, tokens=1, compute_s=1.0, wall_s=wall, bytes_sent=sent,
                  bytes_received=received, payload_bytes=4000, ok=ok, sent_at=100.0 + 10 * seq if sent_at is None else sent_at,
                  val_bpb=None, train_loss=None, group=group)


def test_round_time_counts_only_full_groups_after_the_cap_and_skips_each_nodes_first_report():
    reports = [
        _r(1, 0, wall=99.0),  # the first report after the cap: skipped (it may hold a join)
        _r(1, 1, wall=10.0), _r(1, 2, wall=12.0),
        _r(1, 3, wall=50.0, group=3),  # a 3-node group: not a 4-node round
        _r(1, 4, wall=60.0, ok=False),  # failed: out
        _r(2, 0, wall=99.0), _r(2, 1, wall=11.0),
        _r(3, 7, wall=1.0, sent_at=10.0),  # before the cap
    ]
    f = full_group_rounds(reports, after=50.0, group=4)
    assert f["round_s"] == {"median": 11.0, "min": 10.0, "max": 12.0, "n": 3}
    assert f["rounds"] == [1, 2] and f["reports"] == 3 and f["reports_all"] == 5 and f["reports_not_ok"] == 1
    assert f["report_spacing_s"]["median"] == pytest.approx(10.0)
    assert f["compute_s"]["n"] == 3 and f["blocked_s"] is None  # these reports did not measure blocked time


def test_bytes_besides_the_all_reduce_are_wire_minus_framed_payload_per_node_round():
    bed = SimpleNamespace(loopback=False)
    counters = Counters(bed)
    # node 3: 5,000 up and 4,000 down between its reports at t=110 and t=120 (samples bracket both)
    counters.samples = [(105.0, {3: (0, 0)}), (110.0, {3: (1000, 2000)}), (120.0, {3: (6000, 6000)}), (125.0, {3: (6000, 6000)})]
    rows = other_bytes(round_rows(counters, [_r(3, 1), _r(3, 2, sent=2000, received=1500)], "fp16"))
    (row,) = rows  # the first report has no previous one to measure from
    assert row["wire"] == pytest.approx(9000)
    assert row["payload"] == 3500
    assert row["other"] == pytest.approx(9000 - WIRE_FRAMING * 3500)


def test_relay_bound_sums_the_home_nodes_per_round_only_where_both_have_a_row():
    rows = [{"node": 3, "round": 1, "group": 4, "other": 100.0}, {"node": 4, "round": 1, "group": 4, "other": 50.0},
            {"node": 3, "round": 2, "group": 4, "other": 70.0},  # node 4 has no row in round 2: left out
            {"node": 3, "round": 3, "group": 3, "other": 1e9}, {"node": 4, "round": 3, "group": 3, "other": 1e9},  # 3-node group
            {"node": 1, "round": 1, "group": 4, "other": 1e9}]  # a public node: not in the sum
    assert relay_bound(rows, [3, 4], 4) == [150.0]


def test_summary_ratio_is_b_over_a_per_repeat():
    def run(homes: int, round_s: float) -> dict:
        return {"homes": homes, "round_s": {"median": round_s}, "pair_other_per_round": {"median": 1.0},
                "public_other_per_node_round": None, "payload_m": 2.0}

    s = summarize([run(0, 10.0), run(2, 12.0), run(0, 20.0), run(2, 22.0)])
    assert s["ratio_b_over_a"] == [pytest.approx(1.2), pytest.approx(1.1)]
    assert s["A"]["round_s"]["median"] == 15.0 and s["B"]["public_other_per_node_round"] is None


def test_markdown_states_the_ratio_and_the_home_pairs_bytes_against_the_payload():
    from benchmarks.suites.nat import markdown

    def run(label: str, homes: int, round_s: float) -> dict:
        q = {"median": round_s, "min": round_s, "max": round_s, "n": 5}
        return {"label": label, "homes": homes, "roles": {"node-1": "reducer/public", "node-3": "client/private"}, "round_s": q,
                "reports": 20, "reports_all": 20, "pair_other_per_round": {"median": 1e6, "min": 1e6, "max": 1e6, "n": 5},
                "public_other_per_node_round": None, "payload_m": 2e6}

    runs = [run("A-1", 0, 10.0), run("B-1", 2, 13.0)]
    md = markdown({"args": {"cap": 20.0, "model": "tiny", "codec": "fp16", "steps_per_round": 10}, "runs": runs,
                   "summary": summarize(runs)})
    assert "**Round time B / A per repeat: 1.300**" in md
    assert ("| B-1 | 2 | 1: reducer/public, 3: client/private | 13.00 (13.00-13.00) | - | - | 20 / 20 "
            "| 1.000 (1.000-1.000) | 0.500 | - |") in md
