"""Timeouts derived from payload size and measured bandwidth instead of constants to guess.

All-reduce traffic per peer is 2(N-1)/N x payload (hivemind's butterfly). The timeout is that
transfer at the slowest known link, times a safety factor, plus a fixed floor for latency,
matchmaking and CPU work. The link speed starts as the configured guess and then follows what
the node measures on its own all-reduces (``update_link_estimate``).
"""
from __future__ import annotations

__all__ = ["allreduce_bytes", "allreduce_timeout", "chunk_timeout", "first_part_timeout", "state_download_timeout",
           "update_link_estimate"]


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


def state_download_timeout(
    state_bytes: int, bandwidth_bytes_per_s: float, *, safety: float = 3.0, floor_s: float = 15.0
) -> float:
    if bandwidth_bytes_per_s <= 0:
        return 600.0
    return floor_s + safety * state_bytes / bandwidth_bytes_per_s


def update_link_estimate(previous: float | None, bytes_moved: int, seconds: float, *, alpha: float = 0.3,
                         min_bytes: int = 1 << 20) -> float | None:
    """Exponential moving average of the measured all-reduce speed in bytes/s.

    A round that moved too little to time (below ``min_bytes``, or in no time) keeps the previous
    estimate; the first measurement is taken as it is.
    """
    if bytes_moved < min_bytes or seconds <= 0:
        return previous
    measured = bytes_moved / seconds
    return measured if previous is None else (1 - alpha) * previous + alpha * measured


def chunk_timeout(bandwidth_bytes_per_s: float, *, part_bytes: int = 2**19, safety: float = 3.0, floor_s: float = 2.0,
                  streams: int = 1) -> float:
    """How long to wait for the next all-reduce part before banning a peer: a part at a third of its share of the link.

    In a butterfly all-reduce of G peers every uplink carries G - 1 part streams at once (and every
    downlink receives G - 1), so one stream gets about 1/(G - 1) of the link: pass ``streams=G - 1``.
    (Measured at 5 Mbit/s with 4 peers: a timeout sized for one stream per link banned healthy
    peers in every round.)
    """
    if bandwidth_bytes_per_s <= 0:
        return 600.0
    return max(floor_s, safety * part_bytes * max(1, streams) / bandwidth_bytes_per_s)


# bytes/s at which a serving node readies a state or an update before its first part leaves: copied
# into shared memory in its host process, handed to its averager process, serialised. With a 2 s wait
# (the chunk timeout's floor) 19 download attempts timed out at 86M (688 MB) on a 2-core box, the
# servers busy training, and the joiner got its state on its fifth try (the size benchmark,
# 2026-12-07); this rate gives that state 22.6 s.
SERVER_PREPARE_BYTES_PER_S = 100e6


def first_part_timeout(served_bytes: float, chunk_s: float, *, safety: float = 3.0) -> float:
    """How long a download waits for its first part: a chunk's wait, plus the time the server takes
    to ready ``served_bytes`` before it sends anything."""
    return chunk_s + safety * served_bytes / SERVER_PREPARE_BYTES_PER_S

