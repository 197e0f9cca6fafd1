"""The plan service: ledger rows -> :mod:`planner` -> a :class:`protocol.Plan` signed with the run key.

``Planning`` owns the budget in force, the plan nodes obey, and when to re-plan: when the swarm has
moved ``plan_every_rounds`` rounds, ``plan_interval_s`` after the last plan, or when the set of peers
that can train changed. The hub calls :meth:`Planning.maybe_plan` on its reader thread after each
snapshot build; the result is stored by the ledger's writer (``Store.save_plan``).

Several coordinators on one PostgreSQL ledger: each snapshot build first calls :meth:`Planning.follow`
with what the ledger holds (budget changes, the newest plan) and whether this coordinator holds the
planner's lock (``Store.lead``). Only the holder plans and signs; the others serve its newest plan
and apply its standby rule. A new holder picks up at the ledger's newest plan, so seq keeps its order.

Trust rules (hard to undo, so written here):

- A plan is signed with the run key and nothing else; nodes open it with
  ``protocol.open_signed_by(bytes, pinned run key)``, so neither a peer nor a man in the middle can
  put a node on standby.
- A budget change is a :class:`protocol.BudgetChange` signed with the run key, for this run, with a
  ``seq`` above every one applied before (no replay, no reordering), sent within ``max_age_s``.
  Every change is kept verbatim in the ledger and shown as a "budget" event.
- A plan is one envelope (64 KiB cap), so it lists at most :data:`MAX_LISTED_PEERS` peers: every
  standby peer first, then paid active ones, then volunteers. A peer not listed is active (the
  protocol's rule), so leaving volunteers out changes nothing a node does; a thousand-peer swarm gets
  a plan at all (before this, sealing failed and the dashboard stopped updating with it).
- Standby starts to count one round after the plan's round (a node polls the plan; it needs up to a
  round to hear of it): a report of a later round from a peer on standby is stored but neither
  confirmed nor billed (``Store._insert_report``).
"""
from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from protocol import BudgetChange, Hardware, Identity, PeerPlan, Plan, RemoteProtocolError, open_signed_by, seal

from .config import CoordinatorConfig
from .cost import PriceTable, hourly_price
from .plausibility import Limits, price_cap
from .planner import (
    Budget, PeerDecision, PeerFigures, PlanResult, PlanSettings, allreduce_bytes_per_peer, make_plan, price_check,
)
from .states import PeerState, peer_state

__all__ = [
    "MAX_LISTED_PEERS", "BudgetRejected", "Planning", "confirmed_share", "figures_from_rows", "listed_decisions",
    "price_quote", "uptime",
]

logger = logging.getLogger(__name__)

MAX_LISTED_PEERS = 400  # lines of a plan: ~100 bytes each (a peer id, a state, a reason) under the 64 KiB envelope
_PLANNABLE = (PeerState.ONLINE.value, PeerState.JOINING.value, PeerState.STANDBY.value)


class BudgetRejected(Exception):
    """A budget change the coordinator refuses (HTTP 4xx); ``status`` says which."""

    def __init__(self, detail: str, status: int = 422) -> None:
        super().__init__(detail)
        self.status = status


MEASURED_AFTER_REPORTS = 3
"""Before this many reports a peer is planned as a newcomer: as fast as the measured peers, a link that
costs nothing, fully confirmed. Its first round is a joiner's (it includes the state download and
starts mid-round), and a plan made on that one round put a node on standby for good, since a peer on
standby sends no reports that could correct it. After it, the link is a median of recent rounds
(``Store.link_rates``), so that first round never sets it."""


def confirmed_share(row: Mapping[str, Any]) -> float:
    """Share of a peer's tokens that others confirmed: the one accessor the planner reads confirmation
    through, so a stricter trust rule (issue "Trust") changes one line. Before
    ``MEASURED_AFTER_REPORTS`` reports the cross-check has had no chance to catch up: 1."""
    if row["reports"] < MEASURED_AFTER_REPORTS or row["tokens"] <= 0:
        return 1.0
    return min(1.0, float(row["confirmed_tokens"]) / float(row["tokens"]))


def uptime(row: Mapping[str, Any]) -> float:
    """Share of the time since the peer was first seen that it was heard from (``peers.online_s``,
    which leaves out silences over the stale threshold). A peer seen once has had no time to be absent: 1."""
    span = float(row["last_seen"]) - float(row["first_seen"])
    if span <= 0:
        return 1.0
    return min(1.0, max(0.0, float(row.get("online_s", span)) / span))


def _measured(row: Mapping[str, Any]) -> bool:
    return bool(row["reports"] >= MEASURED_AFTER_REPORTS and row["compute_s"] > 0 and row["tokens"] > 0)


def figures_from_rows(
    peers: Sequence[Mapping[str, Any]], prices: PriceTable, previous: Mapping[str, str], links: Mapping[str, float]
) -> tuple[list[PeerFigures], float]:
    """Planner inputs for every peer that can train now (``peers``: ledger rows of the peers that
    are online, joining or on standby; ``links``: ``Store.link_rates`` of them), and the payload bytes
    per all-reduce the measured traffic implies."""
    figures: list[PeerFigures] = []
    rates = [row["tokens"] / row["compute_s"] for row in peers if _measured(row)]
    default_rate = statistics.fmean(rates) if rates else 1.0  # a newcomer is as fast as the others until measured
    n = max(1, len(peers))
    payloads = [row["bytes_sent"] / row["reports"] / max(allreduce_bytes_per_peer(1.0, n), 1e-9)
                for row in peers if row["reports"] > 0 and row["bytes_sent"] > 0]
    for row in peers:
        hardware = Hardware(device=row["device"], count=row["device_count"], memory_gb=row["memory_gb"])
        price = hourly_price(hardware, row["declared_price"], prices)
        reports = row["reports"]
        link = links.get(row["peer_id"]) if _measured(row) else None  # None: its all-reduce costs nothing
        figures.append(PeerFigures(
            peer_id=row["peer_id"],
            tokens_per_s=row["tokens"] / row["compute_s"] if _measured(row) else default_rate,
            price_usd_per_hour=price.usd_per_hour,
            paid=price.source == "declared",
            reliability=((reports - row["failed_rounds"]) / reports if reports else 1.0) * confirmed_share(row),
            uptime=uptime(row),
            link_bytes_per_s=link,
            active_before=previous.get(row["peer_id"], "active") == "active",
        ))
    return figures, statistics.median(payloads) if payloads else 0.0


class Planning:
    """The budget in force and the current plan. ``maybe_plan`` runs on the hub's reader thread,
    the rest on the event loop; the fields it replaces are swapped whole (no torn reads)."""

    def __init__(self, config: CoordinatorConfig, run_key: Identity) -> None:
        self.config, self.run_key = config, run_key
        self.budget: Budget = config.budget
        self.target_tokens = config.target_tokens
        self.budget_seq = 0
        self.plan: Plan | None = None
        self.envelope: bytes | None = None  # the signed plan, as served
        self.result: PlanResult | None = None
        self.notes: list[str] = []
        self.standby_from: dict[str, int] = {}  # peer -> the plan round it was put on standby
        self._planned_peers: frozenset[str] = frozenset()
        self._force = True
        self.leading = True  # this coordinator makes the plans (several on one PostgreSQL ledger: one of them)

    # --- state kept in the ledger -------------------------------------------------------------

    def restore(self, budget_rows: Sequence[Mapping[str, Any]], last_plan: bytes | None) -> None:
        """At start-up: the budget and the plan in force, from the ledger."""
        self.follow(budget_rows, last_plan, self.leading)

    def follow(self, budget_rows: Sequence[Mapping[str, Any]], last_plan: bytes | None, leading: bool) -> None:
        """Take up what the ledger holds that this coordinator has not seen: budget changes past
        ``budget_seq`` (another coordinator on the same server may have taken them) and a plan newer
        than ours (the planning coordinator's). ``leading``: whether this one plans from now on."""
        for row in budget_rows:
            if int(row["seq"]) > self.budget_seq:
                self._apply_fields(row)
                self.budget_seq = int(row["seq"])
        self.leading = leading
        if last_plan is None or last_plan == self.envelope:
            return
        try:
            plan = open_signed_by(last_plan, self.run_key.peer_id).message
        except RemoteProtocolError:
            logger.warning("the ledger's last plan is not signed by this run key; planning afresh")
            return
        assert isinstance(plan, Plan)
        if self.plan is None or plan.seq > self.plan.seq:
            self.plan, self.envelope = plan, last_plan
            self.standby_from = {p.peer_id: self.standby_from.get(p.peer_id, plan.round)
                                 for p in plan.peers if p.state == "standby"}

    def _apply_fields(self, fields: Mapping[str, Any]) -> None:
        def pick(name: str, old: float | None) -> float | None:
            value = fields.get(name)
            if value is None:
                return old
            return None if value < 0 else float(value)

        self.budget = Budget(
            cap_usd_per_hour=pick("cap_usd_per_hour", self.budget.cap_usd_per_hour),
            total_usd=pick("total_usd", self.budget.total_usd),
            deadline=pick("deadline", self.budget.deadline),
        )
        if fields.get("target_tokens") is not None and fields["target_tokens"] > 0:
            self.target_tokens = int(fields["target_tokens"])
        self._force = True

    # --- budget changes ----------------------------------------------------------------------

    def check_budget_change(self, data: bytes, now: float) -> BudgetChange:
        """Verify an operator's signed change (raises :class:`BudgetRejected`); apply with :meth:`apply`."""
        try:
            envelope = open_signed_by(data, self.run_key.peer_id, max_size=self.config.max_body_bytes)
        except RemoteProtocolError as e:
            raise BudgetRejected(f"not a budget change signed with this run's key: {e}", 403) from None
        change = envelope.message
        if not isinstance(change, BudgetChange):
            raise BudgetRejected(f"expected a budget change, got {envelope.kind!r}", 400)
        if change.run_id != self.config.run_id:
            raise BudgetRejected(f"this coordinator serves run {self.config.run_id!r}")
        if change.seq <= self.budget_seq:
            raise BudgetRejected(f"seq {change.seq} is not above the last applied {self.budget_seq} (replayed?)", 409)
        if not (now - self.config.max_age_s <= change.sent_at <= now + self.config.max_future_s):
            raise BudgetRejected("sent_at is outside the freshness window")
        for name in ("cap_usd_per_hour", "total_usd", "deadline"):
            value = getattr(change, name)
            if value is not None and not math.isfinite(value):
                raise BudgetRejected(f"{name} must be a finite number")
        return change

    def apply(self, change: BudgetChange) -> str:
        """Put a checked change in force; returns the event's text."""
        self._apply_fields({k: getattr(change, k) for k in ("cap_usd_per_hour", "total_usd", "deadline", "target_tokens")})
        self.budget_seq = change.seq
        b = self.budget
        return (f"budget #{change.seq}: cap {'none' if b.cap_usd_per_hour is None else f'${b.cap_usd_per_hour:.2f}/h'}, "
                f"total {'none' if b.total_usd is None else f'${b.total_usd:.2f}'}")

    # --- planning ------------------------------------------------------------------------------

    def is_standby(self, peer_id: str, round_: int) -> bool:
        """The standby rule for a report of ``round_`` (see the module docstring)."""
        since = self.standby_from.get(peer_id)
        return since is not None and round_ > since + 1

    def due(self, peer_ids: frozenset[str], round_: int, now: float) -> bool:
        if self._force or self.plan is None or peer_ids != self._planned_peers:
            return True
        return round_ - self.plan.round >= self.config.plan_every_rounds or now - self.plan.made_at >= self.config.plan_interval_s

    def maybe_plan(
        self, snapshot: Mapping[str, Any], ledger_rows: Sequence[Mapping[str, Any]], now: float,
        link_rates: Callable[[Iterable[str]], Mapping[str, float]],
    ) -> tuple[Plan, bytes, list[tuple[str, str, str]]] | None:
        """A new signed plan when one is due, else None. ``snapshot``: the one just built; ``link_rates``:
        ``Store.link_rates``, asked only when a plan is due. Also returns (peer, new state, why) for every
        peer whose state the plan changed (absent from a plan = active)."""
        live = []  # every peer that can train now (the snapshot lists only the first ``peers_listed``)
        for row in ledger_rows:
            state = peer_state(last_seen=row["last_seen"], last_status=row["last_status"], reports=row["reports"], now=now,
                               thresholds=self.config.thresholds)
            if state.value in _PLANNABLE:
                live.append(row)
        peer_ids = frozenset(row["peer_id"] for row in live)
        round_ = int(snapshot["run"]["round"])
        if not self.leading or not self.due(peer_ids, round_, now):
            return None
        previous = {p.peer_id: p.state for p in self.plan.peers} if self.plan else {}
        figures, payload = figures_from_rows(live, self.config.prices, previous, link_rates(peer_ids))
        settings = PlanSettings(round_tokens=self.config.manifest.round_tokens, payload_bytes=payload,
                                overhead_s=self.config.plan_overhead_s, hysteresis=self.config.plan_hysteresis,
                                max_markup=self.config.max_price_markup)
        swarm = snapshot["swarm"]
        remaining = max(self.target_tokens - swarm["confirmed_tokens"], 0)
        result = make_plan(figures, self.budget, settings, remaining_tokens=remaining, spent_usd=swarm["usd"], now=now)
        notes = list(result.notes)
        for row in live:
            note = price_check(row["declared_price"], _table_price(row, self.config.prices), self.config.max_price_markup)
            if note and row["declared_price"] > 0:
                notes.append(f"{row['public_name'] or row['peer_id'][:12]}: {note}")
        listing = listed_decisions(result.decisions)
        if sum(not d.active for d in listing) < sum(not d.active for d in result.decisions):
            notes.append(f"more standby peers than a plan can list ({MAX_LISTED_PEERS}); the rest train on")
        plan = Plan(
            run_id=self.config.run_id, seq=(self.plan.seq + 1) if self.plan else 1, made_at=now, round=round_,
            peers=[PeerPlan(d.peer_id, "active" if d.active else "standby", d.reason) for d in listing],
            cap_usd_per_hour=result.cap_usd_per_hour, total_usd=self.budget.total_usd,
            burn_usd_per_hour=result.burn_usd_per_hour, tokens_per_s=result.tokens_per_s, round_tokens=result.round_tokens,
            eta_s=result.eta_s, eta_low_s=result.eta_low_s, eta_high_s=result.eta_high_s, usd_to_target=result.usd_to_target,
            usd_to_target_low=result.usd_to_target_low, usd_to_target_high=result.usd_to_target_high,
        )
        envelope = seal(plan, self.run_key)
        standby_from = {p.peer_id: self.standby_from.get(p.peer_id, round_) for p in plan.peers if p.state == "standby"}
        self.plan, self.envelope, self.result, self.notes = plan, envelope, result, notes
        self.standby_from, self._planned_peers, self._force = standby_from, peer_ids, False
        changes = [(p.peer_id, p.state, p.reason) for p in plan.peers if previous.get(p.peer_id, "active") != p.state]
        return plan, envelope, changes

    def view(self) -> dict[str, Any]:
        """The plan's part of the dashboard snapshot."""
        b, plan = self.budget, self.plan
        out: dict[str, Any] = {
            "budget": {"cap_usd_per_hour": b.cap_usd_per_hour, "total_usd": b.total_usd, "deadline": b.deadline,
                       "target_tokens": self.target_tokens, "seq": self.budget_seq},
            "seq": None, "made_at": None, "round": None, "notes": self.notes, "run_key": self.run_key.peer_id,
            "made_here": self.leading,  # this coordinator plans (else another one on the same ledger does)
        }
        if plan is not None:
            out.update({k: getattr(plan, k) for k in (
                "seq", "made_at", "round", "cap_usd_per_hour", "burn_usd_per_hour", "tokens_per_s", "round_tokens",
                "eta_s", "eta_low_s", "eta_high_s", "usd_to_target", "usd_to_target_low", "usd_to_target_high")})
            out["standby"] = sum(1 for p in plan.peers if p.state == "standby")
        return out

    def peer_states(self) -> dict[str, tuple[str, str]]:
        return {p.peer_id: (p.state, p.reason) for p in self.plan.peers} if self.plan else {}


def listed_decisions(decisions: Sequence[PeerDecision], limit: int = MAX_LISTED_PEERS) -> list[PeerDecision]:
    """The decisions a plan lists: standby first, then paid active peers, then volunteers (active whether
    listed or not), each group in the planner's order; at most ``limit``."""
    return sorted(decisions, key=lambda d: (d.active, d.reason == "volunteer"))[:limit]


def _table_price(row: Mapping[str, Any], prices: PriceTable) -> float | None:
    hardware = Hardware(device=row["device"], count=row["device_count"], memory_gb=row["memory_gb"])
    return _market(hardware, prices)


def _market(hardware: Hardware, prices: PriceTable) -> float | None:
    """The price table's market $/h for this hardware, if the table has one."""
    price = hourly_price(hardware, 0.0, prices)
    return price.usd_per_hour if price.source == "table" else None


def price_quote(hardware: Hardware, declared: float, prices: PriceTable, limits: Limits, max_markup: float) -> dict[str, Any]:
    """What this coordinator would bill a node of ``hardware`` declaring ``declared`` $/h, before it joins
    (``GET /api/v1/price``, which ``swarm join --check`` shows): the price and the rule that set it, the
    table's market price, the most it accepts (a report above it is refused) and the planner's note."""
    price = hourly_price(hardware, declared, prices)
    cap = price_cap(hardware, prices, limits)
    market = _market(hardware, prices)
    return {"usd_per_hour": price.usd_per_hour, "source": price.source, "table_usd_per_hour": market,
            "max_usd_per_hour": cap, "accepted": declared <= cap,
            "note": price_check(declared, market, max_markup) if declared > 0 else ""}
