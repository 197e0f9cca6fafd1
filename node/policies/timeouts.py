"""Timeouts derived from payload size and measured bandwidth instead of constants to guess.

All-reduce traffic per peer is 2(N-1)/N x payload (hivemind's butterfly). The timeout is that
transfer at the slowest known link, times a safety factor, plus a fixed floor for latency,
matchmaking and CPU work.
"""
from __future__ import annotations

__all__ = ["allreduce_bytes", "allreduce_timeout", "state_download_timeout"]


def allreduce_bytes(payload_bytes: int, group_size: int) -> float:
    """Bytes each peer sends (and receives) in a butterfly all-reduce: 2(N-1)/N x payload."""
    if group_size <= 1:
        return 0.0
    return 2 * (group_size - 1) / group_size * payload_bytes


def allreduce_timeout(
    payload_bytes: int,
    group_size: int,
    bandwidth_bytes_per_s: float,
    *,
    safety: float = 3.0,
    floor_s: float = 5.0,
    cap_s: float = 1800.0,
) -> float:
    """Seconds to wait for one all-reduce before giving up on the group."""
    if bandwidth_bytes_per_s <= 0:
        return cap_s
    t = floor_s + safety * allreduce_bytes(payload_bytes, group_size) / bandwidth_bytes_per_s
    return min(t, cap_s)


def state_download_timeout(state_bytes: int, bandwidth_bytes_per_s: float, *, safety: float = 3.0, floor_s: float = 15.0) -> float:
    if bandwidth_bytes_per_s <= 0:
        return 600.0
    return floor_s + safety * state_bytes / bandwidth_bytes_per_s
