"""The DiLoCo math, in one place: inner optimizer, inner step, pseudo-gradient, outer step.

Pure torch, no hivemind, no I/O: ``node.train.trainer`` (the daemon), ``node.train.ddp`` (each local rank),
``node.train.sync`` (its AdamW) and ``benchmarks.quality`` (the in-process simulation) all call these,
so the simulation measures exactly the arithmetic the swarm runs (tests/node/test_diloco.py
checks the trainer and the simulation land on bit-identical global parameters).

One round of DiLoCo (Douillard et al. 2023), per node:

    for H steps:  lr = warmup_lr(hp, step); inner_step(model, inner_opt, x, y, lr=lr, ...)   # AdamW
    delta = pseudo_gradient(global_params, model.parameters())                               # global - local
    averaged = <token-weighted average of every member's delta>                              # node.averaging.runner
    outer_step(outer_opt, averaged)                                                          # Nesterov SGD
    local parameters restart from global_params

The outer optimizer holds the fp32 CPU copy of the global parameters; its Nesterov buffers are
part of the global state (``node.model.state.GlobalState.momentum``), read and written here.
"""
from __future__ import annotations

import contextlib

from collections.abc import Iterable

import torch
from torch import nn

from protocol import Hyperparameters

__all__ = ["inner_optimizer", "inner_step", "load_outer_momentum", "outer_momentum", "outer_optimizer", "outer_step",
           "pseudo_gradient", "warmup_lr"]


def inner_optimizer(params: Iterable[nn.Parameter], hp: Hyperparameters) -> torch.optim.AdamW:
    """DiLoCo's inner optimizer (the same on every rank of a multi-device node, and in ``sync``)."""
    return torch.optim.AdamW(params, lr=hp.inner_lr, weight_decay=hp.weight_decay, betas=(0.9, 0.95))


def warmup_lr(hp: Hyperparameters, step: int) -> float:
    """The inner learning rate of this node's ``step``-th inner step (0-based): linear warmup, then flat.
    Counted per node, across rounds (a node's AdamW state carries over rounds too)."""
    return hp.inner_lr * min(1.0, (step + 1) / max(1, hp.warmup_steps))


def inner_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, *, lr: float,
               grad_clip: float, device: str = "cpu", micro_batches: int = 1) -> torch.Tensor:
    """One inner step on ``(x, y)`` at learning rate ``lr``, gradients clipped to ``grad_clip``.

    ``micro_batches`` > 1 accumulates the gradient over equal slices of the batch (each slice's mean
    loss weighted 1/k, so the gradient is the whole batch's): the same step in less activation memory.
    ``model`` may be a DDP wrapper (its backward averages the gradients over the node's devices; only
    the last micro-batch's backward syncs). Returns the batch's mean loss, still on the device
    (``.item()`` is a CPU-GPU sync point: the caller decides)."""
    if micro_batches < 1 or len(x) % micro_batches:
        raise ValueError(f"a batch of {len(x)} does not split into {micro_batches} equal micro-batches")
    for group in opt.param_groups:
        group["lr"] = lr
    on_gpu = device.split(":")[0] == "cuda"
    opt.zero_grad(set_to_none=True)
    total = torch.zeros((), device=device)
    for i, (xm, ym) in enumerate(zip(x.chunk(micro_batches), y.chunk(micro_batches))):
        last = i == micro_batches - 1
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=on_gpu):  # bf16 matmuls on GPUs
                _, loss = model(xm.to(device, non_blocking=True), ym.to(device, non_blocking=True))
            (loss / micro_batches).backward()
        total += loss.detach().float()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return total / micro_batches


@torch.no_grad()
def pseudo_gradient(global_params: Iterable[torch.Tensor], local_params: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """global - local, fp32 on the CPU: how far the inner phase moved, as a gradient of the outer step."""
    return [g - p.detach().to("cpu", torch.float32) for g, p in zip(global_params, local_params)]


def outer_optimizer(global_params: list[torch.Tensor], lr: float, momentum: float) -> torch.optim.SGD:
    """SGD with Nesterov momentum on the fp32 global parameters (torch refuses Nesterov without
    momentum; momentum 0 is plain SGD either way)."""
    return torch.optim.SGD(global_params, lr=lr, momentum=momentum, nesterov=momentum > 0)


@torch.no_grad()
def outer_step(opt: torch.optim.SGD, averaged: list[torch.Tensor]) -> None:
    """One outer step of ``opt``'s global parameters with the group's averaged pseudo-gradient."""
    params = [p for group in opt.param_groups for p in group["params"]]
    if len(params) != len(averaged):
        raise ValueError(f"{len(averaged)} averaged tensors for {len(params)} global parameters")
    for g, delta in zip(params, averaged):
        g.grad = delta
    opt.step()
    opt.zero_grad(set_to_none=True)


def outer_momentum(opt: torch.optim.SGD, *, copy: bool = True) -> list[torch.Tensor]:
    """The Nesterov buffers, one per global parameter (zeros before the first step): copies, or with
    ``copy=False`` the live buffers (the next outer step changes them)."""
    params = [p for group in opt.param_groups for p in group["params"]]
    live = [opt.state.get(p, {}).get("momentum_buffer", torch.zeros_like(p)) for p in params]
    return [m.clone() for m in live] if copy else live


def load_outer_momentum(opt: torch.optim.SGD, momentum: list[torch.Tensor]) -> None:
    """Set the Nesterov buffers (from a checkpoint or a downloaded global state)."""
    params = [p for group in opt.param_groups for p in group["params"]]
    for p, m in zip(params, momentum):
        opt.state[p]["momentum_buffer"] = m.clone()
