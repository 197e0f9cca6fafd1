"""Node metrics: the real /metrics endpoint (prometheus_client's server on 127.0.0.1) over a view."""
from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from node.host.metrics import serve_metrics


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[s.name + (f"{{{labels}}}" if labels else "")] = s.value
    return out


@pytest.fixture
def endpoint():
    view = {"peer_id": "12D3KooWx", "run_id": "r1", "device": "cpu (x86_64)", "role": None, "reachability": None,
            "status": "training", "gate": {}, "other_cpu_pct": None, "uptime_s": 12.0}
    server, port = serve_metrics(lambda: dict(view), 0)
    yield view, port
    server.shutdown()
    server.server_close()


def test_metrics_follow_the_node(endpoint):
    view, port = endpoint
    m = scrape(port)
    assert m["capaswarm_node_paused"] == 0.0 and m["capaswarm_node_up_seconds"] == 12.0
    assert "capaswarm_node_tokens_total" not in m  # no trainer yet: nothing invented
    info = [k for k in m if k.startswith("capaswarm_node_info")]
    assert len(info) == 1 and "role=unknown" in info[0] and "peer_id=12D3KooWx" in info[0]
    view.update(tokens=5000, tokens_contributed=4000, rounds=2, round=3, blocked_s=1.5, compute_s=9.0, bytes_sent=1000,
                bytes_received=900, val_bpb=4.25, round_count=3, round_s_sum=7.5, last_round_s=2.0, pauses=1, paused_s=30.0,
                role="reducer", reachability="public", gate={"paused": "paused by its volunteer"}, other_cpu_pct=12.5,
                status="paused")
    m = scrape(port)
    assert m["capaswarm_node_tokens_total"] == 5000 and m["capaswarm_node_tokens_contributed_total"] == 4000
    assert m["capaswarm_node_rounds_total"] == 2 and m["capaswarm_node_round"] == 3
    assert m["capaswarm_node_round_seconds_count"] == 3 and m["capaswarm_node_round_seconds_sum"] == 7.5
    assert m["capaswarm_node_blocked_seconds_total"] == 1.5 and m["capaswarm_node_bytes_sent_total"] == 1000
    assert m["capaswarm_node_val_bpb"] == 4.25 and m["capaswarm_node_other_cpu_percent"] == 12.5
    assert m["capaswarm_node_paused"] == 1.0
    assert m["capaswarm_node_gate_reason{reason=paused}"] == 1.0 and m["capaswarm_node_gate_reason{reason=schedule}"] == 0.0
    assert any("role=reducer" in k and "reachability=public" in k for k in m if k.startswith("capaswarm_node_info"))


def test_a_failing_view_does_not_fail_the_scrape():
    def broken():
        raise RuntimeError("trainer not ready")

    server, port = serve_metrics(broken, 0)
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert "capaswarm_node" not in text
    finally:
        server.shutdown()
        server.server_close()


def test_binds_loopback_by_default():
    server, _ = serve_metrics(lambda: {}, 0)
    try:
        assert server.server_address[0] == "127.0.0.1"  # not reachable from other machines unless --metrics-host says so
    finally:
        server.shutdown()
        server.server_close()


def test_grafana_dashboard_queries_only_series_the_node_serves():
    """The dashboard under deploy/grafana must not chart a series the node never exports (a renamed metric)."""
    import json
    import re
    from pathlib import Path

    dash = json.loads((Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "capaswarm-node.json").read_text())
    full = {"peer_id": "p", "run_id": "r", "gate": {"busy": "busy"}, "other_cpu_pct": 1.0, "uptime_s": 1.0, "tokens": 1,
            "tokens_contributed": 1, "rounds": 1, "round": 1, "blocked_s": 1.0, "compute_s": 1.0, "bytes_sent": 1,
            "bytes_received": 1, "val_bpb": 1.0, "round_count": 1, "round_s_sum": 1.0, "last_round_s": 1.0, "pauses": 1,
            "paused_s": 1.0}
    server, port = serve_metrics(lambda: full, 0)
    try:
        served = {k.split("{")[0] for k in scrape(port)}
    finally:
        server.shutdown()
        server.server_close()
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    used = {m for e in exprs for m in re.findall(r"capaswarm_node_[a-z_]+", e)}
    assert len(dash["panels"]) >= 8 and used
    assert used <= served, f"charted but never served: {sorted(used - served)}"
