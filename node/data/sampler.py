"""Per-(run, peer, round) samplers of training windows, and bits-per-byte evaluation.

Each node's windows are a deterministic function of (run id, peer id, round): the sampler is
re-seeded at the start of every round, so anyone can recompute which windows a peer trained on in a
round (what a validator re-checks)."""
from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
from node.data.corpus import Tokens


def _seed(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("/".join(parts).encode()).digest()[:8], "big")


class ByteSampler:
    """Random windows of ``block_size + 1`` tokens from one split (one array or shards), from a seeded
    stream. Windows are copied out per batch: a memory-mapped corpus is never read whole."""

    def __init__(self, data: Tokens, block_size: int, batch_size: int, seed: int):
        segments = data if isinstance(data, list) else [data]
        self.segments = [d for d in segments if len(d) > block_size + 1]
        if not self.segments:
            raise ValueError(f"split of {sum(len(d) for d in segments)} tokens has no window of {block_size + 1}")
        self.starts = np.cumsum([0] + [len(d) - block_size - 1 for d in self.segments])  # window starts before each segment
        self.block_size, self.batch_size = block_size, batch_size
        self.rng = torch.Generator().manual_seed(seed % 2**63)
        self.parts: tuple[str, ...] = ()

    @classmethod
    def for_node(cls, data: Tokens, block_size: int, batch_size: int, run_id: str, peer_id: str) -> ByteSampler:
        sampler = cls(data, block_size, batch_size, _seed(run_id, peer_id))
        sampler.parts = (run_id, peer_id)
        return sampler

    def start_round(self, round_: int) -> None:
        """Re-seed from (run, peer, round): a round's windows depend on nothing else."""
        self.rng.manual_seed(_seed(*self.parts, str(round_)) % 2**63)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        ix = torch.randint(int(self.starts[-1]), (self.batch_size,), generator=self.rng).numpy()
        seg = np.searchsorted(self.starts, ix, side="right") - 1
        n = self.block_size + 1
        rows = [self.segments[s][o:o + n] for s, o in zip(seg, ix - self.starts[seg])]
        windows = torch.from_numpy(np.stack(rows).astype(np.int64))
        return windows[:, :-1], windows[:, 1:]


EVAL_TOKENS_PER_FORWARD = 4096  # a validation forward pass takes at most this many tokens (at least one window)


@torch.no_grad()
def evaluate_bpb(
    model: torch.nn.Module, val: np.ndarray, block_size: int, device: str, batches: int = 8, batch_size: int = 16
) -> float:
    """Validation bits per byte on a fixed set of windows (same windows on every node and call).

    Each batch runs in equal slices of at most ``EVAL_TOKENS_PER_FORWARD`` tokens, so that its
    activations stay near a training step's at long context (16 windows of 1,024 at once were a
    transient of a GB at 86M parameters); at a context of 256 or less a slice is the whole batch."""
    sampler = ByteSampler(val, block_size, batch_size, seed=_seed("validation"))
    rows = max(1, min(batch_size, EVAL_TOKENS_PER_FORWARD // block_size))
    while batch_size % rows:  # equal slices: the mean of their means is the batch's mean
        rows -= 1
    was_training = model.training
    model.eval()
    total = 0.0
    for _ in range(batches):
        x, y = sampler.batch()
        for xs, ys in zip(x.split(rows), y.split(rows)):
            _, loss = model(xs.to(device), ys.to(device))
            total += float(loss) * len(xs) / batch_size
    model.train(was_training)
    return total / batches / math.log(2)
