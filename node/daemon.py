"""The node daemon behind ``swarm join``: wires identity, manifest, swarm, trainer and reporter.

Shutdown is orderly on SIGINT/SIGTERM: the current inner phase is abandoned, the last complete
round is already checkpointed, the reporter flushes its outbox, then the averager, the
progress tracker and the DHT (with its p2pd) stop, so no process outlives the node.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import shlex
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch

from node.config import NodeConfig
from node.data import load_corpus
from node.manifests import resolve_manifest
from node.swarm import SwarmHandles, announce_manifest, find_foreign_manifests, start_dht
from node.trainer import RoundResult, Trainer, pick_device
from protocol import ContributionReport, GroupClaim, Hardware, Heartbeat, Identity

__all__ = ["Node", "run_node"]

logger = logging.getLogger(__name__)


def detect_hardware(device: str) -> Hardware:
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        return Hardware(device=props.name[:128], count=torch.cuda.device_count(), memory_gb=round(props.total_memory / 2**30, 1))
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return Hardware(device=f"cpu ({platform.machine()})", count=1, memory_gb=round(mem, 1))


class SeqCounter:
    """Per-node report sequence numbers that survive restarts (the coordinator dedups on them)."""

    def __init__(self, path: Path):
        self.path = path
        self.value = int(path.read_text()) if path.exists() else 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self.value += 1
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(str(self.value))
            os.replace(tmp, self.path)
            return self.value


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


class Node:
    def __init__(self, cfg: NodeConfig):
        self.cfg = cfg
        self.stop = threading.Event()
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self.identity = Identity.load_or_create(cfg.key_path)
        self.peer_id = self.identity.peer_id
        self.manifest, self.join_hint = resolve_manifest(cfg)
        self.device = pick_device(cfg.device)
        self.hardware = detect_hardware(self.device)
        self.seq = SeqCounter(cfg.state_dir / "report_seq")
        self.reporter: Any = None
        self.swarm: SwarmHandles | None = None
        self.trainer: Trainer | Any = None  # Trainer, or SyncTrainer for the baseline
        self.started = time.time()
        self.last_result: RoundResult | None = None

    # ------------------------------------------------------------------ reporting
    def _report(self, r: RoundResult) -> None:
        if self.reporter is None:
            return
        self.reporter.submit(ContributionReport(
            run_id=self.manifest.run_id, peer_id=self.peer_id, seq=self.seq.next(), sent_at=time.time(), round=r.round,
            tokens=r.tokens, samples=r.samples, compute_s=r.compute_s, wall_s=r.wall_s, bytes_sent=r.bytes_sent,
            bytes_received=r.bytes_received, group=[GroupClaim(p, t) for p, t in r.group], hardware=self.hardware,
            price_per_hour=self.cfg.price_per_hour, public_name=self.cfg.public_name, val_bpb=r.val_bpb,
            train_loss=r.train_loss, ok=r.ok, payload_bytes=r.payload_bytes,
            blocked_s=None if r.blocked_s is None else min(r.blocked_s, r.wall_s),
        ))

    def _heartbeat(self) -> None:
        t = self.trainer
        self.reporter.submit(Heartbeat(
            run_id=self.manifest.run_id, peer_id=self.peer_id, seq=self.seq.next(), sent_at=time.time(),
            round=t.round if t else 0, status=t.status if t else "joining", tokens_total=t.tokens_total if t else 0,
            hardware=self.hardware, price_per_hour=self.cfg.price_per_hour, public_name=self.cfg.public_name,
        ))

    def write_status(self) -> None:
        t = self.trainer
        if t is None:
            return
        write_json_atomic(self.cfg.state_dir / "status.json", {
            "peer_id": self.peer_id, "public_name": self.cfg.public_name, "run_id": self.manifest.run_id,
            "manifest_hash": self.manifest.content_hash, "status": t.status, "round": t.round,
            "rounds": t.rounds_done, "tokens": t.tokens_total, "tokens_contributed": t.tokens_contributed, "bytes_sent": t.bytes_sent,
            "bytes_received": t.bytes_received, "initial_val_bpb": t.initial_val_bpb, "final_val_bpb": t.last_val_bpb,
            "state_hash": t.state_hash, "hashes": {str(k): v for k, v in t.hash_history.items()},
            "resumed_from": t.resumed_from, "synced_from_peers": t.synced_from_peers,
            "first_contribution": t.first_contribution, "inner_steps": t.inner_steps,
            "compute_s": round(t.compute_s, 3), "eval_s": round(t.eval_s, 3), "blocked_s": round(t.blocked_s, 3),
            "round_log": {str(k): [round(v[0], 3), v[1]] for k, v in getattr(t, "round_log", {}).items()},
            "maddrs": self.swarm.visible_maddrs if self.swarm else [], "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 1),
        })

    def on_round(self, r: RoundResult) -> None:
        self.last_result = r
        if not r.ok:
            logger.warning("round %d failed: its local work is discarded", r.round)
        self._report(r)
        self.write_status()

    def status_line(self) -> str:
        t = self.trainer
        if t is None:
            return "starting"
        peers = t.swarm.tracker.global_progress.num_peers if t.swarm.tracker else 0
        rate = t.tokens_total / max(1e-9, time.time() - self.started)
        bpb = f"{t.last_val_bpb:.3f}" if t.last_val_bpb is not None else "-"
        return (f"round {t.round} | {t.status} | peers {peers} | val {bpb} bits/byte | {rate:,.0f} tok/s | "
                f"sent {t.bytes_sent / 1e6:.1f} MB recv {t.bytes_received / 1e6:.1f} MB")

    # ------------------------------------------------------------------ lifecycle
    def _periodic(self) -> None:
        next_status = time.monotonic() + self.cfg.status_interval_s
        next_beat = time.monotonic()
        next_check = time.monotonic() + 5
        while not self.stop.wait(0.5):
            now = time.monotonic()
            if self.cfg.max_seconds is not None and time.time() - self.started >= self.cfg.max_seconds:
                logger.info("time budget of %.0f s reached; stopping", self.cfg.max_seconds)
                self.stop.set()
            if now >= next_status:
                logger.info(self.status_line())
                self.write_status()
                next_status = now + self.cfg.status_interval_s
            if self.reporter is not None and now >= next_beat:
                self._heartbeat()
                next_beat = now + self.cfg.heartbeat_interval_s
            if self.swarm is not None and now >= next_check:
                next_check = now + 15
                try:
                    announce_manifest(self.swarm.dht, self.manifest)
                    for peer, h in find_foreign_manifests(self.swarm.dht, self.manifest).items():
                        logger.error("peer %s trains run %r with manifest %s..., we use %s...: not averaging with it. "
                                     "Use the same --manifest (or --coordinator) on both.", peer, self.manifest.run_id,
                                     h[:12], self.manifest.content_hash[:12])
                except Exception:
                    logger.debug("manifest announcement failed", exc_info=True)

    def run(self) -> int:
        logger.info("peer %s, run %r, manifest %s, device %s", self.peer_id, self.manifest.run_id,
                    self.manifest.content_hash[:12], self.device)
        torch.set_num_threads(self.cfg.threads)
        corpus = load_corpus(self.cfg.data, self.manifest.data.val_fraction)
        if self.cfg.coordinator:
            from node.reporter import Reporter

            self.reporter = Reporter(self.identity, self.cfg.coordinator, self.cfg.state_dir / "outbox")
            self.reporter.start()
        periodic = threading.Thread(target=self._periodic, name="periodic", daemon=True)
        periodic.start()
        try:
            self.swarm = SwarmHandles(start_dht(self.cfg, self.cfg.key_path))
            maddrs = self.swarm.visible_maddrs
            if maddrs:
                hint = f"swarm join --initial-peers {shlex.quote(maddrs[0])} {self.join_hint}".strip()
                print(f"To join this swarm, run:\n  {hint}", flush=True)
            announce_manifest(self.swarm.dht, self.manifest)
            if self.manifest.algorithm == "sync":
                from node.sync import SyncTrainer

                self.trainer = SyncTrainer(self.manifest, corpus, self.swarm, peer_id=self.peer_id, cfg=self.cfg, device=self.device)
            else:
                self.trainer = Trainer(self.manifest, corpus, self.swarm, peer_id=self.peer_id,
                                       state_dir=self.cfg.state_dir, cfg=self.cfg, device=self.device)
            self.write_status()
            self.trainer.run(self.stop, self.on_round, self.cfg.max_rounds)
            return 0
        finally:
            self.stop.set()
            self.write_status()
            if self.reporter is not None:
                if self.trainer is not None:
                    self._heartbeat()
                self.reporter.stop(flush_timeout=5.0)
            if self.swarm is not None:
                self.swarm.shutdown()
            periodic.join(timeout=2)


def run_node(cfg: NodeConfig) -> int:
    node = Node(cfg)

    def _on_signal(signum: int, _frame: Any) -> None:
        logger.info("received %s; shutting down", signal.Signals(signum).name)
        node.stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    code = node.run()
    # Shutting down already: a late SIGTERM must not turn a clean exit into "killed". (Python
    # resets handlers to the default during interpreter finalization, but keeps SIG_IGN.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return code
