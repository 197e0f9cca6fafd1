"""Validators' verdicts (``SpotCheckVerdict``, kind "verdict"): round trip, a new kind that leaves
every v1 golden byte alone, and the message's own invariants refused on both sides."""
from __future__ import annotations

from dataclasses import replace

import pytest

from protocol import DecodeError, LocalProtocolError, SignatureError, SpotCheckVerdict, open_envelope, seal, unpack
from protocol.messages import MESSAGE_TYPES


def _verdict(validator: str, subject: str, **fields) -> SpotCheckVerdict:
    base = dict(run_id="r", peer_id=validator, seq=3, sent_at=1_700_000_000.0, round=7, subject=subject,
                passed=False, reason="harmful", tokens=8192, windows=64, gain=-37.5, random_gain=-38.0, z=0.4,
                update_sha256="ab" * 32)
    base.update(fields)
    return SpotCheckVerdict(**base)


def test_verdict_round_trip(alice, bob):
    verdict = _verdict(alice.peer_id, bob.peer_id)
    env = open_envelope(seal(verdict, alice))
    assert (env.kind, env.sender, env.message) == ("verdict", alice.peer_id, verdict)
    assert MESSAGE_TYPES["verdict"] is SpotCheckVerdict


def test_passing_verdict_round_trips_without_its_defaults(alice, bob):
    verdict = SpotCheckVerdict(run_id="r", peer_id=alice.peer_id, seq=0, sent_at=0.0, round=0, subject=bob.peer_id,
                               passed=True, reason="ok", tokens=1, windows=1, gain=0.1, random_gain=0.05)
    assert open_envelope(seal(verdict, alice)).message == verdict


def test_a_verdict_cannot_be_signed_for_another_validator(alice, bob):
    with pytest.raises(LocalProtocolError):
        seal(_verdict(bob.peer_id, alice.peer_id), alice)


def test_forged_verdict_fails_its_signature(alice, bob):
    body = bytearray(seal(_verdict(alice.peer_id, bob.peer_id), alice))
    body[-1] ^= 1
    with pytest.raises(SignatureError):
        open_envelope(bytes(body))


@pytest.mark.parametrize("changes", [
    dict(reason="fine"),  # not a reason the check gives
    dict(passed=True, reason="harmful"),  # passes only with "ok"
    dict(passed=False, reason="ok"),
])
def test_inconsistent_verdicts_are_refused_on_both_sides(alice, bob, sign_raw, changes):
    with pytest.raises(ValueError):
        _verdict(alice.peer_id, bob.peer_id, **changes)
    wire = _verdict(alice.peer_id, bob.peer_id).to_wire() | changes
    with pytest.raises(DecodeError):
        open_envelope(sign_raw(alice, wire, kind="verdict"))


def test_non_finite_gain_never_reaches_the_wire(alice, bob, sign_raw):
    wire = _verdict(alice.peer_id, bob.peer_id).to_wire() | {"gain": float("nan")}
    with pytest.raises(LocalProtocolError):  # the canonical codec refuses NaN (and so does its decoder)
        sign_raw(alice, wire, kind="verdict")


def test_payload_names_its_fields(alice, bob):
    _, kind, _, payload, _ = unpack(seal(replace(_verdict(alice.peer_id, bob.peer_id), z=0.0), alice))
    fields = unpack(payload)
    assert kind == "verdict" and fields["subject"] == bob.peer_id and fields["z"] == 0.0
