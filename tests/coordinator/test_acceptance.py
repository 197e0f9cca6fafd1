"""coordinator.ledger: the pure acceptance rules (freshness, replay, rate, reasons, names)."""
from __future__ import annotations

import pytest
from coordinator_testing import RUN_ID, identity

from coordinator.ledger import (
    REASON_STATUS,
    RateLimiter,
    Reject,
    TokenBucket,
    check_message,
    classify_replay,
    display_name,
    reject_from_protocol,
)
from protocol import DecodeError, Heartbeat, OversizedError, SignatureError, UnknownMessageKind

NOW = 1_700_000_000.0


def _hb(**kw) -> Heartbeat:
    fields = dict(run_id=RUN_ID, peer_id=identity(1).peer_id, seq=0, sent_at=NOW, round=0, status="training")
    fields.update(kw)
    return Heartbeat(**fields)


@pytest.mark.parametrize(
    ("sent_at", "reason"),
    [(NOW, None), (NOW - 100.0, None), (NOW - 100.1, "stale"), (NOW + 10.0, None), (NOW + 10.1, "from_future")],
)
def test_freshness_window(sent_at, reason):
    def check() -> None:
        check_message(_hb(sent_at=sent_at), run_id=RUN_ID, now=NOW, max_age_s=100.0, max_future_s=10.0)

    if reason is None:
        check()
    else:
        with pytest.raises(Reject) as info:
            check()
        assert info.value.reason == reason and info.value.status == 422


def test_wrong_run_is_refused_with_the_peer_named():
    with pytest.raises(Reject) as info:
        check_message(_hb(run_id="other"), run_id=RUN_ID, now=NOW, max_age_s=1.0, max_future_s=1.0)
    assert info.value.reason == "wrong_run" and info.value.peer_id == identity(1).peer_id


def test_replay_classification():
    assert classify_replay(None, b"a") == "new"
    assert classify_replay(b"a", b"a") == "duplicate"
    with pytest.raises(Reject) as info:
        classify_replay(b"a", b"b")
    assert info.value.status == 409


def test_token_bucket_refills_at_its_rate():
    bucket = TokenBucket(rate=2.0, burst=2.0, tokens=2.0, updated=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [True, True, False]
    assert bucket.take(0.5) and not bucket.take(0.5)
    assert bucket.take(10.0) and bucket.take(10.0) and not bucket.take(10.0)  # never more than the burst
    assert not bucket.take(9.0)  # time going backwards adds nothing


def test_rate_limiter_keeps_at_most_max_keys():
    limiter = RateLimiter(rate=0.0001, burst=1.0, max_keys=2)
    assert limiter.allow("a", 0.0) and not limiter.allow("a", 0.0)
    assert limiter.allow("b", 0.0) and limiter.allow("c", 0.0)  # "a" is evicted, least recently used
    assert limiter.allow("a", 0.0)


@pytest.mark.parametrize(
    ("error", "reason", "status"),
    [
        (DecodeError("x"), "malformed", 400),
        (OversizedError("x"), "oversized", 413),
        (SignatureError("x"), "bad_signature", 403),
        (UnknownMessageKind("x"), "unknown_kind", 400),
    ],
)
def test_protocol_errors_map_to_reasons(error, reason, status):
    rejection = reject_from_protocol(error)
    assert (rejection.reason, rejection.status) == (reason, status)


def test_every_reason_is_a_4xx_and_unknown_reasons_are_a_bug():
    assert all(400 <= status < 500 for status in REASON_STATUS.values())
    with pytest.raises(ValueError):
        Reject("made_up")


def test_display_name_falls_back_to_the_peer_id():
    assert display_name("  \u200b\u0007 ", "12D3KooWabcdefgh") == "abcdefgh"
    assert display_name("bob", "12D3KooWabcdefgh") == "bob"
