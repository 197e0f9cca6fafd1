"""Prometheus metrics of one node: ``swarm join --metrics-port N`` serves ``/metrics``.

Bound to 127.0.0.1 by default (``--metrics-host`` to widen it, e.g. inside a pod). Figures are
read from the node at scrape time (a custom collector over ``Node.metrics_view``), so nothing in
the training loop pays for them and counters can never drift from what ``status.json`` says.
The Grafana dashboard over these series is ``deploy/grafana/capaswarm-node.json``.

Series (all prefixed ``capaswarm_node_``):

    tokens_total, tokens_contributed_total   tokens processed / in rounds that went into the model
    rounds_total                             rounds this node completed (its all-reduce succeeded)
    round_seconds (summary: _sum, _count)    wall time of completed and failed rounds
    last_round_seconds                       wall time of the newest round
    blocked_seconds_total                    of that, waiting on the network
    compute_seconds_total                    forward/backward/optimizer time
    bytes_sent_total, bytes_received_total   averaging traffic after compression
    round, val_bpb                           the round it works on; validation bits/byte
    paused, gate_reason{reason}              1 while the work gate holds it back, and why
    pauses_total, paused_seconds_total       how often and how long
    other_cpu_percent                        other processes' CPU load (with --pause-when-busy)
    info{peer_id,run_id,role,reachability,device}   always 1; role/reachability "unknown" until known
    up_seconds                               since the node started
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

from node.policies.gate import REASONS

__all__ = ["NodeCollector", "serve_metrics"]

logger = logging.getLogger(__name__)
P = "capaswarm_node_"

_COUNTERS = {  # view key -> (name, help)
    "tokens": ("tokens", "tokens this node processed in reported rounds"),
    "tokens_contributed": ("tokens_contributed", "tokens of rounds whose all-reduce succeeded"),
    "rounds": ("rounds", "rounds this node completed"),
    "blocked_s": ("blocked_seconds", "seconds the training loop waited on the network"),
    "compute_s": ("compute_seconds", "seconds in forward/backward/optimizer"),
    "bytes_sent": ("bytes_sent", "averaging bytes sent, after compression"),
    "bytes_received": ("bytes_received", "averaging bytes received"),
    "pauses": ("pauses", "times the work gate held this node back"),
    "paused_s": ("paused_seconds", "seconds held back by the work gate"),
}
_GAUGES = {
    "round": ("round", "the swarm round this node works on"),
    "val_bpb": ("val_bpb", "validation bits per byte of the global model after the last round"),
    "last_round_s": ("last_round_seconds", "wall time of the newest round"),
    "other_cpu_pct": ("other_cpu_percent", "CPU use of other processes, percent of all cores (with --pause-when-busy)"),
    "uptime_s": ("up_seconds", "seconds since the node started"),
}


class NodeCollector(Collector):
    """Turns ``view()`` (a dict of the node's figures; see ``Node.metrics_view``) into metric families."""

    def __init__(self, view: Callable[[], dict[str, Any]]) -> None:
        self.view = view

    def collect(self) -> Iterator[Any]:
        try:
            v = self.view()
        except Exception:  # a scrape during start-up or shutdown: report what we can, never fail the scrape
            logger.debug("metrics view failed", exc_info=True)
            return
        for key, (name, doc) in _COUNTERS.items():
            if v.get(key) is not None:
                yield CounterMetricFamily(P + name, doc, value=float(v[key]))
        for key, (name, doc) in _GAUGES.items():
            if v.get(key) is not None:
                yield GaugeMetricFamily(P + name, doc, value=float(v[key]))
        yield SummaryMetricFamily(P + "round_seconds", "wall time of rounds (completed or failed)",
                                  count_value=int(v.get("round_count", 0)), sum_value=float(v.get("round_s_sum", 0.0)))
        reasons = v.get("gate", {}) or {}
        yield GaugeMetricFamily(P + "paused", "1 while the work gate holds the node back", value=1.0 if reasons else 0.0)
        g = GaugeMetricFamily(P + "gate_reason", "1 for each reason holding the node back", labels=["reason"])
        for r in REASONS:
            g.add_metric([r], 1.0 if r in reasons else 0.0)
        yield g
        info = InfoMetricFamily(P[:-1], "who this node is", labels=None)
        labels = ("peer_id", "run_id", "role", "reachability", "device", "status")
        info.add_metric([], {k: str(v.get(k) or "unknown") for k in labels})
        yield info


def serve_metrics(view: Callable[[], dict[str, Any]], port: int, host: str = "127.0.0.1") -> tuple[Any, int]:
    """Start the /metrics endpoint in a background thread; returns (server, bound port). ``server.shutdown()`` stops it."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(view))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    bound = int(server.server_address[1])
    logger.info("metrics on http://%s:%d/metrics", host, bound)
    return server, bound
