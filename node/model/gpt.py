"""A GPT in the exact shape of OpenAI's GPT-2 (and nanoGPT), over bytes by default.

GPT-2 parity, so ``node.model.export`` writes a Hugging Face ``GPT2LMHeadModel`` with equal logits:
pre-LayerNorm blocks (eps 1e-5, with bias), GELU with the tanh approximation (GPT-2's
``gelu_new``), learned positions, biases on every linear layer but the head, and the head tied to
the token embedding. Byte-level by default (vocabulary 256: no tokenizer to agree on, every file
is valid input); a manifest may name a BPE vocabulary instead (``node.model.tokenizer``).
Losses are in nats per token; for bytes ``bits_per_byte = loss / ln 2``.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from protocol import ModelSpec

__all__ = ["GPT", "GPT2_VOCAB", "LN_EPS", "PRESETS", "preset"]

LN_EPS = 1e-5  # GPT-2's layer_norm_epsilon

GPT2_VOCAB = 50257  # GPT-2's BPE vocabulary

# name -> shape. A preset that names a parameter count is that size: ``gpt2-124m`` is GPT-2 small
# with GPT-2's vocabulary size (124,439,808 parameters) and needs a BPE vocabulary of exactly that
# many ids (``swarm data prepare --vocab bpe:50257``). The others name no size: they are over bytes
# (counts below) and take the vocabulary size of BPE data when a run uses it.
PRESETS: dict[str, ModelSpec] = {
    "tiny": ModelSpec("tiny", n_layer=4, n_head=4, n_embd=128, block_size=128),  # ~0.8M over bytes; tests and CPU
    "small": ModelSpec("small", n_layer=6, n_head=6, n_embd=384, block_size=256),  # ~10.7M over bytes
    "gpt2-small-bytes": ModelSpec("gpt2-small-bytes", n_layer=12, n_head=12, n_embd=768, block_size=1024),  # ~85.8M
    "gpt2-124m": ModelSpec("gpt2-124m", n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=GPT2_VOCAB),
}
_FIXED_VOCAB = {"gpt2-124m"}


def preset(name: str, vocab_size: int | None = None) -> ModelSpec:
    """The preset's shape, for data of ``vocab_size`` ids (None: the preset's own)."""
    try:
        spec = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}") from None
    if vocab_size is None or vocab_size == spec.vocab_size:
        return spec
    if name in _FIXED_VOCAB:
        raise ValueError(f"{name} is GPT-2 small with GPT-2's {spec.vocab_size:,}-id vocabulary; "
                         f"this data has {vocab_size:,} ids. "
                         f"Prepare the data with --vocab bpe:{spec.vocab_size}, or use gpt2-small-bytes (the same shape, "
                         "over this data's vocabulary)")
    return dataclasses.replace(spec, vocab_size=vocab_size)


class CausalSelfAttention(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        assert spec.n_embd % spec.n_head == 0, "n_embd must be divisible by n_head"
        self.n_head = spec.n_head
        self.qkv = nn.Linear(spec.n_embd, 3 * spec.n_embd)
        self.proj = nn.Linear(spec.n_embd, spec.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # flash kernel on GPU
        return self.proj(y.transpose(1, 2).contiguous().view(b, t, c))


class Block(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.ln1 = nn.LayerNorm(spec.n_embd, eps=LN_EPS)
        self.attn = CausalSelfAttention(spec)
        self.ln2 = nn.LayerNorm(spec.n_embd, eps=LN_EPS)
        self.mlp = nn.Sequential(
            nn.Linear(spec.n_embd, 4 * spec.n_embd), nn.GELU(approximate="tanh"), nn.Linear(4 * spec.n_embd, spec.n_embd)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.tok = nn.Embedding(spec.vocab_size, spec.n_embd)
        self.pos = nn.Embedding(spec.block_size, spec.n_embd)
        self.blocks = nn.ModuleList(Block(spec) for _ in range(spec.n_layer))
        self.ln_f = nn.LayerNorm(spec.n_embd, eps=LN_EPS)
        self.head = nn.Linear(spec.n_embd, spec.vocab_size, bias=False)
        self.head.weight = self.tok.weight  # weight tying
        self.checkpointing = False  # recompute each block in backward (``--activation-checkpointing``)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * spec.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        t = idx.shape[1]
        assert t <= self.spec.block_size, f"sequence of {t} exceeds block size {self.spec.block_size}"
        pos = torch.arange(t, device=idx.device)
        x = self.tok(idx) + self.pos(pos)
        recompute = self.checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if recompute else block(x)
        logits = self.head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss
