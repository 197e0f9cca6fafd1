"""Retry delays: exponential backoff with full jitter (AWS architecture blog, 2015).

``next_delay(attempt)`` is uniform in ``[0, min(cap, base * 2**attempt)]``. Full jitter spreads
the retries of many nodes that lost the same coordinator at the same moment, so they do not come
back as one synchronised wave. Pure: the random source is an argument, there is no clock and no
I/O, so ``sim/`` replays the same schedule from the same seed.
"""
from __future__ import annotations

import random

__all__ = ["next_delay"]

_MAX_EXPONENT = 62  # 2**62 * any sane base is far past any cap; avoids float overflow


def next_delay(attempt: int, rng: random.Random, base: float = 0.5, cap: float = 30.0) -> float:
    """Seconds to wait before retry number ``attempt`` (0 = the first retry).

    Raises ``ValueError`` for a negative attempt or a non-positive base or cap.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    if base <= 0 or cap <= 0:
        raise ValueError("base and cap must be positive")
    ceiling = min(cap, base * 2.0 ** min(attempt, _MAX_EXPONENT))
    return rng.uniform(0.0, ceiling)
