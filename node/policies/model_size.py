"""Model size from the manifest's numbers alone: parameters, payload bytes and training FLOPs.

Pure arithmetic on :class:`protocol.ModelSpec`, so code that may not import torch (``sim/``, the
coordinator's plans, timeouts) knows the size of the model the node builds. The count is exact for
``node.model.gpt.GPT`` (a test checks it against ``GPT(spec).num_params()``): GPT-2 blocks with biases,
LayerNorm with bias, learned positions and a head tied to the token embedding.
"""
from __future__ import annotations

from protocol import ModelSpec

__all__ = ["param_count", "train_flops_per_token"]


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
