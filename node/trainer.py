"""The DiLoCo training loop, readable top to bottom.

One round:
  1. inner phase: local AdamW steps on this node's own sample stream, counting tokens and
     publishing progress, until the *swarm* has processed the round's token target;
  2. pseudo-gradient = global - local parameters, averaged over the group (weighted by tokens)
     with the exact-average all-reduce of ``node.averaging``;
  3. outer step: Nesterov SGD on the global parameters; local parameters restart from them.
A node that is behind the swarm (it joined late, or a round failed for it) first downloads
the global state from a peer and checks its hash. The baseline ``sync`` algorithm is plain
``hivemind.Optimizer`` (see ``run_sync``).
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
from node.policies.timeouts import state_download_timeout
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

        self.round = 0
        self.inner_steps = 0
        self.tokens_total = 0  # every token this node processed in reported rounds
        self.tokens_contributed = 0  # tokens of rounds that went into the model (ok all-reduce)
        self.rounds_done = 0
        self.bytes_sent = self.bytes_received = 0
        self.compute_s = 0.0  # seconds in forward/backward/optimizer, all rounds
        self.eval_s = 0.0  # seconds spent on validation
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
        self.bandwidth = opts["bandwidth"]  # bytes/s: the slowest link the timeouts assume

    @property
    def state_hash(self) -> str:
        """Hash of the global state after the last completed round."""
        return self._snapshot.hash

    # ---------------------------------------------------------------- state and checkpoints
    def _make_snapshot(self) -> GlobalState:
        momentum = [self.outer_opt.state.get(p, {}).get("momentum_buffer", torch.zeros_like(p)).clone() for p in self.global_params]
        return GlobalState(self.round, [p.clone() for p in self.global_params], momentum)

    def _load_global(self, state: GlobalState) -> None:
        with torch.no_grad():
            for g, p, m in zip(self.global_params, state.params, state.momentum):
                g.copy_(p)
                self.outer_opt.state[g]["momentum_buffer"] = m.clone()
            for local, g in zip(self.model.parameters(), self.global_params):
                local.copy_(g)
        self.round = state.round

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
        if state.round < self.round:
            return False
        self._load_global(state)
        self._snapshot = self._make_snapshot()
        self.hash_history[self.round] = self._snapshot.hash
        self.swarm.averager.state_sharing_priority = float(self.round)
        with self.swarm.tracker.pause_updates():
            self.swarm.tracker.update_epoch(self.round)
        self.synced_from_peers = {"round": self.round, "state_hash": self._snapshot.hash}
        self.need_resync = False
        logger.info("synchronised with the swarm at round %d (state %s)", self.round, self._snapshot.hash[:12])
        return True

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
            _, loss = self.model(x.to(self.device), y.to(self.device))
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

    def average(self, tokens: int) -> tuple[list[torch.Tensor] | None, list[tuple[str, int]]]:
        """All-reduce the pseudo-gradient; None when the group failed. Alone in the swarm: our own."""
        with torch.no_grad():
            pseudo = [g - p.detach().to("cpu", torch.float32) for g, p in zip(self.global_params, self.model.parameters())]
        if self.swarm.tracker.global_progress.num_peers <= 1:
            return pseudo, [(self.peer_id, tokens)]
        self.status = "averaging"
        averager = self.swarm.averager
        residuals_before = None
        if self.error_feedback is not None:  # send what the codec can carry; keep the rest for next round
            residuals_before = self.error_feedback.state_dict()
            pseudo = self.error_feedback.apply(pseudo)
        with averager.get_tensors() as buffers:
            for b, g in zip(buffers, pseudo):
                b.copy_(g)
        try:
            gathered = averager.step(
                gather={"tokens": tokens, "state_hash": self._snapshot.hash},
                weight=float(max(tokens, 1)),
                timeout=self.step_timeout,
                allow_retries=False,  # a retry would run on buffers a failed attempt already overwrote
            )
        except Exception as e:  # a failed group is an expected event in a volunteer swarm
            logger.warning("round %d: all-reduce failed: %r", self.round, e)
            gathered = None
        if gathered:
            with averager.get_tensors() as buffers:
                if not all(torch.isfinite(b).all() for b in buffers):
                    logger.error("round %d: the group's average is not finite; round abandoned", self.round)
                    gathered = None
        if not gathered:
            if residuals_before is not None:  # the round's work is discarded: so is its residual update
                self.error_feedback.load_state_dict(residuals_before)
            return None, []
        group = [(str(peer), int(info["tokens"])) for peer, info in gathered.items()]
        hashes = Counter(info["state_hash"] for info in gathered.values())
        majority = max(hashes.items(), key=lambda kv: (kv[1], kv[0]))[0]
        if self._snapshot.hash != majority:
            logger.warning("round %d: our global state differs from the group's; will resynchronise", self.round)
            self.need_resync = True
        with averager.get_tensors() as buffers:
            return [b.clone() for b in buffers], group

    def outer_step(self, averaged: list[torch.Tensor]) -> None:
        for g, delta in zip(self.global_params, averaged):
            g.grad = delta
        self.outer_opt.step()
        self.outer_opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for local, g in zip(self.model.parameters(), self.global_params):
                local.copy_(g)

    def run_round(self, stop: threading.Event) -> RoundResult | None:
        if self.need_resync or is_behind(self.round, self.swarm.tracker.global_epoch):
            if not self.sync_from_peers() and self.need_resync:
                logger.info("no peer could give us newer state yet; continuing from round %d", self.round)
                self.need_resync = False
        t_start = time.perf_counter()
        sent0, recv0 = self.swarm.averager.counters.sent, self.swarm.averager.counters.received
        tokens, samples, compute_s, loss = self.inner_phase(stop)
        if stop.is_set() or self.need_resync or tokens == 0:
            self._reset_local()  # abandon the partial round
            return None
        round_ = self.round
        averaged, group = self.average(tokens)
        with self.swarm.tracker.pause_updates():
            if averaged is not None:
                self.outer_step(averaged)
                self.round = self.swarm.tracker.update_epoch(self.round + 1)
            else:
                # everyone whose group failed keeps the old global state; if some members did step,
                # the swarm's round moves past ours and the next round starts with a download
                self._reset_local()
        self._snapshot = self._make_snapshot()
        self.swarm.averager.state_sharing_priority = float(self.round)
        sent = self.swarm.averager.counters.sent - sent0
        received = self.swarm.averager.counters.received - recv0
        self.bytes_sent += sent
        self.bytes_received += received
        self.tokens_total += tokens
        self.compute_s += compute_s
        val = None
        if averaged is not None:
            self.rounds_done += 1
            self.tokens_contributed += tokens
            self.round_log[round_] = (time.time(), tokens)
            self.round_log.pop(round_ - 500, None)
            if self.first_contribution is None:
                self.first_contribution = round_
            self.hash_history[self.round] = self._snapshot.hash
            val = self.last_val_bpb = self.evaluate()
            self.save()
        return RoundResult(
            round=round_, tokens=tokens, samples=samples, compute_s=compute_s, wall_s=time.perf_counter() - t_start,
            bytes_sent=sent, bytes_received=received, ok=averaged is not None, group=group,
            train_loss=loss if math.isfinite(loss) else None, val_bpb=val, state_hash=self._snapshot.hash,
            payload_bytes=self.payload_bytes,
        )

    def _reset_local(self) -> None:
        with torch.no_grad():
            for local, g in zip(self.model.parameters(), self.global_params):
                local.copy_(g)

    def run(self, stop: threading.Event, on_round: Callable[[RoundResult], None], max_rounds: int | None = None) -> None:
        if self.initial_val_bpb is None:
            self.initial_val_bpb = self.last_val_bpb = self.evaluate()
        while not stop.is_set() and (max_rounds is None or self.rounds_done < max_rounds):
            result = self.run_round(stop)
            if result is not None:
                on_round(result)
        self.status = "leaving"
