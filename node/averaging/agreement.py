"""Agreement on failed reducers, so every member of a group applies the same average.

In a butterfly all-reduce each reducer returns its share of the average to every member. When a
reducer dies or stalls, members can see different things: one received the whole share, another
only some parts (or none). ``node/averaging/averager.py`` zeroes a failed reducer's whole share, but only on
the members that saw it fail, so without more the replicas fork (seen in CI: two survivors of a
frozen peer each lost the other's share and kept their own).

So after the all-reduce every member posts the set of reducers it saw fail (indices into the
group's ordered peer list) under a DHT key of that group and reads the others' sets until it has
one from every member or its wait (``wait_s``) is over. Then (``verdict``):

- every member heard: zero the union and apply. Every member that applies has read the same
  records, so it applies the same average;
- a member unheard from, or every reducer's share failed: drop the round (no outer step). A member
  whose own data phase failed posts every index, so the others drop the round at once instead of
  waiting for it.

A member that drops a round its group applied is one round behind, not forked: the next group's
state vote ("newest round wins" on a tie, ``node/averaging/group.py``) sends it to download the state. So
members never hold two different states of one round from this cause. Hard to undo, so written
here, what this does not close:

- records are keyed by the poster's peer id but not signed (hivemind's DHT subkeys are not
  authenticated here): a hostile peer can claim failures, or withhold its record, and so zero
  shares of this round's average or drop the round for everyone. That costs progress, never
  correctness of what is kept (its power equals failing the all-reduce), and a peer that does it
  every round shows up in the logs (``agreement: ...``). A peer that rewrites its record while
  others read it can make members read different records: the state vote and the download after
  the round remain the safety net for that.

The functions here are pure (records in, a set out); the DHT calls are in ``node/averaging/averager.py``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["MAX_GROUP", "MIN_WAIT_S", "parse_failed", "union_of_failed", "verdict", "wait_s"]

MAX_GROUP = 4096  # a record listing more reducers than this is malformed
MIN_WAIT_S = 5.0  # the shortest wait for the others' records: two DHT round trips on a loaded machine


def wait_s(sender_timeout_s: float | None) -> float:
    """How long a member waits for every other member's record after its own data phase: members
    finish their data phases up to a reducer timeout (two sender timeouts) apart, and a record
    needs a DHT store and get on top."""
    return max(MIN_WAIT_S, 3 * (sender_timeout_s or 0.0))


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
                    me: str, group_size: int | None = None) -> tuple[set[int], list[str], list[str]]:
    """The reducers every member must treat as failed: ours plus every well-formed record of another
    member of ``members``. Returns (the union, members still unheard from, members whose record was
    malformed). Records of peers outside the group are ignored. ``group_size``: the number of peers
    the indices run over (default: the members)."""
    failed, missing, malformed = set(own), [], []
    for peer in members:
        if peer == me:
            continue
        if peer not in records:
            missing.append(peer)
            continue
        parsed = parse_failed(records[peer], len(members) if group_size is None else group_size)
        if parsed is None:
            malformed.append(peer)
        else:
            failed |= parsed
    return failed, missing, malformed


def verdict(failed: set[int], missing: Sequence[str], reducers: set[int]) -> str | None:
    """Why this member must drop the round, or None to apply the average with ``failed`` zeroed.
    ``reducers``: the indices of the members that held a share (clients hold none)."""
    if missing:
        return f"no record of failed reducers from {len(missing)} member(s)"
    if reducers and reducers <= failed:
        return "every reducer's share failed"
    return None
