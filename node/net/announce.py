"""Signed state-hash announcements in the DHT, and the hash a joiner may accept.

Why signed DHT records (hard to undo; a trust rule): a joiner used to check a downloaded state
against the hash sent by the very peer that served it, so a lying peer could hand out any state.
Now every node, after each round (and every 5 s), stores a ``StateAnnouncement`` sealed with its
own key under ``<run prefix>_state_hashes``, subkey = its peer id. A joiner reads them all, keeps
those whose signature verifies for the subkey's peer id and that are recent, and accepts a
download only if its hash is the one a strict majority of those distinct peers announced
(:func:`majority_hash`). A node that learns it is forked replaces its record with an abstention
(an empty hash, counted by nobody), so stale records of forked nodes never block the vote. The
download itself is then tried peer by peer until one serves exactly that state
(``PseudoGradientAverager.load_state_from_peers(expected_hash=...)``), so a liar that advertises a
high priority is skipped, not trusted.

The alternative, the coordinator's per-round hash log built from reports, was not taken: the
swarm must keep training (and admitting joiners) while the coordinator is down, and reports reach
it seconds after the round. What signed records do not stop: one operator with many keys (a
Sybil majority of the announcers); that needs identity cost (the confirmations and spot checks
of the coordinator), not a better vote.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hivemind.utils import get_dht_time

from protocol import Identity, ProtocolError, RunManifest, StateAnnouncement, open_envelope, seal

__all__ = ["REFRESH_S", "TTL_S", "Majority", "StateAnnouncer", "majority_hash"]

logger = logging.getLogger(__name__)

REFRESH_S = 5.0  # the daemon re-announces this often
TTL_S = 20.0  # a record lives this long in the DHT unless refreshed: a dead peer's vote lapses quickly
# (a hung peer's lingering record left a 2-node fork without a majority in a churn test)
MAX_AGE_S = 600.0  # signed sent_at older than this is not "recent" (a replayed old record)


@dataclass(frozen=True)
class Majority:
    state_hash: str
    round: int
    votes: int  # distinct peers announcing exactly this (hash, round)
    voters: int  # distinct peers with a valid recent announcement


def majority_hash(announcements: Iterable[StateAnnouncement], *, exclude: str = "") -> Majority | None:
    """The (hash, round) more than half of the distinct announcers hold, or None. One record per
    peer (the newest ``sent_at``); ``exclude`` (the joiner itself) does not vote."""
    latest: dict[str, StateAnnouncement] = {}
    for a in announcements:
        if a.peer_id != exclude and (a.peer_id not in latest or a.sent_at > latest[a.peer_id].sent_at):
            latest[a.peer_id] = a
    if not latest:
        return None
    votes = Counter((a.state_hash, a.round) for a in latest.values())
    (state_hash, round_), n = max(votes.items(), key=lambda kv: (kv[1], kv[0][1], kv[0][0]))
    if 2 * n <= len(latest):
        return None
    return Majority(state_hash, round_, n, len(latest))


def verify_records(records: dict[Any, Any], manifest: RunManifest, now: float) -> list[StateAnnouncement]:
    """DHT subkey -> sealed bytes; keep the announcements signed by the subkey's peer for this run, recent."""
    out = []
    for subkey, item in records.items():
        data = getattr(item, "value", None)
        if not isinstance(data, bytes):
            continue
        try:
            envelope = open_envelope(data, max_size=1024)
        except ProtocolError:
            continue
        m = envelope.message
        if (not isinstance(m, StateAnnouncement) or m.peer_id != str(subkey) or m.run_id != manifest.run_id
                or not now - MAX_AGE_S <= m.sent_at <= now + MAX_AGE_S or len(m.state_hash) != 64):
            continue
        out.append(m)
    return out


class StateAnnouncer:
    """Publishes this node's state hash and reads everyone's (a DHT owned by the caller)."""

    def __init__(self, dht: Any, manifest: RunManifest, identity: Identity, prefix: str):
        self.dht, self.manifest, self.identity = dht, manifest, identity
        self.key = f"{prefix}_state_hashes"

    def announce(self, round_: int, state_hash: str) -> None:
        msg = StateAnnouncement(run_id=self.manifest.run_id, peer_id=self.identity.peer_id, sent_at=time.time(),
                                round=round_, state_hash=state_hash)
        self.dht.store(self.key, subkey=self.identity.peer_id, value=seal(msg, self.identity),
                       expiration_time=get_dht_time() + TTL_S, return_future=True)

    def records(self) -> list[StateAnnouncement]:
        """Every valid, recent announcement in the DHT (ours included)."""
        found = self.dht.get(self.key, latest=True)
        if found is None or not isinstance(found.value, dict):
            return []
        return verify_records(found.value, self.manifest, time.time())

    def majority(self) -> Majority | None:
        return majority_hash(self.records(), exclude=self.identity.peer_id)
