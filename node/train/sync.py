"""The classical baseline, ``--algorithm sync``: plain ``hivemind.Optimizer``.

Every step's gradients are accumulated towards a swarm-wide target batch
(``hparams.target_batch`` samples) and averaged with hivemind's all-reduce, then every peer
takes the same AdamW step; parameters are averaged in the background as hivemind does by
default. This is what a hivemind user runs today, and what benchmarks compare DiLoCo against.
It reports the same per-round figures as the DiLoCo trainer (a round is one global step);
hivemind's optimizer does not expose its traffic, so bytes are not counted here.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import hivemind
import torch

from node.averaging.wire import make_codec
from node.host.config import NodeConfig
from node.data.corpus import Corpus
from node.data.sampler import ByteSampler, evaluate_bpb
from node.train.diloco import inner_optimizer
from node.model.gpt import GPT
from node.model.state import state_hash
from node.net.swarm import SwarmHandles, run_prefix
from node.train.stats import RoundResult, TrainerStats
from protocol import RunManifest

__all__ = ["SyncTrainer"]


class SyncTrainer:
    def __init__(self, manifest: RunManifest, corpus: Corpus, swarm: SwarmHandles, *, peer_id: str, cfg: NodeConfig, device: str,
                 initial: list[torch.Tensor] | None = None):
        hp, spec = manifest.hparams, manifest.model
        self.manifest, self.swarm, self.peer_id, self.device = manifest, swarm, peer_id, device
        self.eval_batches, self.eval_windows = cfg.eval_batches, cfg.eval_windows
        torch.manual_seed(manifest.seed)
        self.model = GPT(spec).to(device)
        if initial is not None:  # the manifest's initial checkpoint, verified (node.model.initial)
            with torch.no_grad():
                for p, x in zip(self.model.parameters(), initial):
                    p.copy_(x)
        self.sampler = ByteSampler.for_node(corpus.train, spec.block_size, hp.batch_size, manifest.run_id, peer_id)
        self.val_data = corpus.val
        self.opt = hivemind.Optimizer(
            dht=swarm.dht,
            run_id=run_prefix(manifest),
            params=self.model.parameters(),
            optimizer=lambda params: inner_optimizer(params, hp),
            target_batch_size=hp.target_batch,
            batch_size_per_step=hp.batch_size,
            matchmaking_time=cfg.matchmaking_time_s,
            averaging_timeout=60.0,
            grad_compression=make_codec(manifest.codec),
            state_averaging_compression=make_codec(manifest.codec),
            verbose=False,
        )
        swarm.averager = self.opt  # shut down with the swarm
        self.round = 0
        self.stats = TrainerStats()  # bytes are not counted (hivemind's optimizer does not expose them)
        self.status = "joining"

    @property
    def state_hash(self) -> str:
        return state_hash(self.round, [p.detach().cpu() for p in self.model.parameters()])

    def evaluate(self) -> float:
        return evaluate_bpb(self.model, self.val_data, self.manifest.model.block_size, self.device, batches=self.eval_batches,
                            batch_size=self.eval_windows)

    def run(self, stop: threading.Event, on_round: Callable[[RoundResult], None], max_rounds: int | None = None) -> None:
        self.status = "syncing"
        self.opt.load_state_from_peers()
        self.round = self.opt.local_epoch
        s = self.stats
        s.initial_val_bpb = s.last_val_bpb = self.evaluate()
        self.status = "training"
        tokens = samples = 0
        compute_s, blocked_s, t_round = 0.0, 0.0, time.perf_counter()
        while not stop.is_set() and (max_rounds is None or s.rounds_done < max_rounds):
            t0 = time.perf_counter()
            x, y = self.sampler.batch()
            _, loss = self.model(x.to(self.device), y.to(self.device))
            loss.backward()
            t_step = time.perf_counter()
            epoch = self.opt.local_epoch
            self.opt.step()  # accumulates locally; averages and steps when the swarm hits the target batch
            self.opt.zero_grad()
            if self.opt.local_epoch != epoch:  # a global step: the optimizer's step hides the all-reduce
                waited = time.perf_counter() - t_step
                blocked_s += waited
                s.blocked_s += waited
                t0 += waited  # not compute
            compute_s += time.perf_counter() - t0
            s.compute_s += time.perf_counter() - t0
            s.inner_steps += 1
            tokens += x.numel()
            samples += x.shape[0]
            s.tokens_total += x.numel()
            if self.opt.local_epoch != self.round:  # one global step happened
                finished, self.round = self.round, self.opt.local_epoch
                s.rounds_done += 1
                s.tokens_contributed += tokens
                s.first_contribution = finished if s.first_contribution is None else s.first_contribution
                s.last_val_bpb = self.evaluate()
                s.hash_history[self.round] = self.state_hash
                on_round(RoundResult(
                    round=finished, tokens=tokens, samples=samples, compute_s=compute_s, wall_s=time.perf_counter() - t_round,
                    bytes_sent=0, bytes_received=0, ok=True, group=[(self.peer_id, tokens)], train_loss=loss.item(),
                    val_bpb=s.last_val_bpb, state_hash=s.hash_history[self.round], blocked_s=blocked_s,
                ))
                tokens = samples = 0
                compute_s, blocked_s, t_round = 0.0, 0.0, time.perf_counter()
        self.status = "leaving"

    def shutdown(self) -> Any:
        return self.opt.shutdown()
