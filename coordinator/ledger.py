"""Acceptance rules for reports, as pure functions: every one takes ``now``, none does I/O.

The order a report goes through (``ingest.py`` drives it, ``store.py`` does the SQL)::

    per-IP rate (TokenBucket) -> body size cap -> open_envelope (signature by the claimed peer
      id, then schema) -> per-peer rate -> run id, manifest hash -> freshness
      -> numbers (plausibility.py) -> [writer thread, store.py] replay by (peer, seq)
      -> seq order, seq window -> round window -> one claim per (peer, round) -> durable commit -> 200

Every failure is one :class:`Reject` with a short ``reason`` (counted by reason in
``/api/v1/state`` and ``/metrics``) and the HTTP status it maps to. Reporters treat any 4xx but
429 as final, so a status here is a promise: 4xx means "never send these bytes again".

Confirmation rule (:func:`cross_check` is the reference; ``store.py`` applies it incrementally):
a claim is peer P's ok report for round r (at most one per (P, r)). A member M *confirms* it
when M's own ok report for round r lists P with exactly P's claimed tokens, and P's report
lists M in its group: the all-reduce included M as both of them saw it. With G the size of P's
group as P reported it, the claim is confirmed when at least ``k = min(2, G - 1)`` distinct
members confirm it; a node alone in its group (G = 1) is never confirmed. Unconfirmed tokens
are shown and totalled, never credited or priced. What this does not stop (a group made
only of one attacker's keys) is written down in docs/coordinator.md.
"""
from __future__ import annotations

import unicodedata
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from protocol import ContributionReport, Heartbeat, OutlierReport, RemoteProtocolError, SpotCheckVerdict

__all__ = [
    "REASON_STATUS",
    "RateLimiter",
    "Reject",
    "TokenBucket",
    "check_message",
    "check_seq_window",
    "check_times",
    "classify_replay",
    "clean_text",
    "cross_check",
    "device_label",
    "display_name",
    "group_size",
    "needed_confirmations",
    "reject_from_protocol",
]

REASON_STATUS: dict[str, int] = {
    "malformed": 400,
    "unknown_kind": 400,
    "incompatible_version": 400,
    "bad_content_type": 415,
    "oversized": 413,
    "bad_signature": 403,
    "wrong_run": 422,
    "stale": 422,
    "from_future": 422,
    "implausible": 422,
    "replay_conflict": 409,
    "rate_limited": 429,
    # issue 11: hostile input (plausibility.py bounds numbers; store.py checks order and claims)
    "out_of_range": 422,  # an int outside 0..2**63-1
    "implausible_tokens": 422,  # more tokens than the hardware can process in the reported time
    "implausible_price": 422,  # a declared price over the cap
    "round_out_of_window": 422,  # a round too far ahead of (or behind) the run's current round
    "round_claimed": 409,  # this peer already claimed tokens for this round
    "seq_rollback": 409,  # seq lower than one this peer already used
    "wrong_manifest": 422,  # the report names another run manifest than this coordinator's
    "ip_rate_limited": 429,  # per-IP token bucket, before any signature is checked
    "too_many_streams": 429,  # per-IP (or global) limit on server-sent-event streams
    "not_validator": 403,  # a spot-check verdict from a peer the operator did not list as a validator
    # issue 23: bounds on the ledger's and the dashboard's inputs
    "seq_out_of_window": 422,  # seq too far past this peer's last one (check_seq_window)
    "streams_full": 429,  # every live-stream slot is taken (the global cap): poll, retry later
}


class Reject(Exception):
    """A report the coordinator refuses; ``reason`` is a key of :data:`REASON_STATUS`."""

    def __init__(self, reason: str, detail: str = "", peer_id: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        if reason not in REASON_STATUS:
            raise ValueError(f"unknown rejection reason {reason!r}")
        self.reason = reason
        self.detail = detail
        self.peer_id = peer_id

    @property
    def status(self) -> int:
        return REASON_STATUS[self.reason]


def reject_from_protocol(error: RemoteProtocolError) -> Reject:
    """Map a protocol error onto a rejection; unknown reasons count as malformed."""
    reason = error.reason if error.reason in REASON_STATUS else "malformed"
    return Reject(reason, str(error)[:200])


def check_message(
    message: ContributionReport | Heartbeat | OutlierReport | SpotCheckVerdict,
    *,
    run_id: str,
    now: float,
    max_age_s: float,
    max_future_s: float,
    manifest_hash: str = "",
) -> None:
    """Run id, manifest hash and freshness. ``sent_at`` may lag ``now`` by ``max_age_s`` (reports
    re-sent from an outbox after an outage) and lead it by ``max_future_s`` (clock skew). A message
    without a manifest hash (nodes older than the field) is checked by run id alone."""
    if message.run_id != run_id:
        raise Reject("wrong_run", f"this coordinator serves run {run_id!r}", message.peer_id)
    claimed = getattr(message, "manifest_hash", "")  # outlier reports and verdicts carry none
    if manifest_hash and claimed and claimed != manifest_hash:
        raise Reject("wrong_manifest", f"this run's manifest is {manifest_hash[:12]}...", message.peer_id)
    if message.sent_at < now - max_age_s:
        raise Reject("stale", f"sent {now - message.sent_at:.0f} s ago, older than {max_age_s:.0f} s", message.peer_id)
    if message.sent_at > now + max_future_s:
        raise Reject("from_future", f"sent_at is {message.sent_at - now:.0f} s ahead of our clock", message.peer_id)
    if isinstance(message, ContributionReport):
        check_times(message)


def check_times(r: ContributionReport) -> None:
    """Durations a round can have: none negative, compute and waiting inside the round's wall time."""
    if min(r.compute_s, r.wall_s, r.blocked_s or 0.0) < 0:
        raise Reject("implausible", "negative duration", r.peer_id)
    slack = 1e-3 + 1e-6 * r.wall_s  # rounding in the reporter
    if r.blocked_s is not None and r.blocked_s > r.wall_s + slack:
        raise Reject("implausible", f"blocked_s {r.blocked_s:.3f} exceeds wall_s {r.wall_s:.3f}", r.peer_id)


def check_seq_window(
    seq: int, last_seq: int | None, last_seen: float | None, now: float, *, window: int, per_s: float, peer_id: str = ""
) -> None:
    """A message's seq may lead its peer's last accepted one by at most ``window`` plus
    ``per_s`` for every second since the peer was last heard from: ``seq <= last_seq + window +
    per_s * (now - last_seen)``. A peer's first message (``last_seq`` None) may carry at most
    ``window``. Order itself (``seq_rollback``) is checked apart; this bounds only the jump.

    Why: without it one signed message with seq 2**63 - 1 is accepted and the peer's ledger row can
    take nothing after it, and any far-future seq spends the peer's whole seq space at once. Why
    these numbers: a node numbers every message it signs 1, 2, 3, ... (``node.daemon.SeqCounter``,
    persistent), and its outbox re-sends them in order, so an honest jump is the messages the
    coordinator never took in between: outlier reports and verdicts (they do not move
    ``last_seq``) and, after a long outage, messages refused as ``stale`` (older than
    ``max_age_s``). Those were all signed after ``last_seen``, at the node's own pace, which is
    below the coordinator's sustained per-peer rate (``rate_per_s``, passed as ``per_s``): a node
    signing faster would never empty its outbox. So ``per_s`` times the silence covers any outage,
    however long, and ``window`` (2**20 by default, over a million messages, a year of a 124M
    run's heartbeats and reports) covers what a node signs while it is heard from. A first message
    has no ``last_seen``: a node first seen by this ledger after more than ``window`` messages (a
    coordinator started late for an old swarm) needs a larger ``--seq-window``, like
    ``--start-round``. An attacker's seq now gains at most ``per_s`` a second: 2**62 is 7e10 years
    away at 2/s."""
    if last_seq is None:
        if seq > window:
            raise Reject("seq_out_of_window", f"a peer's first seq must be at most {window}, not {seq}", peer_id)
        return
    silence = max(now - (last_seen if last_seen is not None else now), 0.0)
    limit = last_seq + window + int(per_s * silence)
    if seq > limit:
        raise Reject(
            "seq_out_of_window",
            f"seq {seq} is too far past this peer's last seq {last_seq} (at most {limit} now)", peer_id,
        )


def classify_replay(stored_digest: bytes | None, digest: bytes) -> str:
    """``"new"``, ``"duplicate"`` (same bytes again: acknowledge, store nothing) or raise
    ``replay_conflict`` (same (peer, seq), different content: never overwrite the ledger)."""
    if stored_digest is None:
        return "new"
    if stored_digest == digest:
        return "duplicate"
    raise Reject("replay_conflict", "this sequence number was already used for different content")


@dataclass
class TokenBucket:
    """``rate`` requests per second on average, bursts of up to ``burst``."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + max(now - self.updated, 0.0) * self.rate)
        self.updated = max(now, self.updated)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class RateLimiter:
    """One :class:`TokenBucket` per key, at most ``max_keys`` buckets (least recently used go:
    a forgotten key starts again with a full bucket, which only errs on the side of serving)."""

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def allow(self, key: str, now: float) -> bool:
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, self.burst, now)
        self._buckets[key] = bucket
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return bucket.take(now)


def group_size(r: ContributionReport) -> int:
    """G: the members of ``r``'s all-reduce as ``r``'s sender saw them, itself included."""
    return len({g.peer_id for g in r.group} | {r.peer_id})


def needed_confirmations(group_size: int) -> int | None:
    """k = min(2, G - 1); None when nobody can confirm (G = 1)."""
    return None if group_size < 2 else min(2, group_size - 1)


def cross_check(reports: Iterable[ContributionReport]) -> dict[tuple[str, int], bool]:
    """Reference rule: for each ok report ``(peer_id, seq)``, whether it is confirmed.

    Expects at most one ok report per (peer, round), as the ledger stores them."""
    claims = {(r.round, r.peer_id): r for r in reports if r.ok}
    result = {}
    for (rnd, peer), r in claims.items():
        members = {g.peer_id for g in r.group} - {peer}
        confirmers = {
            m for m in members
            if (rnd, m) in claims and any(g.peer_id == peer and g.tokens == r.tokens for g in claims[(rnd, m)].group)
        }
        k = needed_confirmations(group_size(r))
        result[(peer, r.seq)] = k is not None and len(confirmers) >= k
    return result


_NAME_MAX = 32
_DEVICE_MAX = 64


def clean_text(text: str, limit: int) -> str:
    """Peer-supplied text fit for display: NFKC-normalised, control and format characters (bidi
    overrides included) removed, stripped, at most ``limit`` characters. Still untrusted: the
    dashboard renders it with ``textContent`` only."""
    text = unicodedata.normalize("NFKC", text)
    return "".join(c for c in text if unicodedata.category(c)[0] != "C").strip()[:limit]


def display_name(name: str, peer_id: str) -> str:
    """A public name: :func:`clean_text`, at most 32 characters; the short peer id when empty."""
    return clean_text(name, _NAME_MAX) or peer_id[-8:]


def device_label(device: str) -> str:
    """A device string, cleaned like a name: at most 64 characters; ``"unknown"`` when empty."""
    return clean_text(device, _DEVICE_MAX) or "unknown"
