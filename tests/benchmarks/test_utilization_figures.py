"""The utilization suite's arithmetic, on hand-made ledger rows (the suite itself needs namespaces)."""
from __future__ import annotations

import pytest

from benchmarks.suites.swarm import Report
from benchmarks.suites.utilization import utilization


def _r(node: int, seq: int, *, compute: float, wall: float, blocked: float | None, sent_at: float = 100.0) -> Report:
    return Report(node=node, peer=f"p{node}", seq=seq, round=seq, tokens=1, compute_s=compute, wall_s=wall, bytes_sent=0,
                  bytes_received=0, payload_bytes=0, ok=True, sent_at=sent_at + seq, val_bpb=None, train_loss=None, group=2,
                  blocked_s=blocked)


def test_cu_is_one_minus_blocked_over_wall_and_skips_each_nodes_first_report():
    reports = [
        _r(1, 0, compute=1.0, wall=10.0, blocked=9.0),  # first report after the cap: skipped (it may hold a join)
        _r(1, 1, compute=8.0, wall=10.0, blocked=1.0),
        _r(1, 2, compute=7.0, wall=10.0, blocked=0.5),
        _r(2, 0, compute=1.0, wall=10.0, blocked=9.0),
        _r(2, 1, compute=6.0, wall=10.0, blocked=2.5),
        _r(2, 2, compute=5.0, wall=5.0, blocked=None),  # not measured: out of CU, still in the compute share
        _r(3, 5, compute=9.0, wall=10.0, blocked=0.0, sent_at=0.0),  # before the links were capped
    ]
    u = utilization(reports, after=50.0)
    assert u["rounds"] == 4
    assert u["cu_net"] == pytest.approx(1 - (1.0 + 0.5 + 2.5) / 30.0)
    assert u["cu"] == pytest.approx((8 + 7 + 6 + 5) / 35.0)
    assert u["blocked_s_per_round"]["median"] == pytest.approx(1.0)


def test_cu_is_none_when_no_node_measured_blocked_time():
    u = utilization([_r(1, 0, compute=1, wall=2, blocked=None), _r(1, 1, compute=1, wall=2, blocked=None)], after=0.0)
    assert u["cu_net"] is None and u["cu"] == pytest.approx(0.5)
