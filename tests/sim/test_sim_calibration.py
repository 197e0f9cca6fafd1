"""Calibration against a `swarm demo --report` JSON (a synthetic fixture in its shape)."""
from __future__ import annotations

import json

import pytest

from sim.calibration import analytic, calibrate, summary_from_report


@pytest.fixture
def report(demo_report_path):
    return json.loads(demo_report_path.read_text())


def test_summary_from_report(report):
    s = summary_from_report(report)
    assert s["nodes"] == 4 and s["round_tokens"] == 65536 and s["matchmaking_time_s"] == 3.0
    assert s["node_tokens_per_s"] == pytest.approx([627000 / 418.0, 584500 / 417.5, 669120 / 418.2, 542100 / 417.0])
    assert s["eval_s_per_round"] == pytest.approx(0.8)  # 4 x 30.4 s over 4 x (37 rounds + the initial evaluation)
    assert s["contributed_tokens_per_s"] == pytest.approx((627000 + 584500 + 669120 + 534100) / 600)
    assert s["bytes_sent_per_round"] == pytest.approx(1.5 * 842_496 * 2)
    assert (s["rounds_per_hour"], s["swarm_tokens_per_s"]) == (222.0, 4037.9)


def test_missing_swarm_figures_are_derived_from_the_nodes(report):
    del report["rounds_per_hour"], report["swarm_tokens_per_s"]
    s = summary_from_report(report)
    assert s["rounds_per_hour"] == pytest.approx(37 * 3600 / 600)
    assert s["swarm_tokens_per_s"] == pytest.approx((627000 + 584500 + 669120 + 542100) / 600)


@pytest.mark.parametrize("broken", [{"nodes": []}, {"nodes": [{"tokens": 5}]}, {"nodes": [{"tokens": 5, "compute_s": 1.0}]}])
def test_a_report_without_what_calibration_needs_is_an_error(broken):
    with pytest.raises(ValueError):
        summary_from_report(broken)


def test_prediction_matches_the_closed_form_and_errors_are_relative(report):
    s = summary_from_report(report)
    result = calibrate(s)
    closed = analytic(s)
    pred, meas, err = result["predicted"], result["measured"], result["relative_error"]
    assert pred["round_s"] == pytest.approx(closed["round_s"], rel=1e-6)
    assert pred["rounds_per_hour"] == pytest.approx(closed["rounds_per_hour"], rel=1e-6)
    assert pred["swarm_tokens_per_s"] == pytest.approx(closed["swarm_tokens_per_s"], rel=0.01)  # + the unfinished round
    expected_period = 65536 / sum(s["node_tokens_per_s"]) + 3.0 + 1.5 * 842_496 * 2 / 50e6 + 0.8
    assert closed["round_s"] == pytest.approx(expected_period)
    assert meas["rounds_per_hour"] == 222.0
    assert err["rounds_per_hour"] == pytest.approx(pred["rounds_per_hour"] / 222.0 - 1)
    assert err["swarm_tokens_per_s"] == pytest.approx(pred["swarm_tokens_per_s"] / 4037.9 - 1)
    assert abs(err["rounds_per_hour"]) < 0.15  # the fixture is close to, not equal to, the model
    assert pred["bytes_sent_per_round"] == pytest.approx(1.5 * 842_496 * 2)  # butterfly of 4, fp16
    assert err["bytes_sent_per_round"] == pytest.approx(0.0, abs=1e-12)


def test_startup_time_dilutes_the_prediction(report):
    s = summary_from_report(report)
    base = calibrate(s)["predicted"]["rounds_per_hour"]
    late = calibrate({**s, "startup_s": 60.0})["predicted"]["rounds_per_hour"]
    assert late == pytest.approx(base * 540 / 600)


def test_a_slower_effective_loopback_slows_the_prediction(report):
    s = summary_from_report(report)
    fast = calibrate(s, loopback_mbps=400.0)["predicted"]["round_s"]
    slow = calibrate(s, loopback_mbps=8.0)["predicted"]["round_s"]
    assert slow - fast == pytest.approx(1.5 * 842_496 * 2 * (1 / 1e6 - 1 / 50e6), rel=1e-6)
