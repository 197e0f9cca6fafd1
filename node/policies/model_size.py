"""Model size from the manifest's numbers alone: parameters, training FLOPs, the memory a node needs.

Pure arithmetic on :class:`protocol.ModelSpec`, so code that may not import torch (``sim/``, the
coordinator's plans, timeouts) knows the size of the model the node builds. The count is exact for
``node.model.gpt.GPT`` (a test checks it against ``GPT(spec).num_params()``): GPT-2 blocks with biases,
LayerNorm with bias, learned positions and a head tied to the token embedding.
"""
from __future__ import annotations

from protocol import ModelSpec

__all__ = ["fitting_setup", "memory_needed_gb", "param_count", "train_flops_per_token"]


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


def memory_needed_gb(spec: ModelSpec, batch_size: int, *, micro_batches: int = 1, checkpointing: bool = False) -> float:
    """Memory (GB, 20 % headroom) one node needs to train ``spec``: six fp32 copies of the weights
    (parameters, gradients, AdamW's two moments, the global copy and its outer momentum) plus the
    activations and logits of one micro-batch. Gradient accumulation divides the activations by the number of
    micro-batches; activation checkpointing keeps only each block's input (one value per token and
    width) plus one block's full set, recomputed in the backward pass."""
    weights = 6 * 4 * param_count(spec)
    rows = batch_size / micro_batches
    block = 4 * rows * spec.block_size * spec.n_embd * ACTIVATION_FACTOR
    saved = 4 * rows * spec.block_size * spec.n_embd * spec.n_layer + block if checkpointing else block * spec.n_layer
    logits = 2 * 4 * rows * spec.block_size * spec.vocab_size  # the head's output and its gradient
    return (weights + saved + logits) / 2**30 * 1.2


def fitting_setup(spec: ModelSpec, batch_size: int, memory_gb: float) -> tuple[int, bool] | None:
    """The cheapest way ``spec`` fits ``memory_gb``: (micro-batches, activation checkpointing), trying
    fewer micro-batches first and checkpointing (about a third more compute) only when accumulation
    alone is not enough; None when nothing fits (the weights alone are too large)."""
    splits = [k for k in range(1, batch_size + 1) if batch_size % k == 0]
    for checkpointing in (False, True):
        for k in splits:
            if memory_needed_gb(spec, batch_size, micro_batches=k, checkpointing=checkpointing) <= memory_gb:
                return k, checkpointing
    return None
