"""The agreement on failed reducers after a group's data phase, decided by the node's own rule.

Every member posts the reducers it saw fail; ``node.policies.agreement.settle`` (the function the
node runs) turns the records into a decision. The simulator's members see no partial reducer
failures (a group's all-reduce either completes or fails as a whole, ``allreduce.run_group``), so
an honest member claims nothing, and only hostile members (``RoundProtocol.hostile_fraction``,
as ``node/host/faults.py``'s seams make them) change the outcome:

    lie       posts "every reducer failed": refuted by an honest majority (costs nothing); a
              majority of liars zeroes every share and the group drops the round
    withhold  posts nothing: the rest decide without it while it cannot tip a decision; a
              withholding majority leaves the decision open until the deadline (``wait_s``),
              then the group drops the round (``stall``, posting after the deadline, is the same)

A hostile member decides its own round honestly (as the seams do), so every member of a group
reaches the same decision; :func:`agree` returns it and the seconds the members waited.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from node.policies.agreement import settle, wait_s

__all__ = ["HOSTILE_KINDS", "Agreement", "agree"]

HOSTILE_KINDS = ("lie", "withhold", "stall")


@dataclass(frozen=True)
class Agreement:
    applied: bool
    waited_s: float  # beyond the records' one DHT round trip (matchmaking_s covers that)
    reason: str | None = None  # why the group dropped the round


def agree(hostile: Sequence[bool], kind: str) -> Agreement:
    """The decision of a group whose k-th member is hostile when ``hostile[k]``."""
    if kind not in HOSTILE_KINDS:
        raise ValueError(f"hostile kind must be one of {HOSTILE_KINDS}, not {kind!r}")
    members = [f"m{k}" for k in range(len(hostile))]
    reducers = set(range(len(members)))
    honest = [m for m, h in zip(members, hostile) if not h]
    if not honest:  # nobody to decide honestly: the liars' claims stand, or nothing is heard
        return Agreement(False, 0.0 if kind == "lie" else wait_s(None), "no honest member")
    records = {m: frozenset() for m in honest}
    if kind == "lie":
        records.update({m: frozenset(reducers) for m, h in zip(members, hostile) if h})
    me = honest[0]
    decision = settle(frozenset(), records, members, me, reducers, final=False)
    waited = 0.0
    if decision is None:  # open: wait for records that never come (or come too late)
        decision, waited = settle(frozenset(), records, members, me, reducers, final=True), wait_s(None)
    assert decision is not None
    return Agreement(decision.drop is None, waited, decision.drop)
