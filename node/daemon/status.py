"""What a node shows of itself: ``status.json`` in its state dir, the figures ``/metrics`` serves, the
periodic status line, and the addresses and reachability its heartbeats carry.

``NodeViews`` is a mixin of ``node.daemon.node.Node``: it reads the attributes declared below."""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any


from node.host.config import NodeConfig
from node.host.gate import WorkGate
from node.net.swarm import SwarmHandles
from ops.atomic import write_atomic
from protocol import (
    SOFTWARE_VERSION, Hardware, RunManifest,
)

logger = logging.getLogger(__name__)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=1))  # status.json: rewritten every few seconds, not fsynced


class NodeViews:
    """Read-only views of a running node (mixed into ``Node``, which sets these attributes)."""

    cfg: NodeConfig
    manifest: RunManifest
    peer_id: str
    role: str
    started: float
    device_ids: list[int]
    hardware: Hardware
    gate: WorkGate
    reporter: Any
    swarm: SwarmHandles | None
    trainer: Any
    metrics_port: int | None
    plan: Any

    def _maddrs(self) -> list[str]:
        try:
            return self.swarm.visible_maddrs if self.swarm else []
        except Exception:  # the DHT is stopping; a heartbeat without addresses is still a heartbeat
            logger.debug("no visible maddrs", exc_info=True)
            return []

    @property
    def reachability(self) -> str:
        """The coordinator's dial-back verdict on our addresses: public | private | unknown."""
        return self.reporter.reachability if self.reporter is not None else "unknown"

    def write_status(self) -> None:
        t = self.trainer
        if t is None:
            return
        s = t.stats  # node.train.stats.TrainerStats
        write_json_atomic(self.cfg.state_dir / "status.json", {
            "peer_id": self.peer_id, "public_name": self.cfg.public_name, "run_id": self.manifest.run_id,
            "manifest_hash": self.manifest.content_hash, "status": t.status, "round": t.round,
            "rounds": s.rounds_done, "rounds_tried": s.round_count, "tokens": s.tokens_total,
            "tokens_contributed": s.tokens_contributed, "bytes_sent": s.bytes_sent,
            "bytes_received": s.bytes_received, "initial_val_bpb": s.initial_val_bpb, "final_val_bpb": s.last_val_bpb,
            "state_hash": t.state_hash, "hashes": {str(k): v for k, v in s.hash_history.items()},
            "resumed_from": s.resumed_from, "synced_from_peers": s.synced_from_peers,
            "first_contribution": s.first_contribution, "inner_steps": s.inner_steps,
            "compute_s": round(s.compute_s, 3), "eval_s": round(s.eval_s, 3), "evaluations": s.evaluations,
            "checkpoints": s.checkpoints, "checkpoint_s": round(s.checkpoint_s, 3), "blocked_s": round(s.blocked_s, 3),
            "round_log": {str(k): [round(v[0], 3), v[1]] for k, v in s.round_log.items()},
            "maddrs": self._maddrs(), "pid": os.getpid(),
            "software_version": SOFTWARE_VERSION, "reachability": self.reachability, "role": self.role,
            "uptime_s": round(time.time() - self.started, 1), "devices": len(self.device_ids),
            "gate": self.gate.reasons, "pauses": s.pauses, "paused_s": round(s.paused_s, 1),
            "last_group": s.last_group, "metrics_port": self.metrics_port,
            "plan_seq": self.plan.seq if self.plan else 0, "plan_state": self.plan.state if self.plan else "active",
            **({"verdicts": dict(t.verdicts)} if hasattr(t, "verdicts") else {}),
        })

    def metrics_view(self) -> dict[str, Any]:
        """The figures ``/metrics`` serves (read at scrape time; see ``node/host/metrics.py``)."""
        t = self.trainer
        view: dict[str, Any] = {
            "peer_id": self.peer_id, "run_id": self.manifest.run_id, "device": self.hardware.device, "role": self.role,
            "reachability": self.reachability, "gate": self.gate.reasons, "other_cpu_pct": self.gate.load_pct,
            "uptime_s": time.time() - self.started, "status": t.status if t else "joining",
        }
        if t is not None:
            view["round"] = t.round
            for key in ("rounds_done", "tokens_total", "tokens_contributed", "blocked_s", "compute_s", "bytes_sent",
                        "bytes_received", "pauses", "paused_s", "round_count", "round_s_sum", "last_round_s"):
                view[key] = getattr(t.stats, key)
            view["tokens"], view["rounds"], view["val_bpb"] = t.stats.tokens_total, t.stats.rounds_done, t.stats.last_val_bpb
        return view

    def status_line(self) -> str:
        t = self.trainer
        if t is None:
            return "starting"
        peers = t.swarm.tracker.global_progress.num_peers if t.swarm.tracker else 0
        s = t.stats
        rate = s.tokens_total / max(1e-9, time.time() - self.started)
        bpb = f"{s.last_val_bpb:.3f}" if s.last_val_bpb is not None else "-"
        return (f"round {t.round} | {t.status} | {self.role}, {self.reachability} | peers {peers} | "
                f"val {bpb} bits/byte | {rate:,.0f} tok/s | "
                f"sent {s.bytes_sent / 1e6:.1f} MB recv {s.bytes_received / 1e6:.1f} MB")
