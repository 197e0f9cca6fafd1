"""A small GPT over bytes (vocabulary 256), in the shape of nanoGPT.

Byte-level on purpose: no tokenizer to download or agree on, and every file is valid input.
Losses are in nats per byte; ``bits_per_byte = loss / ln 2``.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from protocol import ModelSpec

__all__ = ["GPT", "PRESETS", "preset"]

# name -> shape; parameter counts are for vocab 256 with tied embeddings
PRESETS: dict[str, ModelSpec] = {
    "tiny": ModelSpec("tiny", n_layer=4, n_head=4, n_embd=128, block_size=128),  # ~0.8M, tests and CPU
    "small": ModelSpec("small", n_layer=6, n_head=6, n_embd=384, block_size=256),  # ~10.7M
    "gpt2-124m": ModelSpec("gpt2-124m", n_layer=12, n_head=12, n_embd=768, block_size=1024),  # GPT-2 small shape, ~86M with a byte vocab
}


def preset(name: str) -> ModelSpec:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}") from None


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
        self.ln1 = nn.LayerNorm(spec.n_embd)
        self.attn = CausalSelfAttention(spec)
        self.ln2 = nn.LayerNorm(spec.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(spec.n_embd, 4 * spec.n_embd), nn.GELU(), nn.Linear(4 * spec.n_embd, spec.n_embd)
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
        self.ln_f = nn.LayerNorm(spec.n_embd)
        self.head = nn.Linear(spec.n_embd, spec.vocab_size, bias=False)
        self.head.weight = self.tok.weight  # weight tying
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
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss
