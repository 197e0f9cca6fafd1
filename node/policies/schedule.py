"""Round scheduling: a round ends when the *swarm* has processed the round's token target.

Fast and slow nodes never wait for each other: each keeps stepping until the swarm-wide
token count (shared through the DHT) reaches the target, then all average, weighted by the
tokens each processed.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RoundProgress", "round_done", "is_behind", "eta_seconds"]


@dataclass(frozen=True)
class RoundProgress:
    round: int  # the round the swarm is in
    tokens: int  # tokens the swarm has processed in it so far
    tokens_per_s: float  # swarm throughput estimate
    peers: int  # peers currently reporting progress


def round_done(progress: RoundProgress, target_tokens: int, local_round: int) -> bool:
    """True when this node should stop its inner phase and average."""
    return progress.round > local_round or progress.tokens >= target_tokens


def is_behind(local_round: int, swarm_round: int) -> bool:
    """A node whose round is behind the swarm's must download state before contributing."""
    return local_round < swarm_round


def eta_seconds(progress: RoundProgress, target_tokens: int) -> float:
    """Seconds until the swarm reaches the round's token target at its current rate."""
    remaining = max(0, target_tokens - progress.tokens)
    if remaining == 0:
        return 0.0
    if progress.tokens_per_s <= 0:
        return float("inf")
    return remaining / progress.tokens_per_s
