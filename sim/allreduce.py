"""One group's butterfly all-reduce: how long it takes and whether it works. Pure.

hivemind's butterfly sends and receives ``2(N-1)/N x payload`` per peer
(:func:`node.policies.timeouts.allreduce_bytes`), in two stages, and every peer reduces one part,
so the group moves at the pace of its slowest member's link. The time is that transfer plus one
round trip per stage:

    t = allreduce_bytes(payload, N) / min_i(link_i) + 2 x max_i(rtt_i)

This is the bandwidth-optimal bound (Patarasuk and Yuan 2009); real runs add CPU work and framing
(TCP over Ethernet carries at most 95.6 % of the line rate), which calibration folds into the
effective link speed.

The timeout is the node's own, :func:`node.policies.timeouts.allreduce_timeout` at the assumed
bandwidth, sized as the node sizes it (``timeout_payload_bytes``: fp32, for 64 peers). A group
that would overrun it:

- ``fail_group``: ``averager.step(timeout=...)`` raises on every member at the timeout; all their
  tokens of the round are lost and they resynchronise (what ``node/train/trainer.py`` does);
- ``ban``: hivemind's sender timeout drops the members too slow to finish in time after
  ``failure_detect_s``; the others finish the average among themselves.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from node.policies.timeouts import allreduce_bytes, allreduce_timeout

from .config import RoundProtocol

__all__ = ["Outcome", "butterfly_time", "run_group"]

MBIT = 1e6 / 8


def butterfly_time(payload_bytes: float, group_size: int, link_bytes_per_s: float, rtt_s: float = 0.0) -> float:
    """Seconds for a butterfly all-reduce of ``group_size`` peers whose slowest link is given."""
    if group_size <= 1:
        return 0.0
    return allreduce_bytes(payload_bytes, group_size) / link_bytes_per_s + 2.0 * rtt_s  # type: ignore[arg-type]


@dataclass(frozen=True)
class Outcome:
    ok: bool
    duration_s: float  # from the start of the all-reduce until the group is done or gives up
    banned: tuple[int, ...] = ()  # positions (in the member list) dropped as stragglers
    banned_at_s: float = 0.0  # when the banned members learn they failed
    group_size: int = 0  # members whose average it is (after bans)
    sent_share: float = 1.0  # share of allreduce_bytes each member sent (< 1 when it gave up)
    cause: str = ""  # why it failed: "timeout" | "failure"


def run_group(
    payload_bytes: float,
    links: Sequence[float],
    rtts: Sequence[float],
    protocol: RoundProtocol,
    rng: random.Random,
    timeout_payload_bytes: float | None = None,
) -> Outcome:
    """The outcome of one group's all-reduce. Draws exactly one number from ``rng``.

    ``payload_bytes`` is the symmetric payload of this group (``CodecModel.payload_bytes``);
    ``timeout_payload_bytes`` what the node sizes its timeout on (default: the payload)."""
    n = len(links)
    unlucky = rng.random() < protocol.group_failure_rate
    if n <= 1:  # alone: the node averages with itself (node/train/rounds.py: num_peers <= 1)
        return Outcome(ok=True, duration_s=0.0, group_size=n, sent_share=0.0)
    sized_on = payload_bytes if timeout_payload_bytes is None else timeout_payload_bytes
    timeout = allreduce_timeout(int(sized_on), protocol.timeout_group_size, protocol.assumed_bandwidth_mbps * MBIT)
    rtt = max(rtts)
    t = butterfly_time(payload_bytes, n, min(links), rtt)
    if unlucky:  # a connection dies somewhere in the transfer
        at = min(t, timeout) * rng.random()
        return Outcome(ok=False, duration_s=at, group_size=n, sent_share=at / t, cause="failure")
    if t <= timeout:
        return Outcome(ok=True, duration_s=t, group_size=n)
    if protocol.straggler_policy == "fail_group":
        return Outcome(ok=False, duration_s=timeout, group_size=n, sent_share=timeout / t, cause="timeout")
    # ban: members that could not finish in time even in this group are dropped; the rest restart
    banned = tuple(k for k in range(n) if butterfly_time(payload_bytes, n, links[k], rtt) > timeout)
    kept = [links[k] for k in range(n) if k not in banned]
    detect = protocol.failure_detect_s
    if not kept:
        return Outcome(ok=False, duration_s=detect, group_size=n, sent_share=detect / t, cause="timeout")
    rest = detect + butterfly_time(payload_bytes, len(kept), min(kept), rtt)
    if rest > timeout:
        return Outcome(ok=False, duration_s=timeout, group_size=n, sent_share=timeout / t, cause="timeout")
    return Outcome(ok=True, duration_s=rest, banned=banned, banned_at_s=detect, group_size=len(kept))
