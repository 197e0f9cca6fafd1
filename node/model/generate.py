"""``swarm generate``: sample text from an export folder or a node's state dir."""
from __future__ import annotations

from pathlib import Path

import torch

from node.model.export import Checkpoint, ExportError, load_checkpoint_dir, read_export
from node.model.gpt import GPT
from node.model.tokenizer import TokenizerFile

__all__ = ["load_any", "sample"]


def load_any(path: Path) -> Checkpoint:
    """An export (has config.json) or a state dir (has checkpoint.pt)."""
    path = Path(path)
    if (path / "config.json").exists():
        return read_export(path)
    if (path / "checkpoint.pt").exists():
        return load_checkpoint_dir(path)
    raise ExportError(f"{path} is neither an export (config.json) nor a state dir (checkpoint.pt)")


@torch.no_grad()
def sample(model: GPT, tokenizer: TokenizerFile, prompt: str, *, max_new_tokens: int = 200, temperature: float = 0.8,
           top_k: int | None = 50, seed: int = 0) -> str:
    """Continue ``prompt``; returns only the new text. Same seed, same text."""
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    gen = torch.Generator().manual_seed(seed)
    ids = tokenizer.encode(prompt) or [tokenizer.eos_id]
    x = torch.tensor([ids], dtype=torch.long)
    block = model.spec.block_size
    model.eval()
    for _ in range(max_new_tokens):
        logits, _ = model(x[:, -block:])
        logits = logits[:, -1, :] / temperature
        if top_k is not None and top_k < logits.size(-1):
            kth = torch.topk(logits, top_k).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen)
        x = torch.cat([x, nxt], dim=1)
    return tokenizer.decode(x[0, len(ids):].tolist())
