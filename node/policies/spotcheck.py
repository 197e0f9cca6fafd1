"""Which claims a validator spot-checks (node only): a sampled share of (peer, round) claims.

The sample is a keyed hash of (peer, round) under the validator's own secret, so it is
reproducible for the validator (a restart checks the same claims) and unpredictable for the peers
(a peer that knew which of its rounds get checked could cheat in the others). Pure: the secret
and the rate come in as arguments.
"""
from __future__ import annotations

import hashlib
import hmac

__all__ = ["is_sampled"]


def is_sampled(secret: bytes, peer_id: str, round_: int, rate: float) -> bool:
    """True for about ``rate`` of all (peer, round) pairs (0 = none, 1 = all)."""
    if rate <= 0.0:
        return False
    if rate >= 1.0:
        return True
    digest = hmac.new(secret, f"{peer_id}/{round_}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") < rate * 2**64
