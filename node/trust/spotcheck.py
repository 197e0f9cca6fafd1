"""Spot checks of claimed work (issue 11 item 4): did this update come from training on the windows
the peer was assigned for this round? Pure torch, no hivemind, no I/O.

A peer's windows in round r are a function of (run, peer, r) (``node.data.sampler.ByteSampler.start_round``),
and its round-r inner phase ran ``tokens / (batch_size x block_size)`` inner steps on the first
that many of them. Its *update* is the pseudo-gradient ``delta = global_r - local`` it averaged. A
validator that holds the global state of round r recomputes those windows and measures

    gain        = loss(global_r, assigned) - loss(global_r - delta, assigned)   (nats per token)
    random_gain = the same on windows drawn from the train split with the validator's own seed

and decides (:func:`judge`):

    harmful       gain < -tolerance.harm        the update makes the model worse on its own data
                                                (a scaled, random or sign-flipped update)
    no_gain       gain < tolerance.min_gain     nothing learned: a zero or tiny update (a free rider),
                  or gain < min_ratio x reference_gain, where reference_gain is what the validator's
                                                own recompute of the round (a fresh AdamW over the same
                                                windows from warmup step 0, :func:`recompute_update`)
                                                gains: random noise, a scaled-down update
    not_assigned  (gain - random_gain) / its standard error < tolerance.min_z (when set)
                                                it learned, but not from its own windows (work
                                                trained on other data, or another peer's copied update)
    ok            otherwise

Why recompute the inner steps only for a reference gain, not to compare tensors: a peer's AdamW
moments and its warmup step count carry over rounds (``node.train.diloco``), so round r's steps depend on
every earlier round of that peer; and the same steps on another thread count or device already differ by float rounding that
AdamW's division by sqrt(v) amplifies (benchmarks/spotcheck.py measures both). The loss check needs
only the round's global state, the windows and the update, and its margins are orders of magnitude
above the measured nondeterminism of a loss evaluation (BENCHMARKS.md, "Spot checks").

What it does not stop (docs/coordinator.md, "Spot checks"): an update crafted to pass (really
trained on the assigned windows, then poisoned in directions these windows do not see) is for the
reducers' robust aggregation to bound; and the check judges the update it is given, so the update
must be the one the peer averaged (see the trust rule).
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from node.data.corpus import Tokens

from node.data.sampler import ByteSampler, _seed
from node.train.diloco import inner_optimizer, inner_step, pseudo_gradient, warmup_lr
from protocol import Hyperparameters

__all__ = ["REASONS", "CheckResult", "Tolerance", "assigned_batches", "check_update", "judge", "mean_loss",
           "random_batches", "recompute_update", "steps_of", "update_digest", "window_losses"]

Batch = tuple[torch.Tensor, torch.Tensor]
REASONS = ("ok", "harmful", "no_gain", "not_assigned")


@dataclass(frozen=True)
class Tolerance:
    """Margins in nats per token (the model's cross-entropy). BENCHMARKS.md "Spot checks" measured a
    loss evaluation bit-identical across repeats and 1 vs 2 threads, a recompute's gain within 2.5e-8
    nats across thread counts, and honest rounds' gains at 0.05..1.6 nats; the margins sit between."""

    harm: float = 1e-3  # a gain below -harm is "harmful"
    min_gain: float = 1e-3  # a gain below this is "no_gain"
    # ... and so is a gain below min_ratio x the validator's own recomputed update's gain on the same
    # windows (when it recomputed one): measured honest ratios 0.92..1.16, dishonest ones <= 0.04
    min_ratio: float = 0.3
    # "not_assigned" when the advantage (gain - random_gain) is under min_z standard errors; None: not
    # judged. Off by default: from a fresh model an honest round learns generic statistics first and
    # its advantage is noise (measured z = 1.3 in a first round, 6.0 after 200 steps; BENCHMARKS.md)
    min_z: float | None = None


@dataclass(frozen=True)
class CheckResult:
    passed: bool
    reason: str  # one of REASONS
    gain: float  # nats per token, mean over the assigned windows
    random_gain: float  # the same over the random windows
    loss_before: float  # global state's loss on the assigned windows
    windows: int  # assigned windows evaluated
    z: float = 0.0  # (gain - random_gain) / its standard error (0 when there is no spread)
    reference_gain: float | None = None  # the gain of the validator's own recomputed update, if any


def steps_of(tokens: int, batch_size: int, block_size: int) -> int:
    """Inner steps a claim of ``tokens`` stands for (each step is one batch of ``batch_size`` windows)."""
    return max(0, tokens // max(1, batch_size * block_size))


def _spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over 0..n-1 (all of them when k >= n)."""
    if k >= n:
        return list(range(n))
    return sorted({round(i * (n - 1) / max(1, k - 1)) for i in range(k)})


def assigned_batches(train: Tokens, *, run_id: str, peer_id: str, round_: int, tokens: int, batch_size: int,
                     block_size: int, max_batches: int = 16) -> list[Batch]:
    """The batches ``peer_id`` trained on in ``round_`` (as its trainer drew them), at most
    ``max_batches`` of them spread over the round."""
    sampler = ByteSampler.for_node(train, block_size, batch_size, run_id, peer_id)
    sampler.start_round(round_)
    steps = steps_of(tokens, batch_size, block_size)
    keep = set(_spread(steps, max_batches))
    out = []
    for i in range(steps if keep else 0):
        batch = sampler.batch()  # drawn in order: batch i depends on the i draws before it
        if i in keep:
            out.append(batch)
        if len(out) == len(keep):
            break
    return out


def random_batches(train: Tokens, *, seed: str, batch_size: int, block_size: int, n: int) -> list[Batch]:
    """``n`` batches of the train split from a stream seeded by ``seed`` (the validator's choice)."""
    sampler = ByteSampler(train, block_size, batch_size, _seed("capaswarm/spot-check", seed))
    return [sampler.batch() for _ in range(n)]


@torch.no_grad()
def window_losses(model: nn.Module, params: Sequence[torch.Tensor], batches: Sequence[Batch],
                  device: str = "cpu") -> torch.Tensor:
    """Cross-entropy of each window (mean over its tokens) of ``batches``, with ``params`` loaded
    into ``model`` (fp32, eval mode): one float64 value per window."""
    for p, x in zip(model.parameters(), params):
        p.copy_(x.to(p.device, p.dtype))
    was_training = model.training
    model.eval()
    out = []
    for x, y in batches:
        logits, _ = model(x.to(device))
        ce = F.cross_entropy(logits.float().transpose(1, 2), y.to(device), reduction="none")  # (batch, tokens)
        out.append(ce.mean(dim=1).double().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def mean_loss(model: nn.Module, params: Sequence[torch.Tensor], batches: Sequence[Batch], device: str = "cpu") -> float:
    """Mean cross-entropy over the windows of ``batches`` (see :func:`window_losses`)."""
    losses = window_losses(model, params, batches, device)
    return float(losses.mean()) if len(losses) else math.nan


def judge(gain: float, random_gain: float, z: float, tol: Tolerance,
          reference_gain: float | None = None) -> tuple[bool, str]:
    """The rule of the module docstring; non-finite gains are "harmful"."""
    if not (math.isfinite(gain) and math.isfinite(random_gain)) or gain < -tol.harm:
        return False, "harmful"
    if gain < tol.min_gain or (reference_gain is not None and gain < tol.min_ratio * reference_gain):
        return False, "no_gain"
    if tol.min_z is not None and not z >= tol.min_z:
        return False, "not_assigned"
    return True, "ok"


def check_update(model: nn.Module, global_params: Sequence[torch.Tensor], delta: Sequence[torch.Tensor],
                 assigned: Sequence[Batch], random: Sequence[Batch], tol: Tolerance = Tolerance(),
                 device: str = "cpu", reference: Sequence[torch.Tensor] | None = None) -> CheckResult:
    """Judge ``delta`` (global - local) against round r's ``global_params`` on the peer's ``assigned``
    batches and on ``random`` ones; with ``reference`` (:func:`recompute_update` of the same round),
    also against the gain an honest update of those windows reaches. ``model`` is scratch: its
    parameters are overwritten."""
    if len(delta) != len(global_params) or any(d.shape != g.shape for d, g in zip(delta, global_params)):
        return CheckResult(False, "harmful", -math.inf, 0.0, math.nan, 0)
    if not assigned or not random:
        raise ValueError("a spot check needs assigned and random windows (a claim of at least one inner step)")
    after = [g.float() - d.float() for g, d in zip(global_params, delta)]
    before_a = window_losses(model, global_params, assigned, device)
    gains_a = before_a - window_losses(model, after, assigned, device)
    gains_r = window_losses(model, global_params, random, device) - window_losses(model, after, random, device)
    gain, random_gain = float(gains_a.mean()), float(gains_r.mean())
    reference_gain = None
    if reference is not None:
        ref_after = [g.float() - d.float() for g, d in zip(global_params, reference)]
        reference_gain = float((before_a - window_losses(model, ref_after, assigned, device)).mean())
    se = math.sqrt(float(gains_a.var(unbiased=False)) / len(gains_a) + float(gains_r.var(unbiased=False)) / len(gains_r))
    z = (gain - random_gain) / se if se > 0 and math.isfinite(se) else 0.0
    passed, reason = judge(gain, random_gain, z, tol, reference_gain)
    return CheckResult(passed, reason, gain, random_gain, float(before_a.mean()), len(gains_a), z, reference_gain)


def recompute_update(model: nn.Module, global_params: Sequence[torch.Tensor], batches: Sequence[Batch],
                     hp: Hyperparameters, device: str = "cpu", first_step: int = 0) -> list[torch.Tensor]:
    """The validator's own update for ``batches``: a fresh inner AdamW from ``global_params``, its
    learning rate on the warmup schedule from ``first_step`` on. The peer's optimizer state and step
    count are not observable; step 0 is the slowest schedule an honest peer can have (its first
    round), so the reference errs towards a small gain, in the peer's favour.
    ``model`` is scratch: its parameters are overwritten."""
    with torch.no_grad():
        for p, x in zip(model.parameters(), global_params):
            p.copy_(x.to(p.device, p.dtype))
    model.train()
    opt = inner_optimizer(model.parameters(), hp)
    for i, (x, y) in enumerate(batches):
        inner_step(model, opt, x, y, lr=warmup_lr(hp, first_step + i), grad_clip=hp.grad_clip, device=device)
    return pseudo_gradient(global_params, model.parameters())


def update_digest(delta: Sequence[torch.Tensor]) -> str:
    """sha256 hex of an update's fp32 bytes, tensor after tensor (what a verdict names the update by)."""
    h = hashlib.sha256(b"capaswarm/update\0")
    for d in delta:
        h.update(d.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()
