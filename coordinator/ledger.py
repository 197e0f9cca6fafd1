"""Acceptance rules for reports, as pure functions: every one takes ``now``, none does I/O.

The order a report goes through (``ingest.py`` drives it, ``store.py`` does the SQL)::

    body size cap -> open_envelope (signature by the claimed peer id, then schema)
      -> per-peer rate (TokenBucket) -> run id -> freshness -> replay by (peer, seq)
      -> durable commit -> 200

Every failure is one :class:`Reject` with a short ``reason`` (counted by reason in
``/api/v1/state`` and ``/metrics``) and the HTTP status it maps to. Reporters treat any 4xx but
429 as final, so a status here is a promise: 4xx means "never send these bytes again".

Cross-check rule (:func:`cross_check` is the reference; ``store.py`` applies it incrementally):
a report's tokens are *confirmed* when at least one *other* member of its averaging group
reported seeing the same peer claim exactly that many tokens in that round. A node alone in its
group, or whose group saw another number, stays unconfirmed: shown and totalled, not trusted.
"""
from __future__ import annotations

import unicodedata
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from protocol import ContributionReport, Heartbeat, RemoteProtocolError

__all__ = [
    "REASON_STATUS",
    "RateLimiter",
    "Reject",
    "TokenBucket",
    "check_message",
    "check_times",
    "classify_replay",
    "cross_check",
    "display_name",
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
    message: ContributionReport | Heartbeat,
    *,
    run_id: str,
    now: float,
    max_age_s: float,
    max_future_s: float,
) -> None:
    """Run id and freshness. ``sent_at`` may lag ``now`` by ``max_age_s`` (reports re-sent
    from an outbox after an outage) and lead it by ``max_future_s`` (clock skew)."""
    if message.run_id != run_id:
        raise Reject("wrong_run", f"this coordinator serves run {run_id!r}", message.peer_id)
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


def cross_check(reports: Iterable[ContributionReport]) -> dict[tuple[str, int], bool]:
    """Reference rule: for each ok report ``(peer_id, seq)``, whether another member confirms it."""
    reports = [r for r in reports if r.ok]
    seen: set[tuple[int, str, int]] = set()  # (round, member, tokens) claimed by someone else
    for r in reports:
        for claim in r.group:
            if claim.peer_id != r.peer_id:
                seen.add((r.round, claim.peer_id, claim.tokens))
    return {(r.peer_id, r.seq): (r.round, r.peer_id, r.tokens) in seen for r in reports}


_NAME_MAX = 32


def display_name(name: str, peer_id: str) -> str:
    """A public name fit for display: NFKC-normalised, control and format characters removed,
    at most 32 characters; the short peer id when empty. Still untrusted text: the dashboard
    renders it with ``textContent`` only."""
    name = unicodedata.normalize("NFKC", name)
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip()
    return name[:_NAME_MAX] if name else peer_id[-8:]
