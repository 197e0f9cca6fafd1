"""The DiLoCo math (node/train/diloco.py) and the one-copy guarantee: the daemon's trainer, the sync
baseline and the quality simulation (benchmarks/quality.py) all run it, so the same seed and the
same batches give bit-identical global parameters. In-process, a tiny GPT: milliseconds to seconds.

The trainer runs with small fakes for hivemind's tracker and averager (``trainer_fakes``; a node alone in its swarm),
so ``Trainer.run_round`` itself is what is checked, not a re-statement of it.
"""
from __future__ import annotations

import threading
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from benchmarks import quality
from benchmarks.quality import QualityConfig, deterministic
from node.train import sync as sync_module
from node.host.config import NodeConfig
from node.data.corpus import Corpus
from node.data.sampler import ByteSampler
from node.train.diloco import (inner_optimizer, inner_step, load_outer_momentum, outer_momentum, outer_optimizer, outer_step,
                         pseudo_gradient, warmup_lr)
from node.model.gpt import GPT
from node.train.trainer import Trainer
from protocol import Hyperparameters, ModelSpec, RunManifest
from trainer_fakes import FakeSwarm

SPEC = ModelSpec("test", n_layer=1, n_head=2, n_embd=32, block_size=32)
HP = replace(Hyperparameters(), batch_size=4, warmup_steps=3, inner_lr=3e-3)
STEPS, ROUNDS = 2, 2  # inner steps per round: warmup, AdamW state and outer momentum all cross a round


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    text = np.frombuffer(b"the quick brown fox jumps over the lazy dog. " * 400, np.uint8)
    return Corpus(text[:15000], text[15000:], 1)


@pytest.fixture(scope="module")
def batches(corpus: Corpus) -> list[tuple[torch.Tensor, torch.Tensor]]:
    sampler = ByteSampler(corpus.train, SPEC.block_size, HP.batch_size, seed=3)
    return [sampler.batch() for _ in range(STEPS * ROUNDS)]


class _Replay:
    """A sampler that hands out fixed batches (both paths then see the very same ones)."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]):
        self.batches, self.rng = list(batches), torch.Generator()

    def start_round(self, round_: int) -> None:
        pass

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.batches.pop(0)
        return x.clone(), y.clone()


def _tiny(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(SPEC)


# ------------------------------------------------------------------------------ the functions


def test_warmup_is_linear_then_flat():
    assert [warmup_lr(HP, s) for s in range(5)] == pytest.approx([1e-3, 2e-3, 3e-3, 3e-3, 3e-3])
    assert warmup_lr(replace(HP, warmup_steps=0), 0) == HP.inner_lr


def test_inner_step_sets_the_learning_rate_and_clips(batches):
    model = _tiny()
    opt = inner_optimizer(model.parameters(), HP)
    assert opt.defaults["betas"] == (0.9, 0.95) and opt.defaults["weight_decay"] == HP.weight_decay
    before = [p.detach().clone() for p in model.parameters()]
    loss = inner_step(model, opt, *batches[0], lr=1e-4, grad_clip=0.01)
    assert loss.requires_grad is False and torch.isfinite(loss)
    assert all(g["lr"] == 1e-4 for g in opt.param_groups)
    norm = torch.sqrt(sum(p.grad.square().sum() for p in model.parameters()))
    assert float(norm) <= 0.01 * (1 + 1e-4)  # the gradients the step used were clipped
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_pseudo_gradient_is_global_minus_local_in_fp32_on_the_cpu():
    g = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    local = [torch.tensor([0.5, 2.5], dtype=torch.bfloat16, requires_grad=True), torch.tensor([[1.0]])]
    delta = pseudo_gradient(g, local)
    assert [d.dtype for d in delta] == [torch.float32] * 2 and not delta[0].requires_grad
    assert torch.equal(delta[0], torch.tensor([0.5, -0.5])) and torch.equal(delta[1], torch.tensor([[2.0]]))


def test_outer_step_with_lr_1_and_no_momentum_lands_on_the_average():
    gen = torch.Generator().manual_seed(0)
    global_params = [torch.randn(3, 4, generator=gen), torch.randn(5, generator=gen)]
    locals_ = [[p + torch.randn(p.shape, generator=gen) for p in global_params] for _ in range(3)]
    deltas = [pseudo_gradient(global_params, local) for local in locals_]
    averaged = [sum(d[i] for d in deltas) / 3 for i in range(2)]
    outer_step(outer_optimizer(global_params, lr=1.0, momentum=0.0), averaged)
    for i, p in enumerate(global_params):
        assert torch.allclose(p, sum(local[i] for local in locals_) / 3, atol=1e-6)


def test_outer_step_is_nesterov_sgd():
    lr, mu = 0.7, 0.9
    g = [torch.tensor([1.0, -2.0])]
    d1, d2 = torch.tensor([0.5, 0.25]), torch.tensor([-1.0, 0.125])
    opt = outer_optimizer(g, lr, mu)
    outer_step(opt, [d1])
    assert torch.allclose(g[0], torch.tensor([1.0, -2.0]) - lr * (1 + mu) * d1)
    buf = mu * d1 + d2  # the second step: v = mu v + d, then p -= lr (d + mu v)
    expected = g[0] - lr * (d2 + mu * buf)
    outer_step(opt, [d2])
    assert torch.allclose(g[0], expected)
    assert torch.allclose(outer_momentum(opt)[0], buf)
    with pytest.raises(ValueError, match="2 averaged tensors for 1 global parameters"):
        outer_step(opt, [d1, d2])


def test_momentum_saved_and_loaded_continues_bit_identically():
    """What a checkpoint or a state download carries (node.model.state.GlobalState.momentum) is enough."""
    deltas = [[torch.full((4,), 0.1 * (r + 1))] for r in range(3)]
    a = [torch.ones(4)]
    opt_a = outer_optimizer(a, 0.7, 0.9)
    assert torch.equal(outer_momentum(opt_a)[0], torch.zeros(4))  # zeros before the first step
    outer_step(opt_a, deltas[0])
    b = [a[0].clone()]
    opt_b = outer_optimizer(b, 0.7, 0.9)
    load_outer_momentum(opt_b, outer_momentum(opt_a))
    for d in deltas[1:]:
        outer_step(opt_a, d)
        outer_step(opt_b, d)
    assert torch.equal(a[0], b[0])


# ------------------------------------------------------------------------------ one copy of the math


def _trainer_run(monkeypatch, tmp_path, corpus, manifest, batches) -> list[torch.Tensor]:
    target = STEPS * HP.batch_size * SPEC.block_size
    swarm = FakeSwarm(target)  # alone in its swarm: its own pseudo-gradient is the average
    t = Trainer(manifest, corpus, swarm, peer_id="peer-0", state_dir=tmp_path, cfg=NodeConfig(eval_batches=1))
    t.sampler = _Replay(batches)
    stop = threading.Event()
    for r in range(ROUNDS):
        result = t.run_round(stop)
        assert result is not None and result.ok and result.round == r and result.tokens == target
    assert t.stats.inner_steps == STEPS * ROUNDS and t.global_round == ROUNDS and swarm.averager.sent == []
    return [p.clone() for p in t.global_params]


def _quality_run(monkeypatch, corpus, manifest, batches) -> list[torch.Tensor]:
    monkeypatch.setattr(quality, "_samplers", lambda cfg, corpus: [_Replay(batches)])
    cfg = QualityConfig(spec=SPEC, replicas=1, rounds=ROUNDS, inner_steps=STEPS, hp=manifest.hparams, seed=manifest.seed,
                        eval_batches=1)
    return quality.run_diloco(cfg, corpus, manifest.codec)["params"]


def test_trainer_and_quality_simulation_land_on_bit_identical_global_parameters(monkeypatch, tmp_path, corpus, batches):
    """The test that fails if one copy of the inner step, the pseudo-gradient or the outer step drifts."""
    manifest = RunManifest(run_id="diloco-test", model=SPEC, hparams=HP, codec="none", seed=5)
    with deterministic():
        from_trainer = _trainer_run(monkeypatch, tmp_path, corpus, manifest, batches)
        from_quality = _quality_run(monkeypatch, corpus, manifest, batches)
        start = [p.detach() for p in _tiny(manifest.seed).parameters()]
        other = _quality_run(monkeypatch, corpus, replace(manifest, hparams=replace(HP, warmup_steps=1)), batches)
    assert all(torch.equal(a, b) for a, b in zip(from_trainer, from_quality))
    assert any(not torch.equal(a, s) for a, s in zip(from_trainer, start)), "the rounds must move the model"
    # the comparison can tell a different warmup apart: bitwise equality is not vacuous
    assert any(not torch.equal(a, b) for a, b in zip(from_trainer, other))


def test_sync_baseline_builds_the_same_inner_optimizer(monkeypatch, corpus, batches):
    """``--algorithm sync`` hands hivemind.Optimizer DiLoCo's AdamW: one step of it on the same
    gradients is bit-identical to the trainer's inner optimizer's."""
    seen: dict[str, Any] = {}

    def fake_optimizer(**kwargs: Any) -> SimpleNamespace:
        seen.update(kwargs)
        return SimpleNamespace(shutdown=lambda: None)

    monkeypatch.setattr(sync_module.hivemind, "Optimizer", fake_optimizer)
    manifest = RunManifest(run_id="diloco-test", model=SPEC, hparams=HP, codec="none", algorithm="sync")
    swarm = SimpleNamespace(dht=None, averager=None)
    sync_module.SyncTrainer(manifest, corpus, swarm, peer_id="peer-0", cfg=NodeConfig(), device="cpu")
    a, b = _tiny(), _tiny()
    opt_sync, opt_diloco = seen["optimizer"](a.parameters()), inner_optimizer(b.parameters(), HP)
    assert type(opt_sync) is type(opt_diloco) and opt_sync.defaults == opt_diloco.defaults
    for model, opt in ((a, opt_sync), (b, opt_diloco)):
        _, loss = model(*batches[0])
        loss.backward()
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), _tiny().parameters()))

