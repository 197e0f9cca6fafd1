"""What the node tells the coordinator about its rounds: sequence numbers that survive restarts, a
round's contribution report, and its reducer's outlier report."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any


from node.host.config import NodeConfig
from node.train.stats import RoundResult
from ops.atomic import write_atomic
from protocol import (
    ContributionReport, GroupClaim, Hardware, MemberOutlier,
    OutlierReport, RunManifest,
)


class SeqCounter:
    """Per-node report sequence numbers that survive restarts (the coordinator dedups on them)."""

    def __init__(self, path: Path):
        self.path = path
        self.value = int(path.read_text()) if path.exists() else 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self.value += 1
            write_atomic(self.path, str(self.value), durable=True)
            return self.value


def _ratio(x: float) -> float:
    return min(float(x), 1e9) if x == x else 1e9  # inf (a member against an all-zero median) stays finite on the wire


def outlier_report(manifest: RunManifest, peer_id: str, seq: int, round_: int, members: int,
                   flagged: dict[str, Any]) -> OutlierReport:
    """Our reducer's findings of one all-reduce (``node.averaging.robust.MemberStats`` per outlier) as a message."""
    return OutlierReport(
        run_id=manifest.run_id, peer_id=peer_id, seq=seq, sent_at=time.time(), round=round_,
        aggregation=manifest.hparams.aggregation, members=members,
        outliers=[MemberOutlier(peer_id=p, max_ratio=_ratio(s.max_ratio), min_ratio=_ratio(s.min_ratio),
                                clipped=round(s.clipped_fraction, 6), weight_capped=s.weight_capped)
                  for p, s in sorted(flagged.items())][:256],
    )


def dissent_report(manifest: RunManifest, peer_id: str, seq: int, round_: int, members: int,
                   dissenters: list[str]) -> OutlierReport:
    """Members that claimed, in one round's agreement, reducer failures no other member saw
    (``node.policies.agreement``), as an outlier report whose entries say ``dissent``."""
    return OutlierReport(
        run_id=manifest.run_id, peer_id=peer_id, seq=seq, sent_at=time.time(), round=round_,
        aggregation=manifest.hparams.aggregation, members=members,
        outliers=[MemberOutlier(peer_id=p, max_ratio=1.0, min_ratio=1.0, clipped=0.0, dissent=True)
                  for p in sorted(set(dissenters))][:256],
    )


def contribution_report(manifest: RunManifest, cfg: NodeConfig, peer_id: str, seq: int, hardware: Hardware,
                        r: RoundResult) -> ContributionReport:
    """One round's work as the coordinator's ledger counts it."""
    return ContributionReport(
        run_id=manifest.run_id, peer_id=peer_id, seq=seq, sent_at=time.time(), round=r.round,
        tokens=r.tokens, samples=r.samples, compute_s=r.compute_s, wall_s=r.wall_s, bytes_sent=r.bytes_sent,
        bytes_received=r.bytes_received, group=[GroupClaim(p, t) for p, t in r.group], hardware=hardware,
        price_per_hour=cfg.price_per_hour, public_name=cfg.public_name, val_bpb=r.val_bpb,
        train_loss=r.train_loss, ok=r.ok, payload_bytes=r.payload_bytes,
        blocked_s=None if r.blocked_s is None else min(r.blocked_s, r.wall_s),
        manifest_hash=manifest.content_hash,
        state_hash=r.state_hash if r.ok else "",
    )
