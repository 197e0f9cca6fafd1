"""Our global state and the swarm's: serve ours, announce its hash, download and check theirs.

A node serves its latest global state to joiners (through the averager's state sharing, with
its round as the priority), announces the state's hash in signed DHT records
(``node.net.announce``), stops both while it knows its state is a fork, and, when it is behind,
downloads the state a majority of the announcing peers hold. Which state to adopt, and what
then changes in the round, is the trainer's business; this module only moves and checks it.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import torch

from node.net.announce import StateAnnouncer
from node.policies.timeouts import state_download_timeout
from node.model.state import GlobalState, StateCheck
from node.net.swarm import run_prefix
from protocol import Identity, RunManifest

__all__ = ["SYNC_ATTEMPTS", "SYNC_RETRY_S", "StateSync"]

logger = logging.getLogger(__name__)

SYNC_ATTEMPTS = 4  # reads of the state vote (and downloads) per resynchronisation
SYNC_RETRY_S = 0.75  # between them: announcements trail the served state by a DHT round trip


class StateSync:
    def __init__(self, swarm: Any, manifest: RunManifest, identity: Identity | None, payload_bytes: int, bandwidth: float):
        self.swarm, self.manifest = swarm, manifest  # node.net.swarm.SwarmHandles, its averager started
        # signed state-hash announcements (node/net/announce.py); without an identity, downloads are
        # checked only against the hash their server claims
        self.announcer = StateAnnouncer(swarm.dht, manifest, identity, run_prefix(manifest)) if identity is not None else None
        self.announcing = False  # from our first agreed round or download on: a fresh node's round 0 is no vote
        self.download_timeout = state_download_timeout(2 * payload_bytes, bandwidth)

    def advertise(self, global_round: int) -> None:
        """Joiners download from the peer with the newest round; a client (behind NAT) serves none."""
        if not self.swarm.averager.client_mode:
            self.swarm.averager.state_sharing_priority = float(global_round)

    def share(self, allow: bool) -> None:
        """Serve our global state to joiners, or stop while we know it is a fork (downloaders then
        try the next peer). Takes effect at once: the flag is shared with the averager process."""
        averager = self.swarm.averager
        if averager.allow_state_sharing != allow and not averager.client_mode:
            averager.allow_state_sharing = allow

    def announce(self, global_round: int, state_hash: str) -> None:
        """Announce our global state's hash (the caller knows it is no fork)."""
        if self.announcer is None or not self.announcing:
            return
        try:
            self.announcer.announce(global_round, state_hash)
        except Exception:  # the DHT is shutting down, or busy: the next announcement comes soon
            logger.debug("state announcement failed", exc_info=True)

    def withdraw(self, global_round: int) -> None:
        """A node that learns it is forked replaces its announcement with an abstention (an empty
        hash, which no reader counts). Otherwise every member of a group that disagreed would stop
        announcing while their older records lingered, and the vote among those could leave no
        majority ahead of anyone: a fork that never heals (seen in an overlapped loopback run)."""
        if self.announcer is None or not self.announcing:
            return
        try:
            self.announcer.announce(global_round, "")
        except Exception:
            logger.debug("withdrawing the state announcement failed", exc_info=True)

    def forked(self, global_round: int) -> None:
        """Our state differs from our group's: a joiner must not download our fork (it would have to
        resync again), nor count our fork's hash (or our last one) in the vote."""
        self.share(False)
        self.withdraw(global_round)

    def _check(self, global_round: int, shapes: list[torch.Size]) -> StateCheck | None:
        """What a downloaded state must be now: the majority's announced hash (None: no majority yet)."""
        expected = None
        if self.announcer is not None:
            try:
                majority = self.announcer.majority()
            except Exception as e:  # the DHT is busy or shutting down: try again
                logger.warning("could not read state announcements: %r", e)
                return None
            if majority is None or majority.round < global_round:
                logger.info("no majority of announced state hashes ahead of us yet")
                return None
            expected = majority.state_hash
            logger.info("downloading the state of round %d that %d of %d announcing peers hold (%s)", majority.round,
                        majority.votes, majority.voters, expected[:12])
        return StateCheck(self.manifest.content_hash, tuple(tuple(s) for s in shapes), expected, global_round)

    def download(self, global_round: int, shapes: list[torch.Size]) -> GlobalState | None:
        """The latest global state from a peer, checked; None if none could be had.

        With announcements (a node with an identity), only the state whose hash a majority of the
        distinct recently active peers announced is accepted (``node.net.announce``); the averager
        tries peer after peer until one serves exactly that. Announcements reach the DHT a moment
        after the state they describe is served, and short rounds move both on: so a refused or
        premature attempt re-reads the vote and tries again, a few times within the download budget."""
        deadline = time.monotonic() + self.download_timeout
        got = None
        for attempt in range(SYNC_ATTEMPTS):
            if attempt:
                time.sleep(SYNC_RETRY_S)
            if time.monotonic() > deadline:
                break
            check = self._check(global_round, shapes)
            if check is None:
                continue
            try:
                got = self.swarm.averager.load_state_from_peers(timeout=max(1.0, deadline - time.monotonic()), accept=check)
            except Exception as e:  # a peer that froze mid-download; the next round tries again
                logger.warning("state download failed: %r", e)
                return None
            if got is not None:
                break
        if got is None:
            return None
        meta, tensors = got
        if (why_not := check(meta, list(tensors))) is not None:  # the averager checked; this is our own look
            logger.warning("downloaded state refused: %s", why_not)
            return None
        return GlobalState.from_wire(meta, list(tensors), shapes)
