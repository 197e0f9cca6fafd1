"""The cost planner: which paid peers train now, and what the run will cost. Pure.

Numbers in, a decision out; no I/O and no clock (``now`` is an argument), so ``sim/`` runs the very
planner the coordinator runs. Imports: stdlib only.

The model (one DiLoCo round of the active set ``S``)::

    compute_s = round_tokens / sum_i r_i                      r_i: peer i's tokens per compute second
    comm_s    = overhead_s + 2 (N-1)/N x payload / min_i b_i  butterfly all-reduce (node.policies.timeouts
                                                              .allreduce_bytes): the slowest link sets the pace
    confirmed tokens/s = round_tokens x (sum_i r_i q_i / sum_i r_i) / (compute_s + comm_s)
                                                              q_i = reliability_i x uptime_i

So a peer adds compute but can slow everyone's all-reduce (a slow link), and a peer that fails
rounds or comes and goes adds less than its raw rate: scaling is not linear.

Choice: free peers (volunteers: no declared price) are always active. Paid peers are added greedily,
best marginal confirmed tokens per $ first, while the active set's $/h fits the cap (volunteers'
electricity counts too: the cap bounds what the ledger bills) and the peer adds throughput at all.
Hysteresis: a peer active in the previous plan has its marginal value raised by ``hysteresis`` while
ranking, so two peers of near-equal value do not swap back and forth on measurement noise; the cap
itself is never exceeded for it.

Round size (advice for the manifest): compute long enough that the all-reduce is at most
``1 - target_utilization`` of the round, within ``[min_round_s, max_round_s]`` of compute.

Forecast: time and $ to the token target at the planned rate; the range is "every peer exactly
as reliable as measured, twice over" (pessimistic: q_i^2) to "no failed round, always up" (q_i = 1).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "Budget",
    "PeerFigures",
    "PeerDecision",
    "PlanResult",
    "PlanSettings",
    "allreduce_bytes_per_peer",
    "comm_seconds",
    "effective_cap",
    "make_plan",
    "price_check",
    "swarm_rate",
]


@dataclass(frozen=True)
class Budget:
    """The organizer's budget. None: no limit of that kind."""

    cap_usd_per_hour: float | None = None  # what the active peers may cost per hour, all together
    total_usd: float | None = None  # what the whole run may cost
    deadline: float | None = None  # unix seconds: reach the token target by then (checked, reported)

    def __post_init__(self) -> None:
        for name in ("cap_usd_per_hour", "total_usd"):
            value = getattr(self, name)
            if value is not None and not value >= 0:  # also refuses NaN
                raise ValueError(f"{name} must be >= 0, not {value}")


@dataclass(frozen=True)
class PeerFigures:
    """What the ledger measured for one peer (see ``coordinator.plans.figures_from_rows``)."""

    peer_id: str
    tokens_per_s: float  # tokens per compute second (its raw speed; 0 = not measured yet)
    price_usd_per_hour: float
    paid: bool  # declared a price: the organizer rents it; False = a volunteer (always active)
    reliability: float = 1.0  # completed rounds / rounds joined (confirmed share folded in by the caller)
    uptime: float = 1.0  # share of its time since first seen that it was online
    link_bytes_per_s: float | None = None  # measured all-reduce speed; None = not measured (no comm cost)
    active_before: bool = True  # its state in the previous plan (hysteresis)

    @property
    def quality(self) -> float:
        return min(max(self.reliability, 0.0), 1.0) * min(max(self.uptime, 0.0), 1.0)


@dataclass(frozen=True)
class PlanSettings:
    round_tokens: int  # the manifest's round size (what the swarm runs now)
    payload_bytes: float = 0.0  # pseudo-gradient bytes on the wire per peer (0 = comm free)
    overhead_s: float = 0.0  # per round: matchmaking, evaluation
    hysteresis: float = 0.2  # active peers' marginal value x (1 + this) while ranking
    target_utilization: float = 0.9  # round-size advice: compute share of a round
    min_round_s: float = 10.0
    max_round_s: float = 3600.0
    max_markup: float = 1.5  # price_check: declared above table x this is flagged


@dataclass(frozen=True)
class PeerDecision:
    peer_id: str
    active: bool
    reason: str
    marginal_tokens_per_s: float = 0.0  # what it adds to the swarm's confirmed tokens/s
    tokens_per_usd: float | None = None  # marginal confirmed tokens per $ (paid peers)


@dataclass(frozen=True)
class PlanResult:
    decisions: list[PeerDecision]
    tokens_per_s: float  # planned confirmed tokens/s of the active set
    burn_usd_per_hour: float  # $/h of the active set
    round_tokens: int  # advice
    compute_s: float  # one round of the active set at the manifest's round size
    comm_s: float
    eta_s: float | None  # to the target at the planned rate (None: nothing trains, or no target)
    eta_low_s: float | None
    eta_high_s: float | None
    usd_to_target: float | None
    usd_to_target_low: float | None
    usd_to_target_high: float | None
    cap_usd_per_hour: float | None  # the cap it planned under (after total and deadline)
    notes: list[str] = field(default_factory=list)

    @property
    def standby(self) -> set[str]:
        return {d.peer_id for d in self.decisions if not d.active}


def allreduce_bytes_per_peer(payload_bytes: float, n: int) -> float:
    """Butterfly all-reduce: each peer sends (and receives) 2(N-1)/N x payload. The same formula as
    ``node.policies.timeouts.allreduce_bytes``, which the coordinator may not import."""
    return 0.0 if n <= 1 else 2.0 * (n - 1) / n * payload_bytes


@dataclass(frozen=True)
class _Set:
    """What the round model needs of a set of peers, so that adding one is O(1) (the greedy choice
    tries every candidate against the set chosen so far)."""

    n: int = 0
    raw: float = 0.0  # sum of tokens/s
    useful: float = 0.0  # sum of tokens/s x quality
    slowest: float = math.inf  # slowest measured link, bytes/s

    def plus(self, p: PeerFigures, quality_power: float = 1.0) -> _Set:
        return _Set(self.n + 1, self.raw + p.tokens_per_s, self.useful + p.tokens_per_s * p.quality**quality_power,
                    min(self.slowest, p.link_bytes_per_s or math.inf))

    @classmethod
    def of(cls, peers: Sequence[PeerFigures], quality_power: float = 1.0) -> _Set:
        s = cls()
        for p in peers:
            s = s.plus(p, quality_power)
        return s

    def comm(self, settings: PlanSettings) -> float:
        if self.n <= 1:
            return 0.0  # alone: no all-reduce, no matchmaking
        wire = 0.0
        if settings.payload_bytes > 0 and math.isfinite(self.slowest):
            wire = allreduce_bytes_per_peer(settings.payload_bytes, self.n) / self.slowest
        return settings.overhead_s + wire

    def rate(self, settings: PlanSettings) -> tuple[float, float, float]:
        if self.raw <= 0:
            return 0.0, 0.0, 0.0
        compute, comm = settings.round_tokens / self.raw, self.comm(settings)
        return settings.round_tokens * (self.useful / self.raw) / (compute + comm), compute, comm


def comm_seconds(peers: Sequence[PeerFigures], settings: PlanSettings) -> float:
    """Seconds of one round's all-reduce (and overhead) for ``peers``."""
    return _Set.of(peers).comm(settings)


def swarm_rate(peers: Sequence[PeerFigures], settings: PlanSettings, *, quality_power: float = 1.0) -> tuple[float, float, float]:
    """``(confirmed tokens/s, compute s, comm s)`` of one round of ``peers`` at the manifest's round size."""
    return _Set.of(peers, quality_power).rate(settings)


def effective_cap(budget: Budget, *, spent_usd: float, now: float, eta_s: float | None) -> float | None:
    """The $/h cap to plan under: the cap, lowered so that the rest of the total lasts until the
    deadline (or, without one, until the target at the current pace); 0 once the total is spent."""
    cap = budget.cap_usd_per_hour
    if budget.total_usd is not None:
        left = budget.total_usd - spent_usd
        if left <= 0:
            return 0.0
        horizon = budget.deadline - now if budget.deadline is not None else eta_s
        if horizon is not None and horizon > 0:
            spread = left / (horizon / 3600.0)
            cap = spread if cap is None else min(cap, spread)
    return cap


def price_check(declared: float, table_price: float | None, max_markup: float) -> str:
    """'' when the declared $/h is plausible; a short note when it is above the table's market price."""
    if table_price is not None and table_price > 0 and declared > table_price * max_markup:
        return f"declared ${declared:.2f}/h is over {max_markup:g}x the table's ${table_price:.2f}/h"
    return ""


def _advise_round_tokens(active: Sequence[PeerFigures], settings: PlanSettings) -> int:
    raw = sum(p.tokens_per_s for p in active)
    if raw <= 0:
        return settings.round_tokens
    u = min(max(settings.target_utilization, 0.01), 0.99)
    comm = comm_seconds(active, settings)
    compute = min(max(comm * u / (1.0 - u), settings.min_round_s), settings.max_round_s)
    return max(1, int(raw * compute))


def _to_target(rate: float, remaining: float, burn: float) -> tuple[float | None, float | None]:
    if remaining <= 0:
        return 0.0, 0.0
    if rate <= 0:
        return None, None
    eta = remaining / rate
    return eta, burn * eta / 3600.0


def make_plan(
    peers: Sequence[PeerFigures],
    budget: Budget,
    settings: PlanSettings,
    *,
    remaining_tokens: float = 0.0,
    spent_usd: float = 0.0,
    now: float = 0.0,
) -> PlanResult:
    """Choose active / standby for every peer (see the module docstring)."""
    free = [p for p in peers if not p.paid]
    paid = sorted((p for p in peers if p.paid), key=lambda p: p.peer_id)  # deterministic ties
    everyone_rate = swarm_rate(list(peers), settings)[0]
    everyone_eta = remaining_tokens / everyone_rate if everyone_rate > 0 and remaining_tokens > 0 else None
    cap = effective_cap(budget, spent_usd=spent_usd, now=now, eta_s=everyone_eta)
    notes: list[str] = []
    decisions: dict[str, PeerDecision] = {p.peer_id: PeerDecision(p.peer_id, True, "volunteer") for p in free}
    active = list(free)
    burn = sum(p.price_usd_per_hour for p in free)
    if cap is not None and burn > cap:
        notes.append(f"volunteers' electricity alone (${burn:.2f}/h) is over the cap")
    chosen = _Set.of(active)
    rate = chosen.rate(settings)[0]
    candidates = list(paid)
    while candidates:  # O(paid^2) set updates of O(1) each
        best: tuple[float, PeerFigures, float, float] | None = None
        for p in candidates:
            gain = chosen.plus(p).rate(settings)[0] - rate
            value = gain / max(p.price_usd_per_hour, 1e-9)
            rank = value * (1.0 + settings.hysteresis) if p.active_before and value > 0 else value
            if best is None or rank > best[0]:
                best = (rank, p, gain, value)
        assert best is not None
        _, p, gain, value = best
        candidates.remove(p)
        per_usd = value * 3600.0  # tokens per $
        if gain <= 0:
            decisions[p.peer_id] = PeerDecision(
                p.peer_id, False, "adds no throughput (slows the all-reduce more than it computes)", gain, per_usd
            )
        elif cap is not None and burn + p.price_usd_per_hour > cap + 1e-9:
            decisions[p.peer_id] = PeerDecision(p.peer_id, False, f"over the ${cap:.2f}/h cap", gain, per_usd)
        else:
            decisions[p.peer_id] = PeerDecision(p.peer_id, True, "best tokens per $ within the cap", gain, per_usd)
            active.append(p)
            chosen = chosen.plus(p)
            burn += p.price_usd_per_hour
            rate += gain
    rate, compute, comm = swarm_rate(active, settings)
    low_rate = swarm_rate(active, settings, quality_power=2.0)[0]
    high_rate = swarm_rate(active, settings, quality_power=0.0)[0]
    eta, usd = _to_target(rate, remaining_tokens, burn)
    eta_high, usd_high = _to_target(low_rate, remaining_tokens, burn)  # slowest: the high end of the range
    eta_low, usd_low = _to_target(high_rate, remaining_tokens, burn)
    if budget.deadline is not None and eta is not None and now + eta > budget.deadline:
        notes.append("the token target will not be reached by the deadline at this budget")
    if budget.total_usd is not None and usd is not None and spent_usd + usd > budget.total_usd:
        notes.append("the total budget runs out before the token target")
    return PlanResult(
        decisions=[decisions[p.peer_id] for p in peers],
        tokens_per_s=rate, burn_usd_per_hour=burn, round_tokens=_advise_round_tokens(active, settings),
        compute_s=compute, comm_s=comm, eta_s=eta, eta_low_s=eta_low, eta_high_s=eta_high,
        usd_to_target=usd, usd_to_target_low=usd_low, usd_to_target_high=usd_high, cap_usd_per_hour=cap, notes=notes,
    )
