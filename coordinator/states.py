"""Peer states from report timing. Pure: timestamps in, a state out; ``now`` is an argument.

::

    joining  seen (heartbeats), but no contribution report yet, or says it is joining
    online   heard from within ``stale_after_s``
    paused   heard from, and says its work gate holds it back (schedule, busy, ``swarm ctl pause``,
             standby): not training, not billed
    standby  heard from, and says the signed cost plan has it on standby (not training, not billed)
    stale    silent for longer than ``stale_after_s`` (missed a few heartbeats)
    offline  silent for longer than ``offline_after_s``, or said it was leaving

"Heard from" is ``last_seen``: the time the node's latest message was made, never later than
when the coordinator received it. A backlog re-sent from a node's outbox after an outage
therefore does not make a node that died long ago look alive.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["PeerState", "StateThresholds", "peer_state"]


class PeerState(str, Enum):
    ONLINE = "online"
    JOINING = "joining"
    PAUSED = "paused"
    STALE = "stale"
    OFFLINE = "offline"
    STANDBY = "standby"  # appended: iteration order of the others is unchanged


@dataclass(frozen=True)
class StateThresholds:
    stale_after_s: float = 90.0  # three missed 30 s heartbeats
    offline_after_s: float = 300.0

    def __post_init__(self) -> None:
        if not 0 < self.stale_after_s <= self.offline_after_s:
            raise ValueError("need 0 < stale_after_s <= offline_after_s")


def peer_state(*, last_seen: float, last_status: str, reports: int, now: float, thresholds: StateThresholds) -> PeerState:
    """The state of one peer at ``now``."""
    silent_for = now - last_seen
    if last_status == "leaving" or silent_for > thresholds.offline_after_s:
        return PeerState.OFFLINE
    if silent_for > thresholds.stale_after_s:
        return PeerState.STALE
    if last_status == "paused":
        return PeerState.PAUSED
    if last_status == "standby":
        return PeerState.STANDBY
    if reports == 0 or last_status == "joining":
        return PeerState.JOINING
    return PeerState.ONLINE
