"""The DiLoCo training loop, readable top to bottom.

One round:
  1. inner phase: local AdamW steps on this node's own sample stream, counting tokens and
     publishing progress, until the *swarm* has processed the round's token target;
  2. pseudo-gradient = global - local parameters, averaged over the group (weighted by tokens);
  3. outer step: Nesterov SGD on the global parameters; local parameters restart from them.
Steps 2 and 3 run blocking or overlapped with the next inner phase (``node/train/rounds.py``); a node behind
the swarm first downloads the global state and checks it (``node/net/statesync.py``).

The work gate (``node/host/gate.py``: schedule, busy, ``swarm ctl pause``, standby) is checked between
inner steps and between rounds. A gated node abandons its partial round, lands an all-reduce still
in flight, leaves the round's progress tracking (others stop counting it at once), stops serving
its soon-stale state, and waits; on resume it rejoins the tracking and downloads the state first.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from node.averaging.codecs import ErrorFeedback, get_codec
from node.host.config import NodeConfig
from node.data.corpus import Corpus
from node.data.sampler import ByteSampler, evaluate_bpb
from node.train.ddp import LocalGroup
from node.train.diloco import (inner_optimizer, inner_step, load_outer_momentum, outer_momentum, outer_optimizer, outer_step,
                         pseudo_gradient, warmup_lr)
from node.host.gate import WorkGate
from node.averaging.timeouts import LinkTimeouts
from node.model.gpt import GPT
from node.policies.schedule import is_behind
from node.train.rounds import Work, agreement_dissent, reducer_outliers, strategy
from node.model.state import CHECKPOINT_COUNTERS, GlobalState, NodeCheckpoint
from node.net.statesync import StateSync
from node.train.stats import RoundResult, TrainerStats
from node.net.swarm import SwarmHandles
from protocol import Identity, RunManifest

__all__ = ["Trainer"]

logger = logging.getLogger(__name__)

OnRound = Callable[[RoundResult], None]


class Trainer:
    def run(self, stop: threading.Event, on_round: OnRound, max_rounds: int | None = None) -> None:
        if self.stats.initial_val_bpb is None:
            self.stats.initial_val_bpb = self.evaluate()
            self.stats.count_evaluation(self.global_round, self.stats.initial_val_bpb)
        while not stop.is_set() and (max_rounds is None or self.stats.rounds_done < max_rounds):
            if not self.gate.open:
                self.pause(stop, on_round)
                continue
            result = self.run_round(stop)
            if result is not None:
                on_round(result)
        self._land_pending(on_round)  # overlap: land the last all-reduce, so the checkpoint has it
        self.status = "leaving"

    def run_round(self, stop: threading.Event) -> RoundResult | None:
        t_start = time.perf_counter()
        swarm_round = self.swarm.tracker.global_epoch
        if self.stats.first_contribution is None and self.stats.synced_from_peers is None:  # not yet in step with the swarm
            swarm_round = max(swarm_round, self.swarm.swarm_round())
        if self.need_resync or is_behind(self.round, swarm_round):
            self.rounds.drop_pending()
            if not self.sync_from_peers() and self.need_resync:
                logger.info("no peer could give us newer state yet; continuing from round %d", self.round)
                self.need_resync = False
                self.statesync.share(True)
        # a state download is part of the round it precedes, in its wall time and as waiting
        work = Work(t_start=t_start, round=self.round, blocked_s=time.perf_counter() - t_start)
        self.sampler.start_round(self.round)  # this round's windows: a function of (run, peer, round)
        work.tokens, work.samples, work.compute_s, work.loss = self.inner_phase(stop)
        if stop.is_set() or self.need_resync or work.tokens == 0 or not self.gate.open:
            self.restart_from(self.anchor)  # abandon the partial round: back to where it started
            return None
        return self.rounds.end_round(work, pseudo_gradient(self.anchor, self.model.parameters()))

    def inner_phase(self, stop: threading.Event) -> tuple[int, int, float, float]:
        """Train locally until the swarm reaches the round's token target. Returns tokens, samples, compute s, mean loss."""
        hp, tracker = self.manifest.hparams, self.swarm.tracker
        tokens = samples = 0
        compute_s, loss_sum, steps = 0.0, 0.0, 0
        self.status = "training"
        if self.local is not None:  # the parameters may have changed since the last inner phase
            self.local.sync()
        while not stop.is_set():
            if not self.gate.open:  # paused: the partial round is abandoned (run() leaves the swarm's rounds)
                break
            if tracker.global_epoch > self.round:  # the swarm finished this round without us
                self.need_resync = True
                break
            t0 = time.perf_counter()
            lr = warmup_lr(hp, self.stats.inner_steps)
            x, y = self.sampler.batch()
            if self.local is not None:  # the batch is shared over the node's devices
                loss = self.local.step(x, y, lr)
            else:
                loss = inner_step(self.model, self.inner_opt, x, y, lr=lr, grad_clip=hp.grad_clip, device=self.device,
                                  micro_batches=self.cfg.micro_batches)
            loss_sum += loss.item()  # CPU-GPU sync point, once per step
            compute_s += time.perf_counter() - t0
            steps += 1
            self.stats.inner_steps += 1
            samples += x.shape[0]
            tokens += x.numel()
            tracker.report_local_progress(self.round, tokens)
            if tracker.ready_to_update_epoch:
                break
        return tokens, samples, compute_s, loss_sum / max(1, steps)

    def outer_step(self, averaged: list[torch.Tensor] | None, *, base_differs: bool = False) -> None:
        """Nesterov SGD on the global parameters with a landed average (None: the all-reduce failed); none
        if our state was not the group's (that step would be a fork: we download the group's next round)."""
        if averaged is not None and not base_differs:
            with self._state_lock:
                outer_step(self.outer_opt, averaged)
                self.global_round += 1
                self._snapshot = self._make_snapshot()

    def close_round(self, work: Work, averaged: list[torch.Tensor] | None, group: list[tuple[str, int]]) -> RoundResult:
        """Account for a round whose all-reduce landed (or failed): share the state, checkpoint, evaluate."""
        self.statesync.advertise(self.global_round)
        sent, received = work.traffic(self.swarm.averager.counters)
        self.stats.count_work(work.tokens, work.compute_s, work.blocked_s, sent, received)
        val = None
        if averaged is not None:
            self.stats.count_contribution(work.round, work.tokens, group, self.global_round, self._snapshot.hash)
            self.statesync.announcing = self.statesync.announcing or bool(group)  # agreed with a group (or alone)
            self.announce_state()
            val = self.rounds.evaluate_global()
            self.stats.count_evaluation(self.global_round, val)
            self.save()
        group = [(p, work.tokens if t < 0 else t) for p, t in group]
        wall_s = (work.t_end or time.perf_counter()) - work.t_start
        self.stats.time_round(wall_s)
        return RoundResult(
            round=work.round, tokens=work.tokens, samples=work.samples, compute_s=work.compute_s,
            wall_s=wall_s, bytes_sent=sent, bytes_received=received, ok=averaged is not None,
            group=group, train_loss=work.loss if math.isfinite(work.loss) else None, val_bpb=val,
            state_hash=self._snapshot.hash, payload_bytes=self.payload_bytes, blocked_s=work.blocked_s,
            outliers=reducer_outliers(self.swarm.averager, work.round, averaged is not None),
            dissent=agreement_dissent(self.swarm.averager, averaged is not None),
        )

    def pause(self, stop: threading.Event, on_round: OnRound) -> None:
        """Leave the swarm's rounds while the work gate is closed; on reopening, rejoin and resync.

        Leaving cleanly: no all-reduce in flight (overlap lands it first), no matchmaking, the progress
        record replaced by hivemind's tombstone (``ProgressTracker.shutdown``: the others' round targets
        and group sizes stop counting us), no state sharing (ours falls behind while we wait)."""
        self._land_pending(on_round)
        self.status, self.stats.pauses = self._paused_status(), self.stats.pauses + 1
        t0 = time.monotonic()
        logger.info("paused (%s): leaving the swarm's rounds at round %d", self.gate.describe(), self.round)
        self.statesync.share(False)
        self.swarm.tracker.shutdown()
        try:
            while not stop.is_set() and not self.gate.wait_open(stop, 1.0):
                self.status = self._paused_status()
        finally:
            self.stats.paused_s += time.monotonic() - t0
        if stop.is_set():
            return
        logger.info("resuming after %.0f s: rejoining the swarm, downloading its state first", time.monotonic() - t0)
        self.swarm.restart_tracker()
        self.need_resync = True  # the next round starts with a state download (and shares again after it)
        self.status = "joining"

    def _paused_status(self) -> str:
        """"standby": the organizer's plan holds the node back (billed neither); "paused": the volunteer's reasons."""
        return "standby" if "standby" in self.gate.reasons else "paused"

    def _land_pending(self, on_round: OnRound) -> None:
        if (finished := self.rounds.land_pending()) is not None:
            on_round(finished)

    # ---------------------------------------------------------------- setting up
    def __init__(self, manifest: RunManifest, corpus: Corpus, swarm: SwarmHandles, *, peer_id: str, state_dir: Path,
                 cfg: NodeConfig, device: str = "cpu", local: LocalGroup | None = None, gate: WorkGate | None = None,
                 identity: Identity | None = None, initial: list[torch.Tensor] | None = None):
        """``swarm``: its DHT started; it builds the tracker and averager (tests pass a fake of the same shape)."""
        self.manifest, self.swarm, self.peer_id, self.cfg = manifest, swarm, peer_id, cfg
        self.local, self.gate = local, gate or WorkGate()  # local: several devices (node/train/ddp.py) take the inner steps
        self.device, self.eval_batches, self.eval_windows = device, cfg.eval_batches, cfg.eval_windows
        self.checkpoint_path = state_dir / "checkpoint.pt"
        hp, spec = manifest.hparams, manifest.model
        if local is not None and (cfg.micro_batches > 1 or cfg.activation_checkpointing):
            raise ValueError("--micro-batches and --activation-checkpointing train on one device; not with --devices yet")
        if hp.batch_size % cfg.micro_batches:
            raise ValueError(f"--micro-batches {cfg.micro_batches} does not divide the run's batch of {hp.batch_size} sequences")

        torch.manual_seed(manifest.seed)  # round 0: every node starts from the same weights
        self.model = GPT(spec).to(device)
        self.model.checkpointing = cfg.activation_checkpointing
        if initial is not None:  # the manifest's initial checkpoint (node.model.initial), verified by its hash
            with torch.no_grad():
                for p, x in zip(self.model.parameters(), initial):
                    p.copy_(x)
        self.global_params = [p.detach().to("cpu", torch.float32).clone() for p in self.model.parameters()]
        self.outer_opt = outer_optimizer(self.global_params, hp.outer_lr, hp.outer_momentum)
        self.inner_opt = inner_optimizer(self.model.parameters(), hp)
        if local is not None:
            local.attach(self.model, self.inner_opt)
        self.sampler = ByteSampler.for_node(corpus.train, spec.block_size, hp.batch_size, manifest.run_id, peer_id)
        self.val_data = corpus.val
        self.payload_bytes = 4 * sum(p.numel() for p in self.global_params)
        codec = get_codec(manifest.codec)
        self.error_feedback = ErrorFeedback(codec, [p.shape for p in self.global_params]) if codec.error_feedback else None
        self.rounds = strategy(self)  # blocking or overlapped all-reduce (node/train/rounds.py)
        # where this round's inner phase started: the global parameters themselves when the strategy
        # allows it (blocking rounds), which saves a full fp32 copy of the model
        self.anchor = self.global_params if self.rounds.anchor_is_global else [p.clone() for p in self.global_params]
        self.round = 0  # the swarm round this node works on (hivemind's epoch)
        self.global_round = 0  # rounds folded into the global parameters (overlap: one behind ``round``)
        self.need_resync = False
        self.stats, self.status = TrainerStats(), "joining"
        self._state_lock = threading.Lock()  # global parameters and momentum change under it, with their snapshot
        self._snapshot = self._make_snapshot()
        self._resume()

        swarm.start_training(manifest, cfg, [p.shape for p in self.global_params],
                             self._serve_state)
        self.statesync = StateSync(swarm, manifest, identity, self.payload_bytes, cfg.bandwidth)
        self.statesync.advertise(self.global_round)
        self.step_timeout = 3 * cfg.matchmaking_time_s + 2
        self.timeouts = LinkTimeouts(swarm.averager, self.payload_bytes, cfg.bandwidth, cfg.chunk_timeout_floor_s)

    # ---------------------------------------------------------------- state and checkpoints
    @property
    def state_hash(self) -> str:
        """Hash of the global state after the last completed round."""
        return self._snapshot.hash

    def _make_snapshot(self) -> GlobalState:
        """The global state and its hash, holding the live tensors (a copy would be a full model's worth
        at real size): it is remade, under ``_state_lock``, wherever they change."""
        return GlobalState(self.global_round, list(self.global_params), outer_momentum(self.outer_opt, copy=False))

    def _serve_state(self) -> tuple[dict, list[torch.Tensor]]:
        """What a joiner downloads (called on the averager's thread in this process): the snapshot,
        copied once under the lock straight into shared memory, which carries it to the averager
        process; the copy lives only while it is served."""
        with self._state_lock:
            meta, tensors = self._snapshot.to_wire(self.manifest.content_hash)
            return meta, [torch.empty_like(x).share_memory_().copy_(x) for x in tensors]

    def _load_global(self, state: GlobalState) -> None:
        with self._state_lock, torch.no_grad():
            for g, p in zip(self.global_params, state.params):
                g.copy_(p)
            load_outer_momentum(self.outer_opt, state.momentum)
            self.global_round = self.round = state.round
            self._snapshot = self._make_snapshot()
        self.restart_from(self.global_params)

    def _resume(self) -> None:
        ckpt = NodeCheckpoint.load(self.checkpoint_path)
        if ckpt is None:
            return
        if ckpt.manifest_hash != self.manifest.content_hash:
            raise ValueError(f"{self.checkpoint_path} belongs to another run manifest; use another --state-dir")
        self._load_global(ckpt.state)
        self.inner_opt.load_state_dict(ckpt.inner_opt)
        self.sampler.rng.set_state(ckpt.sampler_rng)
        if self.error_feedback is not None and ckpt.ef_residuals is not None:
            self.error_feedback.load_state_dict(ckpt.ef_residuals)
        self.stats.restore(ckpt.counters)
        self.stats.resumed_from = {"round": self.round, "state_hash": self._snapshot.hash}
        logger.info("resumed from %s at round %d", self.checkpoint_path, self.round)

    def save(self) -> None:
        t0 = time.perf_counter()
        NodeCheckpoint(
            self.manifest.content_hash, self.manifest.to_bytes(), self._snapshot, self.inner_opt.state_dict(),
            self.sampler.rng.get_state(), self.stats.counters(CHECKPOINT_COUNTERS),
            self.error_feedback.state_dict() if self.error_feedback is not None else None,
        ).save(self.checkpoint_path)
        self.stats.checkpoints += 1
        self.stats.checkpoint_s += time.perf_counter() - t0

    def announce_state(self) -> None:
        """Announce our state's hash (after a round, a download, every 5 s from the daemon), unless it is a
        fork or lacks an average the others folded (``holds_current_state``)."""
        if not self.need_resync and self.rounds.holds_current_state():
            self.statesync.announce(self.global_round, self._snapshot.hash)

    def sync_from_peers(self, at_round: int | None = None) -> bool:
        """Download the latest global state (``node.net.statesync``), check it, adopt it. True on success.
        ``at_round``: only the state of exactly that global round, to work on the round of that number
        (the catch-up in ``Overlap.end_round`` before a launch)."""
        self.status = "syncing"
        t0 = time.perf_counter()
        needed = self.rounds.state_round_needed() if at_round is None else at_round
        state = self.statesync.download(needed, [p.shape for p in self.global_params])
        if state is None or not (self.rounds.adopts(state) if at_round is None else state.round == at_round):
            return False
        self._load_global(state)
        self.round = self.rounds.round_after_sync(state) if at_round is None else at_round
        self.stats.hash_history[self.global_round] = self._snapshot.hash
        self.statesync.advertise(self.global_round)
        with self.swarm.tracker.pause_updates():
            self.swarm.tracker.update_epoch(self.round)
        self.stats.synced_from_peers = {"round": self.round, "state_hash": self._snapshot.hash,
                                        "seconds": round(time.perf_counter() - t0, 3)}  # download, checks, adoption
        self.need_resync, self.statesync.announcing = False, True
        self.statesync.share(True)
        self.announce_state()
        logger.info("synchronised with the swarm at round %d (state %s)", self.round, self._snapshot.hash[:12])
        return True

    def evaluate(self) -> float:
        t0 = time.perf_counter()
        bpb = evaluate_bpb(self.model, self.val_data, self.manifest.model.block_size, self.device, batches=self.eval_batches,
                           batch_size=self.eval_windows)
        self.stats.evaluations += 1
        self.stats.eval_s += time.perf_counter() - t0
        return bpb

    def restart_from(self, start: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for local, a, x in zip(self.model.parameters(), self.anchor, start):
                local.copy_(x)
                if a is not x:
                    a.copy_(x)

