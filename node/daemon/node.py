"""The node daemon behind ``swarm join``: wires identity, manifest, swarm, trainer and reporter.

Shutdown is orderly on SIGINT/SIGTERM/SIGHUP: the current inner phase is abandoned, the last complete
round is already checkpointed, the reporter flushes its outbox, then the averager, the
progress tracker and the DHT (with its p2pd) stop, so no process outlives the node.

Around the trainer: the work gate (``node/host/gate.py``: schedule, busy, ``swarm ctl pause``,
standby) that the periodic thread refreshes, the ``swarm ctl`` socket (``node/host/ctl.py``) and the
Prometheus endpoint (``node/host/metrics.py``, with ``--metrics-port``).
"""
from __future__ import annotations

import logging
import shlex
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch

from node.host.config import NodeConfig
from node.host.ctl import CtlBusy, CtlError, CtlServer, socket_path
from node.data.corpus import check_data
from node.data.load import load_corpus
from node.model.initial import load_initial, resolve_initial
from node.host.heap import return_large_frees
from node.host.lifeline import guard_forked_helpers
from node.train.ddp import LocalGroup, parse_devices, pick_device
from node.model.tokenizer import TOKENIZER_FILE
from node.uplink.manifests import resolve_manifest
from node.net.announce import REFRESH_S
from node.net.swarm import SwarmHandles, announce_manifest, find_foreign_manifests, start_dht
from node.policies.roles import choose_role
from node.model.state import claim_state_dir
from node.train.stats import RoundResult
from node.train.trainer import Trainer
from node.uplink.bootstrap import JoinError, fetch_peers, wait_for_peers
from node.daemon.machine import cap_gpu_memory, detect_hardware, make_gate
from node.daemon.reports import SeqCounter, contribution_report, dissent_report, outlier_report
from node.daemon.status import NodeViews
from ops.sdnotify import notify
from protocol import (
    SOFTWARE_VERSION, Heartbeat, Identity, LocalProtocolError,
)

__all__ = ["Node", "run_node"]

logger = logging.getLogger(__name__)


class Node(NodeViews):
    def __init__(self, cfg: NodeConfig):
        self.cfg = cfg
        self.stop = threading.Event()
        self._beat_now = threading.Event()  # send a heartbeat at once (e.g. as soon as we listen)
        self.role = choose_role(cfg.role, "unknown")  # reducer | client (node.policies.roles)
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self.identity = Identity.load_or_create(cfg.key_path)
        self.peer_id = self.identity.peer_id
        self.manifest, self.join_hint = resolve_manifest(cfg)
        claim_state_dir(cfg.state_dir, self.manifest.run_id, self.manifest.content_hash)
        self.device = pick_device(cfg.device)
        self.device_ids = parse_devices(cfg.devices, self.device, torch.cuda.device_count() if self.device == "cuda" else 0)
        if self.device == "cuda":
            torch.cuda.set_device(self.device_ids[0])  # "cuda" is this node's first device from here on
        self.hardware = detect_hardware(self.device, self.device_ids)
        self.local: LocalGroup | None = None  # several local devices: the data-parallel group
        self.seq = SeqCounter(cfg.state_dir / "report_seq")
        self.reporter: Any = None
        self.swarm: SwarmHandles | None = None
        self.trainer: Trainer | Any = None  # Trainer, or SyncTrainer for the baseline
        self.started = time.time()
        self.last_result: RoundResult | None = None
        self.gate = make_gate(cfg, self.device)
        self.ctl: CtlServer | None = None
        self.metrics_server: Any = None
        self.metrics_port: int | None = None
        self.plan: Any = None  # node.uplink.planfollow.PlanFollower when a coordinator is set

    # ------------------------------------------------------------------ reporting
    def _submit(self, message: Any) -> None:
        """Seal and queue one message; one that cannot be sealed (a value out of the protocol's
        range) is logged and skipped: training goes on, and the next round reports again."""
        try:
            self.reporter.submit(message)
        except (LocalProtocolError, ValueError, OverflowError) as e:
            logger.error("could not send %s seq %d: %s; skipped", type(message).KIND, message.seq, e)

    def _heartbeat(self) -> None:
        t = self.trainer
        status = t.status if t else "joining"
        self._submit(Heartbeat(
            run_id=self.manifest.run_id, peer_id=self.peer_id, seq=self.seq.next(), sent_at=time.time(),
            round=t.round if t else 0, status=status, tokens_total=t.stats.tokens_total if t else 0,
            hardware=self.hardware, price_per_hour=self.cfg.price_per_hour, public_name=self.cfg.public_name,
            reason=self.gate.describe()[:200] if status in ("paused", "standby") else "",
            software_version=SOFTWARE_VERSION, maddrs=self._maddrs()[:16], reachability=self.reachability, role=self.role,
            manifest_hash=self.manifest.content_hash,
        ))

    def ctl_command(self, cmd: str, request: dict[str, Any]) -> dict[str, Any]:
        """``swarm ctl`` commands (``node/host/ctl.py`` validated them): pause, resume, status, leave."""
        if cmd in ("pause", "resume"):
            if self.manifest.algorithm == "sync":
                raise ValueError("pausing is not supported with --algorithm sync (hivemind.Optimizer)")
            detail = "paused by its volunteer" + (f": {request['reason']}" if request.get("reason") else "")
            self.gate.set("paused", cmd == "pause", detail)
        elif cmd == "leave":
            logger.info("leaving the swarm (swarm ctl leave)")
            self.stop.set()
        t = self.trainer
        return {"peer_id": self.peer_id, "status": t.status if t else "joining", "round": t.round if t else 0,
                "rounds": t.stats.rounds_done if t else 0, "tokens": t.stats.tokens_total if t else 0, "gate": self.gate.reasons,
                "leaving": self.stop.is_set(), "metrics_port": self.metrics_port}

    def _report(self, r: RoundResult) -> None:
        if self.reporter is None:
            return
        for members, flagged in r.outliers:  # our reducer's robust aggregation: who it clipped
            self._submit(outlier_report(self.manifest, self.peer_id, self.seq.next(), r.round, members, flagged))
        for members, dissenters in r.dissent:  # the agreement: who claimed failures no one else saw
            self._submit(dissent_report(self.manifest, self.peer_id, self.seq.next(), r.round, members, dissenters))
        self._submit(contribution_report(self.manifest, self.cfg, self.peer_id, self.seq.next(), self.hardware, r))

    def on_round(self, r: RoundResult) -> None:
        self.last_result = r
        if not r.ok:
            logger.warning("round %d failed: its local work is discarded", r.round)
        self._report(r)
        self.write_status()

    # ------------------------------------------------------------------ lifecycle
    def _periodic(self) -> None:
        next_status = time.monotonic() + self.cfg.status_interval_s
        next_beat = time.monotonic()
        next_check = time.monotonic() + 5
        next_gate = time.monotonic()
        next_plan = time.monotonic()
        next_announce = time.monotonic() + REFRESH_S
        while not self.stop.wait(0.5):
            now = time.monotonic()
            if now >= next_gate:
                self.gate.refresh(now)
                next_gate = now + 5.0
            if self.plan is not None and now >= next_plan:
                next_plan = now + self.cfg.plan_poll_s
                try:
                    self.plan.poll()
                except Exception:
                    logger.warning("cost plan poll failed", exc_info=True)
            if self.cfg.max_seconds is not None and time.time() - self.started >= self.cfg.max_seconds:
                logger.info("time budget of %.0f s reached; stopping", self.cfg.max_seconds)
                self.stop.set()
            if now >= next_status:
                logger.info(self.status_line())
                self.write_status()
                next_status = now + self.cfg.status_interval_s
            if self.reporter is not None and (now >= next_beat or self._beat_now.is_set()):
                self._beat_now.clear()
                self._heartbeat()
                next_beat = now + self.cfg.heartbeat_interval_s
            if isinstance(self.trainer, Trainer) and now >= next_announce:
                next_announce = now + REFRESH_S
                self.trainer.announce_state()  # refresh before the record's TTL runs out
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

    def _bootstrap_peers(self) -> list[str]:
        """--initial-peers, merged with the reachable peers the coordinator lists (it dialed them back)."""
        peers = list(self.cfg.initial_peers)
        if not self.cfg.coordinator or self.cfg.new_swarm:
            return peers
        if peers:
            listed = fetch_peers(self.cfg.coordinator)
        else:
            listed = wait_for_peers(self.cfg.coordinator, self.cfg.bootstrap_wait_s, exclude=self.peer_id, stop=self.stop)
        peers += [m for m in listed if m not in peers and not m.endswith("/p2p/" + self.peer_id)]
        if not peers and not self.stop.is_set():
            raise JoinError(f"no peers to join: the coordinator at {self.cfg.coordinator} has listed no reachable peer for "
                            f"{self.cfg.bootstrap_wait_s:.0f} s. Is the organizer's seed node up? (The organizer starts "
                            "it with --new-swarm.)")
        logger.info("bootstrapping from %d peer address(es)", len(peers))
        return peers

    def _settle_role(self, peers: list[str]) -> None:
        """In auto mode, wait (bounded) for the coordinator's dial-back verdict and take the role it
        implies; a reachable node restarts its DHT as a server (a client is in no routing table)."""
        if self.cfg.role != "auto" or self.reporter is None:
            return
        deadline = time.monotonic() + self.cfg.reachability_wait_s
        while self.reachability == "unknown" and time.monotonic() < deadline and not self.stop.is_set():
            self._beat_now.set()  # the verdict rides on the answer to a heartbeat after the probe
            self.stop.wait(1.0)
        role = choose_role("auto", self.reachability)
        logger.info("reachability %s: role %s%s", self.reachability, role,
                    "" if self.reachability != "unknown" else " (no dial-back verdict in time)")
        if role != self.role and self.swarm is not None and not self.stop.is_set():
            self.swarm.shutdown()
            self.swarm = None
            self.swarm = SwarmHandles(start_dht(self.cfg, self.cfg.key_path, peers, client_mode=role == "client"),
                                      joined=bool(peers))
        self.role = role

    def run(self) -> int:
        logger.info("peer %s, run %r, manifest %s, device %s", self.peer_id, self.manifest.run_id,
                    self.manifest.content_hash[:12], self.device)
        torch.set_num_threads(self.cfg.threads)
        cap_gpu_memory(self.cfg, self.device)
        corpus = load_corpus(self.cfg.data, self.manifest.data.val_fraction)
        check_data(corpus, self.manifest, given=self.cfg.data is not None)
        initial = None
        init_path = resolve_initial(self.manifest, self.cfg.state_dir, self.cfg.init_checkpoint, self.cfg.coordinator)
        if init_path is not None:
            initial = load_initial(init_path, self.manifest.model)
            logger.info("starting from checkpoint %s... (%s)", self.manifest.init_sha256[:16], init_path)
        if corpus.tokenizer_sha256:  # a BPE run: keep its vocabulary beside the checkpoints, for exports
            shutil.copyfile(Path(self.cfg.data) / TOKENIZER_FILE, self.cfg.state_dir / TOKENIZER_FILE)
        if self.cfg.coordinator:
            from node.uplink.reporter import Reporter

            from node.uplink.planfollow import PlanFollower

            self.reporter = Reporter(self.identity, self.cfg.coordinator, self.cfg.state_dir / "outbox")
            self.reporter.start()
            self.plan = PlanFollower(self.cfg.coordinator, self.cfg.run_key, self.manifest.run_id, self.peer_id, self.gate)
        periodic = threading.Thread(target=self._periodic, name="periodic", daemon=True)
        periodic.start()
        try:
            if len(self.device_ids) > 1:  # before hivemind forks anything: the workers are spawned
                self.local = LocalGroup(self.manifest, self.device, self.device_ids, self.cfg.threads)
            self._start_side_services()
            peers = self._bootstrap_peers()
            if self.stop.is_set():  # stopped while waiting for a peer
                return 0
            self.swarm = SwarmHandles(start_dht(self.cfg, self.cfg.key_path, peers, client_mode=self.role != "reducer"),
                                      joined=bool(peers))
            self._beat_now.set()  # tell the coordinator where we listen, so that it dials us back
            self._settle_role(peers)
            if self.stop.is_set():
                return 0
            maddrs = self.swarm.visible_maddrs
            if self.cfg.coordinator:
                print(f"To join this swarm, run:\n  swarm join {self.join_hint} --public-name NAME", flush=True)
            elif maddrs:
                hint = f"swarm join --initial-peers {shlex.quote(maddrs[0])} {self.join_hint}".strip()
                print(f"To join this swarm, run:\n  {hint}", flush=True)
            announce_manifest(self.swarm.dht, self.manifest)
            if self.role == "validator":
                from node.trust.validating import ValidatorRole

                self.trainer = ValidatorRole(self.manifest, corpus, self.swarm, cfg=self.cfg, identity=self.identity,
                                             device=self.device, send=self._submit if self.reporter else _unsent,
                                             next_seq=self.seq.next)
            elif self.manifest.algorithm == "sync":
                from node.train.sync import SyncTrainer

                if self.cfg.schedule or self.cfg.pause_when_busy is not None:
                    logger.warning("--schedule and --pause-when-busy apply to the diloco algorithms only; "
                                   "this run uses sync (hivemind.Optimizer) and trains regardless")

                self.trainer = SyncTrainer(self.manifest, corpus, self.swarm, peer_id=self.peer_id, cfg=self.cfg, device=self.device,
                                           initial=initial)
            else:
                self.trainer = Trainer(self.manifest, corpus, self.swarm, peer_id=self.peer_id,
                                       state_dir=self.cfg.state_dir, cfg=self.cfg, device=self.device, local=self.local,
                                       gate=self.gate, identity=self.identity, initial=initial)
            self.write_status()
            notify("READY=1", f"STATUS=peer {self.peer_id}, run {self.manifest.run_id}")  # systemd Type=notify
            self.trainer.run(self.stop, self.on_round, self.cfg.max_rounds)
            return 0
        finally:
            notify("STOPPING=1")
            self.stop.set()
            self.write_status()
            if self.reporter is not None:
                if self.trainer is not None:
                    self._heartbeat()
                self.reporter.stop(flush_timeout=5.0)
            if self.local is not None:
                self.local.close()
            # the sync trainer's hivemind.Optimizer runs averager processes of its own: end them before the
            # DHT they call, or the node's exit waits on them until the launcher's grace runs out
            trainer_shutdown = getattr(self.trainer, "shutdown", None)
            if trainer_shutdown is not None:
                try:
                    trainer_shutdown()
                except Exception:  # shutting down: report and keep going so the DHT and p2pd still stop
                    logger.warning("error while shutting down the trainer", exc_info=True)
            if self.swarm is not None:
                self.swarm.shutdown()
            periodic.join(timeout=2)
            if self.ctl is not None:
                self.ctl.stop()
            if self.metrics_server is not None:
                self.metrics_server.shutdown()
                self.metrics_server.server_close()

    def _start_side_services(self) -> None:
        """The ``swarm ctl`` socket and, with ``--metrics-port``, the Prometheus endpoint."""
        ctl = CtlServer(socket_path(self.cfg.state_dir), self.ctl_command)
        try:
            ctl.start()
            self.ctl = ctl
        except CtlBusy as e:
            raise ValueError(str(e)) from None
        except CtlError as e:
            logger.warning("swarm ctl is not available: %s", e)
        if self.cfg.metrics_port is not None:
            from node.host.metrics import serve_metrics

            try:
                self.metrics_server, self.metrics_port = serve_metrics(self.metrics_view, self.cfg.metrics_port, self.cfg.metrics_host)
            except OSError as e:
                raise ValueError(f"--metrics-port {self.cfg.metrics_port} on {self.cfg.metrics_host}: {e.strerror or e}") from None


def _unsent(verdict: Any) -> None:
    logger.warning("no --coordinator: the verdict on %s round %d is not sent", verdict.subject, verdict.round)


def run_node(cfg: NodeConfig) -> int:
    # hivemind's DHT and averager processes (and the DHT's p2pd) die with this process, even on kill -9
    guard_forked_helpers()
    return_large_frees()  # before any tensor: freed round buffers go back to the OS (node/host/heap.py)
    node = Node(cfg)

    def _on_signal(signum: int, _frame: Any) -> None:
        logger.info("received %s; shutting down", signal.Signals(signum).name)
        node.stop.set()

    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # SIGHUP: the terminal closed
    for sig in stops:
        signal.signal(sig, _on_signal)
    code = node.run()
    # Shutting down already: a late SIGTERM must not turn a clean exit into "killed". (Python
    # resets handlers to the default during interpreter finalization, but keeps SIG_IGN.)
    for sig in stops:
        signal.signal(sig, signal.SIG_IGN)
    return code
