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
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from node.config import NodeConfig
from node.averaging import PseudoGradientAverager, make_codec
from node.codecs import ErrorFeedback, get_codec
from node.data import ByteSampler, Corpus, evaluate_bpb
from node.model import GPT
from node.policies.schedule import is_behind
from node.policies.timeouts import allreduce_timeout, chunk_timeout, state_download_timeout, update_link_estimate
from node.state import GlobalState, load_checkpoint, save_checkpoint
from node.swarm import SwarmHandles, averager_kwargs, make_tracker, run_prefix
from protocol import RunManifest

__all__ = ["RoundResult", "Trainer"]

logger = logging.getLogger(__name__)


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
    ):
        self.manifest, self.swarm, self.peer_id = manifest, swarm, peer_id
        self.device, self.eval_batches = device, cfg.eval_batches
        self.checkpoint_path = state_dir / "checkpoint.pt"
        hp, spec = manifest.hparams, manifest.model

        torch.manual_seed(manifest.seed)  # round 0: every node starts from the same weights
        self.model = GPT(spec).to(device)
        self.global_params = [p.detach().to("cpu", torch.float32).clone() for p in self.model.parameters()]
        self.outer_opt = torch.optim.SGD(self.global_params, lr=hp.outer_lr, momentum=hp.outer_momentum, nesterov=True)
        self.inner_opt = torch.optim.AdamW(self.model.parameters(), lr=hp.inner_lr, weight_decay=hp.weight_decay, betas=(0.9, 0.95))
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
        self.resumed_from: dict[str, Any] | None = None
        self.synced_from_peers: dict[str, Any] | None = None
        self.hash_history: dict[int, str] = {}  # round -> global state hash after it
        self.first_contribution: int | None = None  # round of our first successful all-reduce
        self.round_log: dict[int, tuple[float, int]] = {}  # round -> (unix time it ended, our tokens in it)
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
            start=True,
            **opts,
        )
        self.swarm.averager.state_sharing_priority = float(self.round)
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
        momentum = [self.outer_opt.state.get(p, {}).get("momentum_buffer", torch.zeros_like(p)).clone() for p in self.global_params]
        return GlobalState(self.global_round, [p.clone() for p in self.global_params], momentum)

    def _load_global(self, state: GlobalState) -> None:
        with torch.no_grad():
            for g, p, m in zip(self.global_params, state.params, state.momentum):
                g.copy_(p)
                self.outer_opt.state[g]["momentum_buffer"] = m.clone()
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
        for k in ("inner_steps", "tokens_total", "tokens_contributed", "rounds_done", "bytes_sent", "bytes_received", "initial_val_bpb", "last_val_bpb"):
            setattr(self, k, ckpt.get(k, getattr(self, k)))
        self.resumed_from = {"round": self.round, "state_hash": GlobalState(self.round, self.global_params, []).hash}
        logger.info("resumed from %s at round %d", self.checkpoint_path, self.round)

    def save(self) -> None:
        snap = self._snapshot
        save_checkpoint(self.checkpoint_path, {
            "manifest_hash": self.manifest.content_hash, "round": snap.round, "params": snap.params,
            "momentum": snap.momentum, "inner_opt": self.inner_opt.state_dict(), "sampler_rng": self.sampler.rng.get_state(),
            "inner_steps": self.inner_steps, "tokens_total": self.tokens_total, "tokens_contributed": self.tokens_contributed, "rounds_done": self.rounds_done,
            "bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received,
            "initial_val_bpb": self.initial_val_bpb, "last_val_bpb": self.last_val_bpb,
            "ef_residuals": self.error_feedback.state_dict() if self.error_feedback is not None else None,
        })

    def _share_state(self, allow: bool) -> None:
        """Serve our global state to joiners, or stop while we know it is a fork (downloaders then
        try the next peer). Takes effect at once: the flag is shared with the averager process."""
        averager = self.swarm.averager
        if averager.allow_state_sharing != allow and not averager.client_mode:
            averager.allow_state_sharing = allow

    def sync_from_peers(self) -> bool:
        """Download the latest global state from a peer, check it, adopt it. True on success."""
        timeout = state_download_timeout(2 * self.payload_bytes, self.bandwidth)
        self.status = "syncing"
        try:
            got = self.swarm.averager.load_state_from_peers(timeout=timeout)
        except Exception as e:  # a peer that froze mid-download; the next round tries again
            logger.warning("state download failed: %r", e)
            return False
        if got is None:
            return False
        meta, tensors = got
        if meta.get("manifest_hash") != self.manifest.content_hash:
            logger.warning("state from a peer of another manifest (%s); ignored", str(meta.get("manifest_hash"))[:12])
            return False
        state = GlobalState.from_wire(meta, list(tensors))
        if state.hash != meta.get("state_hash"):
            logger.warning("downloaded state does not match its hash; ignored")
            return False
        if state.round < self.global_round:
            return False
        self._load_global(state)
        if self.overlap:  # the swarm already has the next round's all-reduce in flight: join the round after it
            self.round = max(self.round, self.swarm.tracker.global_epoch)
        self._snapshot = self._make_snapshot()
        self.hash_history[self.global_round] = self._snapshot.hash
        self.swarm.averager.state_sharing_priority = float(self.global_round)
        with self.swarm.tracker.pause_updates():
            self.swarm.tracker.update_epoch(self.round)
        self.synced_from_peers = {"round": self.round, "state_hash": self._snapshot.hash}
        self.need_resync = False
        self._share_state(True)
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
        while not stop.is_set():
            if tracker.global_epoch > self.round:  # the swarm finished this round without us
                self.need_resync = True
                break
            t0 = time.perf_counter()
            lr = hp.inner_lr * min(1.0, (self.inner_steps + 1) / max(1, hp.warmup_steps))
            for group in self.inner_opt.param_groups:
                group["lr"] = lr
            x, y = self.sampler.batch()
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=self.device == "cuda"):  # bf16 matmuls on GPUs
                _, loss = self.model(x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True))
            self.inner_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), hp.grad_clip)
            self.inner_opt.step()
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
        group = [(str(peer), int(info["tokens"])) for peer, info in gathered.items()]
        # the reference state: the newest round any member holds, then the most common hash there
        newest = max(int(info.get("state_round", 0)) for info in gathered.values())
        hashes = Counter(info["state_hash"] for info in gathered.values() if int(info.get("state_round", 0)) == newest)
        reference = max(hashes.items(), key=lambda kv: (kv[1], kv[0]))[0]
        if launch.state_hash != reference:
            logger.warning("round %d: our global state differs from the group's; will resynchronise", round_)
            self.need_resync = True
            self._share_state(False)  # a joiner must not download our fork (it would have to resync again)
        with averager.get_tensors() as buffers:
            return [b.clone() for b in buffers], group

    def outer_step(self, averaged: list[torch.Tensor]) -> None:
        """Nesterov SGD on the global parameters with the averaged pseudo-gradient."""
        for g, delta in zip(self.global_params, averaged):
            g.grad = delta
        self.outer_opt.step()
        self.outer_opt.zero_grad(set_to_none=True)

    # ---------------------------------------------------------------- the round
    def run_round(self, stop: threading.Event) -> RoundResult | None:
        t_start = time.perf_counter()
        if self.need_resync or is_behind(self.round, self.swarm.tracker.global_epoch):
            self._drop_in_flight()
            if not self.sync_from_peers() and self.need_resync:
                logger.info("no peer could give us newer state yet; continuing from round %d", self.round)
                self.need_resync = False
                self._share_state(True)
        # a state download is part of the round it precedes, in its wall time and as waiting
        work = _Work(t_start=t_start, round=self.round, blocked_s=time.perf_counter() - t_start)
        work.tokens, work.samples, work.compute_s, work.loss = self.inner_phase(stop)
        if stop.is_set() or self.need_resync or work.tokens == 0:
            self._reset_local()  # abandon the partial round
            return None
        with torch.no_grad():
            pseudo = [a - p.detach().to("cpu", torch.float32) for a, p in zip(self.anchor, self.model.parameters())]
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
            self.outer_step(averaged)
            self.global_round += 1
        if advance:  # blocking mode: the round ends here, and the next starts from the global parameters
            if averaged is not None:
                with self.swarm.tracker.pause_updates():
                    self.round = self.swarm.tracker.update_epoch(self.round + 1)
            # a failed group keeps the old global state; if some members did step, the swarm's
            # round moves past ours and the next round starts with a download
            self._restart_from(self.global_params)
        self._snapshot = self._make_snapshot()
        self.swarm.averager.state_sharing_priority = float(self.global_round)
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
            self.hash_history[self.global_round] = self._snapshot.hash
            val = self.last_val_bpb = self.evaluate_global()
            self.save()
        group = [(p, work.tokens if t < 0 else t) for p, t in group]
        return RoundResult(
            round=work.round, tokens=work.tokens, samples=work.samples, compute_s=work.compute_s,
            wall_s=(work.t_end or time.perf_counter()) - work.t_start, bytes_sent=sent, bytes_received=received, ok=averaged is not None,
            group=group, train_loss=work.loss if math.isfinite(work.loss) else None, val_bpb=val,
            state_hash=self._snapshot.hash, payload_bytes=self.payload_bytes, blocked_s=work.blocked_s,
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

    def run(self, stop: threading.Event, on_round: Callable[[RoundResult], None], max_rounds: int | None = None) -> None:
        if self.initial_val_bpb is None:
            self.initial_val_bpb = self.last_val_bpb = self.evaluate()
        while not stop.is_set() and (max_rounds is None or self.rounds_done < max_rounds):
            result = self.run_round(stop)
            if result is not None:
                on_round(result)
        if self.in_flight is not None:  # overlap: land the last all-reduce, so the checkpoint has it
            prev, self.in_flight = self.in_flight, None
            on_round(self._finish(prev, *self._land(prev.launch, prev.round), advance=False))
        self.status = "leaving"
