"""The averager's timeouts, adapted as the node learns its link and its group.

``node.net.swarm.averager_kwargs`` starts the averager with timeouts for the configured link speed;
from then on the trainer tells :class:`LinkTimeouts` what each all-reduce moved and how long it
took, and how many peers it expects in the next one, and the chunk and all-reduce timeouts follow
(the formulas are ``node.policies.timeouts``).
"""
from __future__ import annotations

from typing import Any

from node.policies.timeouts import allreduce_timeout, chunk_timeout, update_link_estimate

__all__ = ["LinkTimeouts"]


class LinkTimeouts:
    def __init__(self, averager: Any, payload_bytes: int, bandwidth: float, chunk_floor_s: float):
        self.averager = averager  # node.averaging.averager.PseudoGradientAverager: ``set_timeouts(chunk_s=, allreduce_s=)``
        self.payload_bytes = payload_bytes
        self.bandwidth = bandwidth  # bytes/s: the slowest link the timeouts assume (configured)
        self.chunk_floor_s = chunk_floor_s
        self.link_estimate: float | None = None  # bytes/s: what our all-reduces actually moved
        self.streams = 1  # part streams sharing a link in the next all-reduce (group size - 1)

    def measured(self, moved: int, seconds: float) -> None:
        """Follow the measured all-reduce speed, and derive the timeouts from it (not from a guess)."""
        estimate = update_link_estimate(self.link_estimate, moved, seconds)
        if estimate is None or estimate == self.link_estimate:
            return
        self.link_estimate = estimate
        self._apply()

    def expect_group(self, num_peers: int) -> None:
        """Before an all-reduce: a link carries one part stream per other member, so the chunk timeout
        grows with the group we expect (the peers currently training)."""
        streams = max(1, num_peers - 1)
        if streams != self.streams:
            self.streams = streams
            self._apply()

    def _apply(self) -> None:
        """Chunk and all-reduce timeouts for the link speed we know and the group we expect."""
        # measurements only make the timeouts more patient: a slow link gets the time it needs, but a
        # fast loopback round (or a lucky one) never shortens them below what the configured link implies
        speed = min(self.link_estimate or self.bandwidth, self.bandwidth)
        self.averager.set_timeouts(chunk_s=chunk_timeout(speed, floor_s=self.chunk_floor_s, streams=self.streams),
                                   allreduce_s=allreduce_timeout(self.payload_bytes, 64, speed))
