"""What the members of an averaging group told each other, checked before anything reads it.

hivemind's all-gather hands every member each other member's ``gather`` value, decoded from
MessagePack: any type, any size. A member controls what it sends, so the trainer reads these
values only through :func:`parse_group`: a member whose value is not a well-formed
``{"tokens": int, "state_hash": 64 hex chars, "state_round": int, "serves": bool}`` within range
(``serves`` may be absent: a server) is dropped from
the round's claims and from the vote on the reference state (its pseudo-gradient may already be
in the average: the reducers' robust aggregation is what bounds that), and never crashes the
node or poisons the report it signs.
"""
from __future__ import annotations

import logging
import string
from collections import Counter
from dataclasses import dataclass
from typing import Any

__all__ = ["Member", "parse_group", "reference_hash", "token_ceiling"]

logger = logging.getLogger(__name__)

MAX_ROUND = 2**53  # rounds are counted in ints a float can hold: far beyond any run
_HEX = frozenset(string.hexdigits.lower())


@dataclass(frozen=True)
class Member:
    peer_id: str
    tokens: int
    state_hash: str
    state_round: int
    serves: bool = True  # serves its global state to downloaders (a client behind NAT does not)


def token_ceiling(round_tokens: int) -> int:
    """The most tokens one member may plausibly claim for a round: the whole round's target a few
    times over (a lone node overshoots by at most one batch; the swarm may be slow to notice the
    target). Far below SQLite's and MessagePack's int64, so a report that carries it seals."""
    return 16 * max(1, round_tokens)


def _int(value: Any, lo: int, hi: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        return None
    return value


def parse_member(peer: Any, info: Any, max_tokens: int) -> Member | None:
    """One member's gathered value, or None (logged) when it is malformed or out of range."""
    peer_id = str(peer)
    if not isinstance(info, dict):
        logger.warning("group member %s sent a %s, not a dict; dropped from the round", peer_id[:16], type(info).__name__)
        return None
    tokens = _int(info.get("tokens"), 0, max_tokens)
    state_round = _int(info.get("state_round", 0), 0, MAX_ROUND)
    state_hash = info.get("state_hash")
    serves = info.get("serves", True)
    hash_ok = isinstance(state_hash, str) and len(state_hash) == 64 and set(state_hash) <= _HEX
    if tokens is None or state_round is None or not hash_ok or not isinstance(serves, bool) or len(peer_id) > 128:
        logger.warning("group member %s sent malformed or out-of-range values (tokens %.40r, round %.40r, hash %.70r); "
                       "dropped from the round", peer_id[:16], info.get("tokens"), info.get("state_round"), state_hash)
        return None
    return Member(peer_id, tokens, state_hash, state_round, serves)  # type: ignore[arg-type]


def parse_group(gathered: dict[Any, Any], max_tokens: int) -> list[Member]:
    """The well-formed members of a gathered group, in hivemind's order."""
    members = (parse_member(peer, info, max_tokens) for peer, info in gathered.items())
    return [m for m in members if m is not None]


def reference_hash(members: list[Member]) -> str | None:
    """The reference state: the hash most members hold among the states some member can serve; on a
    tie the newer round, then the hash itself (so every member picks the same). Counting first (not
    "newest round first") means one member announcing a made-up future round cannot make a majority
    resynchronise.

    Why only servable states (a trust rule): a member that differs from the reference downloads it,
    and a client behind NAT serves nothing. Under the old rule, when a public node and a home node
    disagreed the newer round won the tie; if that was the home node's, the public node could never
    fetch it, differed in every round after, and no joiner could fetch a state either (what the
    statuses of a NAT swarm test stuck for 240 s in CI show). A state only clients hold cannot
    spread, so it never wins.
    """
    servable = {m.state_hash for m in members if m.serves}
    voting = [m for m in members if m.state_hash in servable] or members
    if not voting:
        return None
    votes = Counter((m.state_hash, m.state_round) for m in voting)
    return max(votes.items(), key=lambda kv: (kv[1], kv[0][1], kv[0][0]))[0][0]
