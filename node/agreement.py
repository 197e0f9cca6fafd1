"""Agreement on failed reducers, so every member of a group applies the same average.

In a butterfly all-reduce each reducer returns its share of the average to every member. When a
reducer dies or stalls, members can see different things: one received the whole share, another
only some parts (or none). ``node/averaging.py`` zeroes a failed reducer's whole share, but only on
the members that saw it fail, so without more the replicas fork (seen in CI: two survivors of a
frozen peer each lost the other's share and kept their own).

So after the all-reduce every member posts the set of reducers it saw fail (indices into the
group's ordered peer list) under a DHT key of that group, reads the others' sets until it has one
from every member or a deadline passes, and zeroes the union. Members that posted hold the same
union, hence the same average. What this does not close (hard to undo, so written here):

- a member whose set arrives after another member's deadline (a DHT slower than the deadline, or
  a member stalled between its all-reduce and its post) can still differ; the state-hash check
  after the round and the resynchronisation remain the safety net;
- records are keyed by the poster's peer id but not signed (hivemind's DHT subkeys are not
  authenticated here): a hostile peer can claim failures and so zero shares of this round's
  average. That costs progress, never correctness of what is kept, and a peer that does it every
  round shows up in the logs (``agreement: peer X reported N failed reducers``).

The functions here are pure (records in, a set out); the DHT calls are in ``node/averaging.py``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["MAX_GROUP", "parse_failed", "union_of_failed"]

MAX_GROUP = 4096  # a record listing more reducers than this is malformed


def parse_failed(value: object, group_size: int) -> frozenset[int] | None:
    """A member's posted record -> the reducer indices it saw fail, or None when it is malformed
    (not a list of distinct ints within the group)."""
    if not isinstance(value, (list, tuple)) or len(value) > min(group_size, MAX_GROUP):
        return None
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < group_size for i in value):
        return None
    out = frozenset(value)
    return out if len(out) == len(value) else None


def union_of_failed(own: set[int], records: Mapping[str, object], members: Sequence[str],
                    me: str) -> tuple[set[int], list[str], list[str]]:
    """The reducers every member must treat as failed: ours plus every well-formed record of another
    member of ``members``. Returns (the union, members still unheard from, members whose record was
    malformed). Records of peers outside the group are ignored."""
    failed, missing, malformed = set(own), [], []
    for peer in members:
        if peer == me:
            continue
        if peer not in records:
            missing.append(peer)
            continue
        parsed = parse_failed(records[peer], len(members))
        if parsed is None:
            malformed.append(peer)
        else:
            failed |= parsed
    return failed, missing, malformed
