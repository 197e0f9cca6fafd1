"""Prometheus metrics, in a registry owned by one app (tests run many apps in one process).

Counters move as reports arrive; gauges are set from each published snapshot, so ``/metrics``
and ``/api/v1/state`` always agree.
"""
from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .ledger import REASON_STATUS
from .states import PeerState

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.accepted = Counter("capaswarm_messages_accepted", "Messages stored in the ledger", ["kind"], registry=r)
        self.duplicates = Counter("capaswarm_messages_duplicate", "Byte-identical re-sends acknowledged again", registry=r)
        self.rejected = Counter("capaswarm_messages_rejected", "Messages refused, by reason", ["reason"], registry=r)
        self.storage_failures = Counter(
            "capaswarm_ledger_item_failures", "Valid messages the ledger could not write (answered 503)", registry=r,
        )
        self.commit_seconds = Histogram(
            "capaswarm_ledger_commit_seconds", "Time to commit one batch to the ledger", registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self.batch_size = Histogram(
            "capaswarm_ledger_batch_size", "Messages per ledger transaction", registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.snapshot_seconds = Gauge("capaswarm_snapshot_build_seconds", "Time to build the last snapshot", registry=r)
        self.sse_clients = Gauge("capaswarm_sse_clients", "Open server-sent-event streams", registry=r)
        self.sse_closed = Counter(
            "capaswarm_sse_closed", "Server-sent-event streams ended, by why (streams.py)", ["why"], registry=r,
        )
        self.peers = Gauge("capaswarm_peers", "Peers by state", ["state"], registry=r)
        self.tokens = Gauge("capaswarm_swarm_tokens", "Tokens of rounds that went into the model", registry=r)
        self.confirmed_tokens = Gauge("capaswarm_swarm_confirmed_tokens", "Tokens confirmed by a group member", registry=r)
        self.tokens_per_second = Gauge("capaswarm_swarm_tokens_per_second", "Current swarm throughput", registry=r)
        self.usd = Gauge("capaswarm_swarm_usd", "Dollars spent so far", registry=r)
        self.burn = Gauge("capaswarm_swarm_burn_usd_per_hour", "Current burn rate", registry=r)
        for reason in REASON_STATUS:  # every reason shows up, at 0, before the first rejection
            self.rejected.labels(reason)
        for why in ("gone", "idle", "lifetime", "shutdown"):
            self.sse_closed.labels(why)
        for kind in ("report", "heartbeat"):
            self.accepted.labels(kind)

    def observe_snapshot(self, snapshot: dict[str, Any]) -> None:
        swarm = snapshot["swarm"]
        for state in PeerState:
            self.peers.labels(state.value).set(swarm["by_state"].get(state.value, 0))
        self.tokens.set(swarm["tokens"])
        self.confirmed_tokens.set(swarm["confirmed_tokens"])
        self.tokens_per_second.set(swarm["tokens_per_s"])
        self.usd.set(swarm["usd"])
        self.burn.set(swarm["burn_usd_per_hour"])

    def render(self) -> bytes:
        return generate_latest(self.registry)
