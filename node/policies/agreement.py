"""Agreement on failed reducers, so every member of a group applies the same average, and no faulty
minority can stall or split the round.

In a butterfly all-reduce each reducer returns its share of the average to every member. When a
reducer dies or stalls, members can see different things: one received the whole share, another
only some parts (or none). A member that lacks a share cannot apply an average that holds it, so
without more the replicas fork (seen in CI: two survivors of a frozen peer each lost the other's
share and kept their own).

So after its data phase every member posts the set of reducers it saw fail (indices into the
group's ordered peer list), signed with its peer key (``records.py``: a DHT record validator, so
a record under another member's name is refused by every honest DHT node), and reads the others'.
The rule (``settle``), hard to undo, so written here:

- a reducer's share is zeroed on every member when a **majority** of the group's members
  (``quorum``) say it failed; a claim fewer members make is refuted, and a member that made it
  (it lacks a share the others keep) drops the round itself: it is one round behind, not forked,
  and the next group's state vote ("newest round wins" on a tie, ``group.py``) sends it to download
  the state. A liar that posts "every reducer failed" thus drops only its own round;
- a member waits until the records still unheard could not change any decision (each reducer is
  claimed by a quorum already, or could not reach one even if every unheard member claimed it),
  or until its deadline (``wait_s``). So a member that withholds or posts late costs nothing
  while the rest agree; a decision still open at the deadline drops the round (dropping never
  forks);
- every reducer's share failed: drop.

Why a majority, not the union of every record (the first wave's rule): under the union one member
that posts "every reducer failed", or never posts, made every other member drop every round (a
hostile copy of the node let three honest ones apply 10 % of their rounds). Two honest members
that each decided (nothing open) cannot disagree: a quorum one of them counted is a quorum of the
true records, and a refutation counted the unheard as claimants. What is left: a member that
signs two different records and shows each to part of the group (a record may be replaced by a
later one) can tip a reducer that exactly ``quorum - 1`` honest members saw fail (a partial
failure in the same round); the state vote of the next round is the safety net for that. A
majority of colluding members can zero an honest reducer's share (not split the group).

A member whose claims no other member made is named to the coordinator by the others (``dissent``,
the outlier-report path), which flags a peer that at least two members name in each of three
rounds (``coordinator/outliers.py``). The functions here are pure (records in, a decision out);
the DHT calls are in ``averager.py``.
"""
from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["MAX_GROUP", "MIN_WAIT_S", "Settlement", "parse_failed", "quorum", "record_message", "settle", "wait_s"]

MAX_GROUP = 4096  # a record listing more reducers than this is malformed
MIN_WAIT_S = 5.0  # the longest wait for the others' records, at least: two DHT round trips on a loaded machine
RECORD_DOMAIN = b"capaswarm/failed-reducers/v1\0"  # what a record's signature covers starts with this


def wait_s(sender_timeout_s: float | None) -> float:
    """How long a member waits at most for the records that could change its decision after its
    own data phase: members finish their data phases up to a reducer timeout (two sender timeouts)
    apart, and a record needs a DHT store and get on top."""
    return max(MIN_WAIT_S, 3 * (sender_timeout_s or 0.0))


def quorum(members: int) -> int:
    """Members whose claims zero a reducer's share: a strict majority of the group's members."""
    return members // 2 + 1


def record_message(key: bytes, subkey: bytes, value: bytes, expiration_time: float) -> bytes:
    """The bytes a record's signature covers: the DHT key (so a record is bound to its group's
    round), the subkey naming the poster, the value and its expiration (so neither can be replayed
    under another one)."""
    parts = (key, subkey, value)
    return RECORD_DOMAIN + b"".join(struct.pack(">I", len(p)) + p for p in parts) + struct.pack(">d", expiration_time)


def parse_failed(value: object, group_size: int) -> frozenset[int] | None:
    """A member's posted record -> the reducer indices it saw fail, or None when it is malformed
    (not a list of distinct ints within the group)."""
    if not isinstance(value, (list, tuple)) or len(value) > min(group_size, MAX_GROUP):
        return None
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < group_size for i in value):
        return None
    out = frozenset(value)
    return out if len(out) == len(value) else None


@dataclass(frozen=True)
class Settlement:
    failed: frozenset[int]  # reducers whose shares every applying member zeroes
    drop: str | None  # why this member drops the round (None: apply the average with ``failed`` zeroed)
    unheard: list[str] = field(default_factory=list)  # members with no record when this was decided
    dissenters: list[str] = field(default_factory=list)  # other members that claimed a failure no one else saw


def settle(own: frozenset[int] | set[int], records: Mapping[str, frozenset[int]], members: Sequence[str], me: str,
           reducers: set[int], *, final: bool) -> Settlement | None:
    """Decide this member's round from its own claims (``own``) and the others' well-formed records
    (``records``: peer id -> claimed indices; peers outside ``members`` are ignored). ``reducers``:
    the indices that held a share (clients hold none). Returns None while a decision is still open
    and ``final`` is False (wait for more records)."""
    heard = {me: frozenset(own), **{p: records[p] for p in members if p != me and p in records}}
    unheard = [p for p in members if p not in heard]
    need = quorum(len(members))
    counts = Counter(i for claims in heard.values() for i in claims)
    failed = frozenset(i for i, c in counts.items() if c >= need)
    # open: an index the unheard could still carry to a quorum (a reducer nobody claimed yet included)
    open_ = [i for i in set(reducers) | set(counts) if counts[i] < need <= counts[i] + len(unheard)]
    if open_:
        if not final:
            return None
        return Settlement(failed, f"no majority either way on {len(open_)} reducer(s) from {len(heard)} of "
                                  f"{len(members)} records before the deadline", unheard)
    dissenters = [p for p, claims in heard.items() if p != me and any(counts[i] == 1 for i in claims)]
    if not own <= failed:
        return Settlement(failed, f"we saw {len(own - failed)} reducer(s) fail that no majority of the group did",
                          unheard, dissenters)
    if reducers and reducers <= failed:
        return Settlement(failed, "every reducer's share failed", unheard, dissenters)
    return Settlement(failed, None, unheard, dissenters)
