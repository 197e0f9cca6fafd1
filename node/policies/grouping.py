"""Which peers average together: split the peers ready for a round into all-reduce groups.

hivemind's matchmaking assembles groups of up to ``target_group_size`` from whoever is looking at
the time, which is close to a random partition. A butterfly all-reduce moves at the pace of its
slowest member, so grouping peers of similar bandwidth ("tiered") keeps one slow home uplink from
holding back (or timing out) a group of datacenter nodes. Both are pure: members, a size, a random
source (and for tiers a key) in; groups out. ``sim/`` runs them on every round; a coordinator plan
or a group-key prefix could run the same choice for real nodes.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["form_groups", "group_sizes"]

T = TypeVar("T")


def group_sizes(n: int, target: int) -> list[int]:
    """``ceil(n / target)`` group sizes that differ by at most one and sum to ``n``.

    Balanced sizes avoid a lone leftover peer that would average with nobody.
    """
    if target < 1:
        raise ValueError("target group size must be >= 1")
    if n <= 0:
        return []
    groups = -(-n // target)
    base, extra = divmod(n, groups)
    return [base + 1] * extra + [base] * (groups - extra)


def form_groups(
    members: Sequence[T], target: int, rng: random.Random, key: Callable[[T], float] | None = None
) -> list[list[T]]:
    """Partition ``members`` into balanced groups of about ``target``.

    ``key=None``: a random partition (hivemind's matchmaking). With a ``key`` (e.g. a peer's
    bandwidth): tiers, i.e. members sorted by key, fastest first, then cut; ties keep the input
    order, so the result depends only on the inputs.
    """
    order = list(members)
    if key is None:
        rng.shuffle(order)
    else:
        order.sort(key=key, reverse=True)
    groups, start = [], 0
    for size in group_sizes(len(order), target):
        groups.append(order[start : start + size])
        start += size
    return groups
