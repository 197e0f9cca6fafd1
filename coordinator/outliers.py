"""Reducers' outlier reports -> flagged peers. Pure: rows in, flags out.

A reducer of a robust all-reduce (``hparams.aggregation`` != "mean") signs an ``OutlierReport``
naming the members whose parts it clipped (too large) or found (almost) empty. One reducer alone
may lie about an honest member, so a round counts against a member once at least
:data:`MIN_REDUCERS` distinct reducers (never the member itself) reported it for that round; and
one such round is what honest nodes look like now and then (a node past its inner warmup among
nodes that just joined moves 10x further than they do; a joiner's first round moves little), so
the member is *flagged* from its :data:`MIN_ROUNDS`-th such round on. A poisoner or a free rider
is an outlier every round: flagged at the third. So is a member that claims, in the agreement on
failed reducers, failures no other member saw (``dissent`` rows: node/policies/agreement.py), as a
member that lies there to stall the round does every round. A flagged peer's
credit stays unconfirmed: the snapshot moves its confirmed tokens to unconfirmed, so neither the
leaderboard's confirmed share nor any confirmed-only cost counts them, and the dashboard shows the
flag beside its state.

What this does not stop: reducers that are all one attacker's keys can flag an honest peer (it
needs two of them in that peer's group); and a group where the attacker is half or more of the
members cannot tell liar from honest (``node.averaging.robust`` flags nobody below three members).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["MIN_REDUCERS", "MIN_ROUNDS", "apply_flags", "flags"]

MIN_REDUCERS = 2
MIN_ROUNDS = 3  # rounds in which >= MIN_REDUCERS reducers named the member (measured: an honest first
# node among warming-up joiners was named in 2 rounds of a loopback run, a x-100 poisoner in every one)


def flags(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``rows``: (member, round, reducer, max_ratio, min_ratio, dissent) of stored outlier reports.
    Returns ``{member: {"rounds": [...], "first_round", "flagged_at", "reducers": distinct reporters,
    "max_ratio", "min_ratio", "dissent": whether some report named it for its agreement claims}}``
    for every member that at least MIN_REDUCERS distinct reducers reported in each of at least
    MIN_ROUNDS rounds (``flagged_at``: the MIN_ROUNDS-th of them)."""
    by_round: dict[tuple[str, int], set[str]] = defaultdict(set)
    extremes: dict[str, list[float]] = {}
    dissent: set[str] = set()
    for r in rows:
        if r["reducer"] == r["member"]:
            continue
        if r.get("dissent"):
            dissent.add(r["member"])
        by_round[(r["member"], r["round"])].add(r["reducer"])
        lo_hi = extremes.setdefault(r["member"], [r["max_ratio"], r["min_ratio"]])
        lo_hi[0], lo_hi[1] = max(lo_hi[0], r["max_ratio"]), min(lo_hi[1], r["min_ratio"])
    out: dict[str, dict[str, Any]] = {}
    for (member, round_), reducers in sorted(by_round.items()):
        if len(reducers) < MIN_REDUCERS:
            continue
        flag = out.setdefault(member, {"rounds": [], "reducers": set()})
        flag["rounds"].append(round_)
        flag["reducers"] |= reducers
    out = {m: f for m, f in out.items() if len(f["rounds"]) >= MIN_ROUNDS}
    for member, flag in out.items():
        flag["first_round"] = min(flag["rounds"])
        flag["flagged_at"] = sorted(flag["rounds"])[MIN_ROUNDS - 1]
        flag["rounds"] = flag["rounds"][-20:]
        flag["reducers"] = len(flag["reducers"])
        flag["max_ratio"], flag["min_ratio"] = extremes[member]
        flag["dissent"] = member in dissent
    return out


def apply_flags(peers: Sequence[dict[str, Any]], flagged: Mapping[str, Mapping[str, Any]]) -> None:
    """Mark flagged peers' snapshot rows and keep their credit unconfirmed (in place)."""
    for p in peers:
        flag = flagged.get(p["peer_id"])
        p["flagged"] = flag is not None
        if flag is not None:
            p["flag"] = dict(flag)
            p["unconfirmed_tokens"] += p["confirmed_tokens"]
            p["confirmed_tokens"] = 0
