"""Model size from the manifest's numbers alone: parameters, training FLOPs, the memory a node needs.

Pure arithmetic on :class:`protocol.ModelSpec`, so code that may not import torch (``sim/``, the
coordinator's plans, timeouts) knows the size of the model the node builds. The count is exact for
``node.model.gpt.GPT`` (a test checks it against ``GPT(spec).num_params()``): GPT-2 blocks with biases,
LayerNorm with bias, learned positions and a head tied to the token embedding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol import ModelSpec

__all__ = ["MemoryNeed", "fitting_setup", "memory_need", "memory_needed_gb", "param_count", "train_flops_per_token"]


def param_count(spec: ModelSpec) -> int:
    """Parameters of ``node.model.gpt.GPT(spec)``."""
    d = spec.n_embd
    per_block = 12 * d * d + 13 * d  # qkv 3d^2+3d, proj d^2+d, mlp 8d^2+5d, two LayerNorms 4d
    embeddings = (spec.vocab_size + spec.block_size) * d  # token (tied with the head) + position
    return spec.n_layer * per_block + embeddings + 2 * d  # + final LayerNorm


def train_flops_per_token(spec: ModelSpec) -> float:
    """Forward + backward FLOPs per trained token at full context (PaLM, appendix B).

    6 x the parameters that do matmuls (all but the position table, which is a lookup; the tied
    token embedding counts because the head multiplies by it), plus 12 x layers x width x context
    for attention scores and their weighted sum.
    """
    matmul_params = param_count(spec) - spec.block_size * spec.n_embd
    return 6.0 * matmul_params + 12.0 * spec.n_layer * spec.n_embd * spec.block_size


ACTIVATION_FACTOR = 16  # values a GPT block keeps per token and width for its backward (a rough bound)
# the node's process group before any model (the node, hivemind's averager and DHT processes, p2pd),
# GiB: 0.56-0.62 measured with the tiny preset (the size benchmark, 2026-12-07)
RUNTIME_GB = 0.6
# fp32 copies of the model the averager process holds during an all-reduce: the parts it sends
# (after the codec), the parts it receives and reduces, the averaged parts on their way back. Measured
# at 86M: the averager process peaks at 1.5-1.9 GiB PSS, of which 0.17 is its runtime and one copy its
# share of the two buffers it shares with the node (the size benchmark, 2026-12-07)
AVERAGER_COPIES = 3


@dataclass(frozen=True)
class MemoryNeed:
    """What a node holds at its peak, GiB, by where it lives (the fp32 copies of the model named).

    ``training``, on the training device (GPU memory, or RAM on a CPU node): the model, its gradients,
    AdamW's two moments, and one micro-batch's activations and logits. ``host``, always in RAM: the
    global copy and its outer momentum (and, overlapping, the anchor the inner phase started from),
    the round's buffers (the averager's buffer, the update served to validators, the pseudo-gradient
    while it is copied in; an error-feedback codec's residual), a state in transfer (served to a
    joiner, or downloaded), the averager process's parts, and the processes' runtime."""

    training_gb: float
    host_gb: float

    def needed_on(self, device: str) -> float:
        """The memory the check compares with the device's: on a CPU node both parts share the RAM."""
        return self.training_gb if device == "cuda" else self.training_gb + self.host_gb


def memory_need(spec: ModelSpec, batch_size: int, *, micro_batches: int = 1, checkpointing: bool = False,
                overlap: bool = False, error_feedback: bool = False) -> MemoryNeed:
    """Gradient accumulation divides the activations by the number of micro-batches; activation
    checkpointing keeps only each block's input (one value per token and width) plus one block's full
    set, recomputed in the backward pass."""
    copy = 4 * param_count(spec)
    rows = batch_size / micro_batches
    block = 4 * rows * spec.block_size * spec.n_embd * ACTIVATION_FACTOR
    saved = 4 * rows * spec.block_size * spec.n_embd * spec.n_layer + block if checkpointing else block * spec.n_layer
    logits = 2 * 4 * rows * spec.block_size * spec.vocab_size  # the head's output and its gradient
    training = 4 * copy + saved + logits
    global_copies = 2 + overlap  # diloco-overlap: the anchor the inner phase started from
    round_copies = 3 + error_feedback  # an error-feedback codec's residual
    host_copies = global_copies + round_copies + 2 + AVERAGER_COPIES  # 2: a state in transfer (params, momentum)
    return MemoryNeed(training / 2**30, host_copies * copy / 2**30 + RUNTIME_GB)


def memory_needed_gb(spec: ModelSpec, batch_size: int, *, device: str = "cpu", **how: Any) -> float:
    """GiB ``spec`` needs on ``device`` (``memory_need(...).needed_on(device)``); ``how``: as :func:`memory_need`."""
    return memory_need(spec, batch_size, **how).needed_on(device)


def fitting_setup(spec: ModelSpec, batch_size: int, memory_gb: float, *, device: str = "cpu",
                  **how: Any) -> tuple[int, bool] | None:
    """The cheapest way ``spec`` fits ``memory_gb`` of ``device``: (micro-batches, activation
    checkpointing), trying fewer micro-batches first and checkpointing (about a third more compute)
    only when accumulation alone is not enough; None when nothing fits (the weights alone are too large)."""
    splits = [k for k in range(1, batch_size + 1) if batch_size % k == 0]
    for checkpointing in (False, True):
        for k in splits:
            if memory_needed_gb(spec, batch_size, device=device, micro_batches=k, checkpointing=checkpointing,
                                **how) <= memory_gb:
                return k, checkpointing
    return None
