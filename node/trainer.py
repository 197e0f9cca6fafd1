"""The DiLoCo training loop, readable top to bottom.

One round:
  1. inner phase: local AdamW steps on this node's own sample stream, counting tokens and
     publishing progress, until the *swarm* has processed the round's token target;
  2. pseudo-gradient = global - local parameters, averaged over the group (weighted by tokens)
     with the exact-average all-reduce of ``node.averaging``;
  3. outer step: Nesterov SGD on the global parameters; local parameters restart from them.
A node that is behind the swarm (it joined late, or a round failed for it) first downloads
the global state from a peer and checks its hash. The baseline ``sync`` algorithm is plain
``hivemind.Optimizer`` (``node/sync.py``).

``diloco-overlap`` hides the all-reduce behind compute (a one-round-delayed outer update, as in
eager / streaming DiLoCo): the all-reduce of round r runs in the background while round r+1's
inner steps proceed; it lands at the end of round r+1, and round r+2 starts from the new global
parameters plus this node's own round-(r+1) progress, which is still on its way to the others.

The work gate (``node/gate.py``: schedule, busy, ``swarm ctl pause``, standby) is checked between
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from node.config import NodeConfig
from node import faults
from node.announce import StateAnnouncer
from node.averaging import PseudoGradientAverager, make_codec
from node.codecs import ErrorFeedback, get_codec
from node.data import ByteSampler, Corpus, evaluate_bpb
from node.ddp import LocalGroup
from node.diloco import (inner_optimizer, inner_step, load_outer_momentum, outer_momentum, outer_optimizer, outer_step,
                          pseudo_gradient, warmup_lr)
from node.gate import WorkGate
from node.group import parse_group, reference_hash, token_ceiling
from node.model import GPT
from node.robust import MemberStats, outliers
from node.policies.schedule import is_behind
from node.policies.timeouts import allreduce_timeout, chunk_timeout, state_download_timeout, update_link_estimate
from node.state import GlobalState, StateCheck, load_checkpoint, save_checkpoint
from node.swarm import SwarmHandles, averager_kwargs, make_tracker, run_prefix
from protocol import Identity, RunManifest

__all__ = ["RoundResult", "Trainer"]

logger = logging.getLogger(__name__)

SYNC_ATTEMPTS = 4  # reads of the state vote (and downloads) per resynchronisation
SYNC_RETRY_S = 0.75  # between them: announcements trail the served state by a DHT round trip


@dataclass
class RoundResult:
    round: int  # the round this work went into
    tokens: int
    samples: int
    compute_s: float
    wall_s: float
    bytes_sent: int
    bytes_received: int
    ok: bool  # False: the all-reduce failed and the local work was discarded
    group: list[tuple[str, int]] = field(default_factory=list)  # (peer id, claimed tokens), this node included
    train_loss: float | None = None  # nats per byte
    val_bpb: float | None = None
    state_hash: str = ""  # of the global state after this round
    payload_bytes: int = 0
    blocked_s: float | None = None  # of wall_s, waiting on the network (None: not measured)
    # robust aggregation: per all-reduce our reducer ran, (members aggregated, {outlier peer id: stats})
    outliers: list[tuple[int, dict[str, MemberStats]]] = field(default_factory=list)


@dataclass
class _Launch:
    """An all-reduce started by ``Trainer._launch``."""

    control: Any = None  # hivemind StepControl
    alone: list[torch.Tensor] | None = None  # no peers: our own pseudo-gradient is the average
    residuals_before: list[torch.Tensor] | None = None  # error feedback, restored if the round fails
    failed: bool = False
    state_hash: str = ""  # of the global state the pseudo-gradient applies to


@dataclass
class _Work:
    """One round's local work, from the start of its inner phase to its outer step."""

    t_start: float
    round: int
    sent0: int = 0  # averager byte counters when this round's all-reduce started
    recv0: int = 0
    tokens: int = 0
    samples: int = 0
    compute_s: float = 0.0
    blocked_s: float = 0.0  # waiting on the network inside [t_start, t_end]
    loss: float = float("nan")
    launch: _Launch | None = None
    t_end: float | None = None  # overlap: when the next inner phase started (the wait is billed to it)

    def mark_bytes(self, counters: Any) -> None:
        self.sent0, self.recv0 = counters.sent, counters.received


_InFlight = _Work  # overlap mode: the round whose all-reduce runs behind the next inner phase


def pick_device(choice: str) -> str:
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but torch sees no CUDA device")
    return choice


class Trainer:
    def __init__(
        self,
        manifest: RunManifest,
        corpus: Corpus,
        swarm: SwarmHandles,
        *,
        peer_id: str,
        state_dir: Path,
        cfg: NodeConfig,
        device: str = "cpu",
        local: LocalGroup | None = None,
        gate: WorkGate | None = None,
        identity: Identity | None = None,
        initial: list[torch.Tensor] | None = None,
    ):
        self.manifest, self.swarm, self.peer_id, self.cfg = manifest, swarm, peer_id, cfg
        self.local = local  # several local devices (node/ddp.py): their inner steps go through it
        self.gate = gate or WorkGate()
        self.device, self.eval_batches = device, cfg.eval_batches
        self.checkpoint_path = state_dir / "checkpoint.pt"
        hp, spec = manifest.hparams, manifest.model

        torch.manual_seed(manifest.seed)  # round 0: every node starts from the same weights
        self.model = GPT(spec).to(device)
        if initial is not None:  # the manifest's initial checkpoint (node.initial), verified by its hash
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

        self.overlap = manifest.algorithm == "diloco-overlap"
        self.in_flight: _InFlight | None = None  # overlap: the all-reduce running behind this round
        self.anchor = [p.clone() for p in self.global_params]  # overlap: where this round's inner phase started
        self.round = 0  # the swarm round this node works on (hivemind's epoch)
        self.global_round = 0  # rounds folded into the global parameters (overlap: one behind ``round``)
        self.inner_steps = 0
        self.tokens_total = 0  # every token this node processed in reported rounds
        self.tokens_contributed = 0  # tokens of rounds that went into the model (ok all-reduce)
        self.rounds_done = 0
        self.bytes_sent = self.bytes_received = 0
        self.compute_s = 0.0  # seconds in forward/backward/optimizer, all rounds
        self.eval_s = 0.0  # seconds spent on validation
        self.blocked_s = 0.0  # seconds the training loop waited on the network, all rounds
        self.need_resync = False
        self.initial_val_bpb: float | None = None
        self.last_val_bpb: float | None = None
        self.val_history: list[tuple[int, int, float]] = []  # (global round, our contributed tokens, val bpb): the model card's curve
        self.resumed_from: dict[str, Any] | None = None
        self.synced_from_peers: dict[str, Any] | None = None
        self.hash_history: dict[int, str] = {}  # round -> global state hash after it
        self.first_contribution: int | None = None  # round of our first successful all-reduce
        self.round_log: dict[int, tuple[float, int]] = {}  # round -> (unix time it ended, our tokens in it)
        self.last_group: list[str] = []  # peer ids of the last round's all-reduce group
        self.pauses = 0  # times the work gate held this node back
        self.paused_s = 0.0  # seconds spent held back
        self.round_count, self.round_s_sum, self.last_round_s = 0, 0.0, None  # wall time of rounds (metrics)
        self.status = "joining"
        self._resume()
        self._snapshot = self._make_snapshot()

        self.swarm.tracker = make_tracker(swarm.dht, manifest, cfg)
        opts = averager_kwargs(cfg, self.payload_bytes)
        self.swarm.averager = PseudoGradientAverager(
            [torch.zeros_like(p) for p in self.global_params],
            swarm.dht,
            prefix=run_prefix(manifest),
            state_provider=lambda: self._snapshot.to_wire(manifest.content_hash),
            compression=make_codec(manifest.codec),
            aggregation=manifest.hparams.aggregation,
            start=True,
            **opts,
        )
        self._advertise_state()
        # signed state-hash announcements (node/announce.py); without an identity, downloads are
        # checked only against the hash their server claims
        self.announcer = StateAnnouncer(swarm.dht, manifest, identity, run_prefix(manifest)) if identity is not None else None
        self.announcing = False  # from our first agreed round or download on: a fresh node's round 0 is no vote
        self.step_timeout = 3 * opts["min_matchmaking_time"] + 2
        self.bandwidth = opts["bandwidth"]  # bytes/s: the slowest link the timeouts assume (configured)
        self.link_estimate: float | None = None  # bytes/s: what our all-reduces actually moved
        self.streams = 1  # part streams sharing a link in the next all-reduce (group size - 1)
        self.matchmaking_s, self.chunk_floor_s = cfg.matchmaking_time_s, cfg.chunk_timeout_floor_s

    @property
    def state_hash(self) -> str:
        """Hash of the global state after the last completed round."""
        return self._snapshot.hash

    # ---------------------------------------------------------------- state and checkpoints
    def _make_snapshot(self) -> GlobalState:
        return GlobalState(self.global_round, [p.clone() for p in self.global_params], outer_momentum(self.outer_opt))

    def _load_global(self, state: GlobalState) -> None:
        with torch.no_grad():
            for g, p in zip(self.global_params, state.params):
                g.copy_(p)
        load_outer_momentum(self.outer_opt, state.momentum)
        self._restart_from(self.global_params)
        self.global_round = self.round = state.round

    def _resume(self) -> None:
        ckpt = load_checkpoint(self.checkpoint_path)
        if ckpt is None:
            return
        if ckpt["manifest_hash"] != self.manifest.content_hash:
            raise ValueError(f"{self.checkpoint_path} belongs to another run manifest; use another --state-dir")
        self._load_global(GlobalState(ckpt["round"], ckpt["params"], ckpt["momentum"]))
        self.inner_opt.load_state_dict(ckpt["inner_opt"])
        self.sampler.rng.set_state(ckpt["sampler_rng"])
        if self.error_feedback is not None and ckpt.get("ef_residuals") is not None:
            self.error_feedback.load_state_dict(ckpt["ef_residuals"])
        for k in ("inner_steps", "tokens_total", "tokens_contributed", "rounds_done", "bytes_sent", "bytes_received", "initial_val_bpb", "last_val_bpb", "val_history"):
            setattr(self, k, ckpt.get(k, getattr(self, k)))
        self.resumed_from = {"round": self.round, "state_hash": self._make_snapshot().hash}
        logger.info("resumed from %s at round %d", self.checkpoint_path, self.round)

    def save(self) -> None:
        snap = self._snapshot
        save_checkpoint(self.checkpoint_path, {
            "manifest_hash": self.manifest.content_hash, "manifest": self.manifest.to_bytes(), "round": snap.round, "params": snap.params,
            "momentum": snap.momentum, "inner_opt": self.inner_opt.state_dict(), "sampler_rng": self.sampler.rng.get_state(),
            "inner_steps": self.inner_steps, "tokens_total": self.tokens_total, "tokens_contributed": self.tokens_contributed, "rounds_done": self.rounds_done,
            "bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received,
            "initial_val_bpb": self.initial_val_bpb, "last_val_bpb": self.last_val_bpb, "val_history": self.val_history,
            "ef_residuals": self.error_feedback.state_dict() if self.error_feedback is not None else None,
        })

    def _advertise_state(self) -> None:
        """Joiners download from the peer with the newest round; a client (behind NAT) serves none."""
        if not self.swarm.averager.client_mode:
            self.swarm.averager.state_sharing_priority = float(self.global_round)

    def announce_state(self) -> None:
        """Announce our global state's hash (after a round, a download, and every 5 s from the
        daemon), unless we know it is a fork."""
        if self.announcer is None or self.need_resync or not self.announcing:
            return
        try:
            self.announcer.announce(self.global_round, self._snapshot.hash)
        except Exception:  # the DHT is shutting down, or busy: the next announcement comes soon
            logger.debug("state announcement failed", exc_info=True)

    def _withdraw_announcement(self) -> None:
        """A node that learns it is forked replaces its announcement with an abstention (an empty
        hash, which no reader counts). Otherwise every member of a group that disagreed would stop
        announcing while their older records lingered, and the vote among those could leave no
        majority ahead of anyone: a fork that never heals (seen in an overlapped loopback run)."""
        if self.announcer is None or not self.announcing:
            return
        try:
            self.announcer.announce(self.global_round, "")
        except Exception:
            logger.debug("withdrawing the state announcement failed", exc_info=True)

    def _share_state(self, allow: bool) -> None:
        """Serve our global state to joiners, or stop while we know it is a fork (downloaders then
        try the next peer). Takes effect at once: the flag is shared with the averager process."""
        averager = self.swarm.averager
        if averager.allow_state_sharing != allow and not averager.client_mode:
            averager.allow_state_sharing = allow

    def _state_check(self) -> StateCheck | None:
        """What a downloaded state must be now: the majority's announced hash (None: no majority yet)."""
        expected = None
        if self.announcer is not None:
            try:
                majority = self.announcer.majority()
            except Exception as e:  # the DHT is busy or shutting down: try again
                logger.warning("could not read state announcements: %r", e)
                return None
            if majority is None or majority.round < self.global_round:
                logger.info("no majority of announced state hashes ahead of us yet")
                return None
            expected = majority.state_hash
            logger.info("downloading the state of round %d that %d of %d announcing peers hold (%s)", majority.round,
                        majority.votes, majority.voters, expected[:12])
        return StateCheck(self.manifest.content_hash, tuple(tuple(p.shape) for p in self.global_params), expected, self.global_round)

    def sync_from_peers(self) -> bool:
        """Download the latest global state, check it, adopt it. True on success.

        With announcements (a node with an identity), only the state whose hash a majority of the
        distinct recently active peers announced is accepted (``node.announce``); the averager
        tries peer after peer until one serves exactly that. Announcements reach the DHT a moment
        after the state they describe is served, and short rounds move both on: so a refused or
        premature attempt re-reads the vote and tries again, a few times within the download budget."""
        timeout = state_download_timeout(2 * self.payload_bytes, self.bandwidth)
        self.status = "syncing"
        deadline = time.monotonic() + timeout
        got = None
        for attempt in range(SYNC_ATTEMPTS):
            if attempt:
                time.sleep(SYNC_RETRY_S)
            if time.monotonic() > deadline:
                break
            check = self._state_check()
            if check is None:
                continue
            try:
                got = self.swarm.averager.load_state_from_peers(timeout=max(1.0, deadline - time.monotonic()), accept=check)
            except Exception as e:  # a peer that froze mid-download; the next round tries again
                logger.warning("state download failed: %r", e)
                return False
            if got is not None:
                break
        if got is None:
            return False
        meta, tensors = got
        if (why_not := check(meta, list(tensors))) is not None:  # the averager checked; this is our own look
            logger.warning("downloaded state refused: %s", why_not)
            return False
        state = GlobalState.from_wire(meta, list(tensors), [p.shape for p in self.global_params])
        if self.overlap and state.round + 1 < self.swarm.tracker.global_epoch:
            # overlap joins the round after the one in flight, assuming the state is the newest folded
            # one: an older (if majority-announced) state would fork us at once; the next round retries
            logger.info("downloaded state of round %d is behind the swarm's round %d; not adopted", state.round,
                        self.swarm.tracker.global_epoch)
            return False
        self._load_global(state)
        if self.overlap:  # the swarm already has the next round's all-reduce in flight: join the round after it
            self.round = max(self.round, self.swarm.tracker.global_epoch)
        self._snapshot = self._make_snapshot()
        self.hash_history[self.global_round] = self._snapshot.hash
        self._advertise_state()
        with self.swarm.tracker.pause_updates():
            self.swarm.tracker.update_epoch(self.round)
        self.synced_from_peers = {"round": self.round, "state_hash": self._snapshot.hash}
        self.need_resync = False
        self._share_state(True)
        self.announcing = True
        self.announce_state()
        logger.info("synchronised with the swarm at round %d (state %s)", self.round, self._snapshot.hash[:12])
        return True

    def evaluate_global(self) -> float:
        """Validation bits per byte of the global parameters (the swarm's model, not our local one)."""
        if not self.overlap:  # blocking: the local model restarts from the global parameters anyway
            return self.evaluate()
        with torch.no_grad():
            local = [p.detach().clone() for p in self.model.parameters()]
            for p, g in zip(self.model.parameters(), self.global_params):
                p.copy_(g)
            bpb = self.evaluate()
            for p, x in zip(self.model.parameters(), local):
                p.copy_(x)
        return bpb

    def evaluate(self) -> float:
        t0 = time.perf_counter()
        bpb = evaluate_bpb(self.model, self.val_data, self.manifest.model.block_size, self.device, batches=self.eval_batches)
        self.eval_s += time.perf_counter() - t0
        return bpb

    # ---------------------------------------------------------------- the round
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
            lr = warmup_lr(hp, self.inner_steps)
            x, y = self.sampler.batch()
            if self.local is not None:  # the batch is shared over the node's devices
                loss = self.local.step(x, y, lr)
            else:
                loss = inner_step(self.model, self.inner_opt, x, y, lr=lr, grad_clip=hp.grad_clip, device=self.device)
            loss_sum += loss.item()  # CPU-GPU sync point, once per step
            compute_s += time.perf_counter() - t0
            steps += 1
            self.inner_steps += 1
            samples += x.shape[0]
            tokens += x.numel()
            tracker.report_local_progress(self.round, tokens)
            if tracker.ready_to_update_epoch:
                break
        return tokens, samples, compute_s, loss_sum / max(1, steps)

    # ---------------------------------------------------------------- averaging
    def _launch(self, tokens: int, pseudo: list[torch.Tensor]) -> _Launch:
        """Start the all-reduce of ``pseudo`` (weighted by ``tokens``); alone in the swarm, keep our own."""
        if self.swarm.tracker.global_progress.num_peers <= 1 and not self._others_training():
            return _Launch(alone=pseudo)
        self.status = "averaging"
        self._expect_group()
        residuals_before = None
        if (scale := faults.poison_scale()) is not None:  # test seam: a poisoning node (CAPASWARM_FAULT=poison:S)
            pseudo = [g * scale for g in pseudo]
        if self.error_feedback is not None:  # send what the codec can carry; keep the rest for next round
            residuals_before = self.error_feedback.state_dict()
            pseudo = self.error_feedback.apply(pseudo)
        with self.swarm.averager.get_tensors() as buffers:
            for b, g in zip(buffers, pseudo):
                b.copy_(g)
        try:
            control = self.swarm.averager.step(
                gather={"tokens": tokens, "state_hash": self._snapshot.hash, "state_round": self.global_round},
                weight=float(max(tokens, 1)),
                timeout=self.step_timeout,
                allow_retries=False,  # a retry would run on buffers a failed attempt already overwrote
                wait=False,
            )
        except Exception as e:
            logger.warning("round %d: could not start the all-reduce: %r", self.round, e)
            control = None
        return _Launch(control=control, residuals_before=residuals_before, failed=control is None, state_hash=self._snapshot.hash)

    def _others_training(self) -> bool:
        """A fresh look at the DHT: the tracker's cached view lags just after a peer joins, and a
        node that wrongly believes it is alone steps on its own and forks the global state."""
        found = self.swarm.dht.get(self.swarm.tracker.training_progress_key, latest=True)
        if found is None or not isinstance(found.value, dict):
            return False
        return sum(1 for v in found.value.values() if getattr(v, "value", None) is not None) > 1

    def _swarm_round(self) -> int:
        """The swarm's round from a fresh look at the DHT. The tracker's view comes from one read when
        it starts; a joiner whose read found no record yet (its DHT had just bootstrapped) believed the
        swarm was at round 0, skipped the state download, trained from the seed weights and averaged
        that work into the others' later round (then resynchronised, too late for them)."""
        tracker = self.swarm.tracker
        newest = tracker.global_epoch
        try:
            found = self.swarm.dht.get(tracker.training_progress_key, latest=True)
        except Exception:  # the DHT is stopping, or the read failed: keep the tracker's view
            logger.debug("could not read the swarm's progress", exc_info=True)
            return newest
        if found is not None and isinstance(found.value, dict):
            for entry in found.value.values():
                progress = getattr(entry, "value", None)
                if isinstance(progress, dict) and isinstance(progress.get("epoch"), int):
                    newest = max(newest, progress["epoch"])
        return newest

    def _land(self, launch: _Launch, round_: int) -> tuple[list[torch.Tensor] | None, list[tuple[str, int]]]:
        """Wait for a launched all-reduce: the averaged pseudo-gradient and the group's claims, or None."""
        if launch.alone is not None:
            return launch.alone, [(self.peer_id, -1)]
        gathered = None
        if not launch.failed:
            try:
                gathered = launch.control.result()
            except Exception as e:  # a failed group is an expected event in a volunteer swarm
                logger.warning("round %d: all-reduce failed: %r", round_, e)
        averager = self.swarm.averager
        if gathered:
            with averager.get_tensors() as buffers:
                if not all(torch.isfinite(b).all() for b in buffers):
                    logger.error("round %d: the group's average is not finite; round abandoned", round_)
                    gathered = None
        if not gathered:
            if launch.residuals_before is not None:  # the round's work is discarded: so is its residual update
                self.error_feedback.load_state_dict(launch.residuals_before)
            return None, []
        # values from other members are untrusted: malformed or implausible ones drop that member
        members = parse_group(gathered, token_ceiling(self.manifest.round_tokens))
        group = [(m.peer_id, m.tokens) for m in members]
        reference = reference_hash(members)
        if reference is not None and launch.state_hash != reference:
            logger.warning("round %d: our global state differs from the group's; will resynchronise", round_)
            self.need_resync = True
            self._share_state(False)  # a joiner must not download our fork (it would have to resync again)
            self._withdraw_announcement()  # nor count our fork's hash (or our last one) in the vote
        with averager.get_tensors() as buffers:
            return [b.clone() for b in buffers], group

    # ---------------------------------------------------------------- the round
    def run_round(self, stop: threading.Event) -> RoundResult | None:
        t_start = time.perf_counter()
        swarm_round = self.swarm.tracker.global_epoch
        if self.first_contribution is None and self.synced_from_peers is None:  # not yet in step with the swarm
            swarm_round = max(swarm_round, self._swarm_round())
        if self.need_resync or is_behind(self.round, swarm_round):
            self._drop_in_flight()
            if not self.sync_from_peers() and self.need_resync:
                logger.info("no peer could give us newer state yet; continuing from round %d", self.round)
                self.need_resync = False
                self._share_state(True)
        # a state download is part of the round it precedes, in its wall time and as waiting
        work = _Work(t_start=t_start, round=self.round, blocked_s=time.perf_counter() - t_start)
        self.sampler.start_round(self.round)  # this round's windows: a function of (run, peer, round)
        work.tokens, work.samples, work.compute_s, work.loss = self.inner_phase(stop)
        if stop.is_set() or self.need_resync or work.tokens == 0 or not self.gate.open:
            self._reset_local()  # abandon the partial round
            return None
        pseudo = pseudo_gradient(self.anchor, self.model.parameters())
        if not self.overlap:
            work.mark_bytes(self.swarm.averager.counters)
            t_launch = time.perf_counter()
            work.launch = self._launch(work.tokens, pseudo)
            averaged, group = self._land(work.launch, work.round)
            work.blocked_s += time.perf_counter() - t_launch  # matchmaking and the whole all-reduce
            if averaged is not None and work.launch.control is not None:
                self._measure_link(work, time.perf_counter() - t_launch - self.matchmaking_s)
            return self._finish(work, averaged, group)
        # overlap: land the all-reduce that ran behind this inner phase, then launch this round's
        finished = None
        if self.in_flight is not None:
            prev, self.in_flight = self.in_flight, None
            t_wait = time.perf_counter()
            averaged, group = self._land(prev.launch, prev.round)
            work.blocked_s += time.perf_counter() - t_wait  # only what the inner phase did not hide
            finished = self._finish(prev, averaged, group, advance=False)
        work.mark_bytes(self.swarm.averager.counters)  # after the previous all-reduce landed: only ours counts
        t_launch = time.perf_counter()
        work.launch = self._launch(work.tokens, pseudo)
        work.blocked_s += time.perf_counter() - t_launch
        with self.swarm.tracker.pause_updates():
            self.round = self.swarm.tracker.update_epoch(self.round + 1)
        self._restart_from([g - d for g, d in zip(self.global_params, pseudo)])  # consensus + our own progress
        work.t_end = time.perf_counter()
        self.in_flight = work
        return finished

    def _finish(self, work: _Work, averaged: list[torch.Tensor] | None, group: list[tuple[str, int]],
                advance: bool = True) -> RoundResult:
        """Apply a landed all-reduce (or not), account for the round, checkpoint, evaluate."""
        if averaged is not None:
            outer_step(self.outer_opt, averaged)  # Nesterov SGD on the global parameters
            self.global_round += 1
        if advance:  # blocking mode: the round ends here, and the next starts from the global parameters
            if averaged is not None:
                with self.swarm.tracker.pause_updates():
                    self.round = self.swarm.tracker.update_epoch(self.round + 1)
            # a failed group keeps the old global state; if some members did step, the swarm's
            # round moves past ours and the next round starts with a download
            self._restart_from(self.global_params)
        self._snapshot = self._make_snapshot()
        self._advertise_state()
        sent = self.swarm.averager.counters.sent - work.sent0
        received = self.swarm.averager.counters.received - work.recv0
        self.bytes_sent += sent
        self.bytes_received += received
        self.tokens_total += work.tokens
        self.compute_s += work.compute_s
        self.blocked_s += work.blocked_s
        val = None
        if averaged is not None:
            self.rounds_done += 1
            self.tokens_contributed += work.tokens
            self.round_log[work.round] = (time.time(), work.tokens)
            self.round_log.pop(work.round - 500, None)
            if self.first_contribution is None:
                self.first_contribution = work.round
            self.last_group = [p for p, _ in group]
            self.hash_history[self.global_round] = self._snapshot.hash
            self.announcing = self.announcing or bool(group)  # our state agreed with a group's (or we are alone)
            self.announce_state()
            val = self.last_val_bpb = self.evaluate_global()
            self.val_history.append((self.global_round, self.tokens_contributed, val))
            del self.val_history[:-2000]  # bounded: a long run keeps its last 2,000 rounds
            self.save()
        group = [(p, work.tokens if t < 0 else t) for p, t in group]
        wall_s = (work.t_end or time.perf_counter()) - work.t_start
        self.round_count, self.round_s_sum, self.last_round_s = self.round_count + 1, self.round_s_sum + wall_s, wall_s
        seen = self.swarm.averager.drain_reducer_stats()  # what our reducer saw of each sender
        found = [(len(stats), flagged) for stats in seen if (flagged := outliers(stats))] if averaged is not None else []
        for members, flagged in found:
            logger.warning("round %d: our reducer clipped or found empty the parts of %s", work.round,
                           ", ".join(f"{p[-8:]} (norm x{s.max_ratio:.2f}..x{s.min_ratio:.2f})" for p, s in flagged.items()))
        return RoundResult(
            round=work.round, tokens=work.tokens, samples=work.samples, compute_s=work.compute_s,
            wall_s=wall_s, bytes_sent=sent, bytes_received=received, ok=averaged is not None,
            group=group, train_loss=work.loss if math.isfinite(work.loss) else None, val_bpb=val,
            state_hash=self._snapshot.hash, payload_bytes=self.payload_bytes, blocked_s=work.blocked_s, outliers=found,
        )

    def _measure_link(self, work: _Work, seconds: float) -> None:
        """Follow the measured all-reduce speed, and derive the timeouts from it (not from a guess)."""
        moved = self.swarm.averager.counters.sent - work.sent0
        estimate = update_link_estimate(self.link_estimate, moved, seconds)
        if estimate is None or estimate == self.link_estimate:
            return
        self.link_estimate = estimate
        self._apply_timeouts()

    def _apply_timeouts(self) -> None:
        """Chunk and all-reduce timeouts for the link speed we know and the group we expect."""
        # measurements only make the timeouts more patient: a slow link gets the time it needs, but a
        # fast loopback round (or a lucky one) never shortens them below what the configured link implies
        speed = min(self.link_estimate or self.bandwidth, self.bandwidth)
        self.swarm.averager.set_timeouts(chunk_s=chunk_timeout(speed, floor_s=self.chunk_floor_s, streams=self.streams),
                                         allreduce_s=allreduce_timeout(self.payload_bytes, 64, speed))

    def _expect_group(self) -> None:
        """Before an all-reduce: a link carries one part stream per other member, so the chunk timeout
        grows with the group we expect (the peers currently training)."""
        streams = max(1, self.swarm.tracker.global_progress.num_peers - 1)
        if streams != self.streams:
            self.streams = streams
            self._apply_timeouts()

    def _drop_in_flight(self) -> None:
        """Overlap: before a download, wait out the all-reduce in flight (the averager's buffers are busy)."""
        if self.in_flight is not None:
            self._land(self.in_flight.launch, self.in_flight.round)
            self.in_flight = None

    def _restart_from(self, start: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for local, a, x in zip(self.model.parameters(), self.anchor, start):
                local.copy_(x)
                a.copy_(x)

    def _reset_local(self) -> None:
        """Discard the current inner phase: back to where it started."""
        with torch.no_grad():
            for local, a in zip(self.model.parameters(), self.anchor):
                local.copy_(a)

    def _land_in_flight(self, on_round: Callable[[RoundResult], None]) -> None:
        """Overlap: land the all-reduce still in flight and account for it (before a pause or the end)."""
        if self.in_flight is not None:
            prev, self.in_flight = self.in_flight, None
            on_round(self._finish(prev, *self._land(prev.launch, prev.round), advance=False))

    def _paused_status(self) -> str:
        """"standby" while the organizer's plan holds the node back (the coordinator bills neither),
        else "paused" (the volunteer's own reasons)."""
        return "standby" if "standby" in self.gate.reasons else "paused"

    def pause(self, stop: threading.Event, on_round: Callable[[RoundResult], None]) -> None:
        """Leave the swarm's rounds while the work gate is closed; on reopening, rejoin and resync.

        Leaving cleanly: no all-reduce is in flight (overlap lands it first), matchmaking is never
        entered (``step`` is not called), the progress record is replaced by hivemind's tombstone
        (``ProgressTracker.shutdown``) so the others' round targets and group-size estimates stop
        counting us, and state sharing stops (our state falls behind while we wait).
        """
        self._land_in_flight(on_round)
        self.status, self.pauses = self._paused_status(), self.pauses + 1
        t0 = time.monotonic()
        logger.info("paused (%s): leaving the swarm's rounds at round %d", self.gate.describe(), self.round)
        self._share_state(False)
        self.swarm.tracker.shutdown()
        try:
            while not stop.is_set() and not self.gate.wait_open(stop, 1.0):
                self.status = self._paused_status()
        finally:
            self.paused_s += time.monotonic() - t0
        if stop.is_set():
            return
        logger.info("resuming after %.0f s: rejoining the swarm, downloading its state first", time.monotonic() - t0)
        self.swarm.tracker = make_tracker(self.swarm.dht, self.manifest, self.cfg)
        self.need_resync = True  # the next round starts with a state download (and shares again after it)
        self.status = "joining"

    def run(self, stop: threading.Event, on_round: Callable[[RoundResult], None], max_rounds: int | None = None) -> None:
        if self.initial_val_bpb is None:
            self.initial_val_bpb = self.last_val_bpb = self.evaluate()
            self.val_history.append((self.global_round, self.tokens_contributed, self.initial_val_bpb))
        while not stop.is_set() and (max_rounds is None or self.rounds_done < max_rounds):
            if not self.gate.open:
                self.pause(stop, on_round)
                continue
            result = self.run_round(stop)
            if result is not None:
                on_round(result)
        self._land_in_flight(on_round)  # overlap: land the last all-reduce, so the checkpoint has it
        self.status = "leaving"
