"""The coordinator's configuration: one typed tree, units in the names, defaults in one place.

The CLI (``cli.py``) is a thin layer that fills this in; tests build it directly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from protocol import RunManifest

from .cost import PriceTable
from .states import StateThresholds

__all__ = ["CoordinatorConfig"]


@dataclass(frozen=True)
class CoordinatorConfig:
    db_path: Path  # SQLite ledger file; created with its schema if missing
    manifest: RunManifest = field(default_factory=lambda: RunManifest(run_id="demo"))
    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = 8080  # 0 picks a free port (tests)
    target_tokens: int = 1_000_000_000  # the run's token target, for progress and time to target

    # acceptance
    max_body_bytes: int = 64 * 1024  # a report is ~1 KB; aiohttp answers 413 past this
    max_age_s: float = 6 * 3600.0  # oldest sent_at accepted: outboxes re-send after an outage
    max_future_s: float = 600.0  # newest sent_at accepted: clock skew
    rate_per_s: float = 2.0  # per-peer request rate (token bucket), heartbeats every 30 s
    rate_burst: float = 120.0  # an outbox flushing a backlog after an outage gets 429 past this

    # durability: accepted reports are committed in groups (one fsync per batch) before the acks
    batch_max: int = 256  # reports per transaction at most

    # dashboard and snapshot
    snapshot_interval_s: float = 1.0  # rebuild the snapshot at most this often after a change
    snapshot_max_age_s: float = 10.0  # and at least this often (peer states move with time)
    peers_listed: int = 500  # rows of the peers table in the snapshot (the totals cover all)
    leaderboard_rows: int = 100
    loss_points: int = 500  # rounds on the loss and throughput curves
    events_listed: int = 50
    sse_max_clients: int = 200  # 503 beyond
    sse_keepalive_s: float = 15.0

    thresholds: StateThresholds = field(default_factory=StateThresholds)
    prices: PriceTable = field(default_factory=PriceTable)

    @property
    def run_id(self) -> str:
        return self.manifest.run_id
