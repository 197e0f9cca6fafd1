"""Validators' spot-check verdicts at the coordinator: accepted only from the peer ids the operator
listed, a failed verdict is a flag on (subject, round), a quorum of distinct validators takes that
round's credit away, and the dashboard's flag column shows them. Hostile verdicts (forged, from a
non-validator, absurd numbers) are refused and counted by reason."""
from __future__ import annotations

from typing import Any

import pytest
from coordinator_testing import RUN_ID, identity, post, state

from coordinator.app import create_app
from coordinator.config import CoordinatorConfig
from protocol import GroupClaim, SpotCheckVerdict, seal

V1, V2, STRANGER = identity(20), identity(21), identity(22)
GROUP = [1, 2, 3]
BLOCK = 128  # the default manifest's block size


@pytest.fixture
async def vclient(aiohttp_client: Any, config: CoordinatorConfig, clock) -> Any:
    return await aiohttp_client(create_app(config.replace(validators=(V1.peer_id, V2.peer_id)), clock=clock))


def _verdict(clock, validator, subject, seq: int, round_: int = 1, *, passed: bool = False, **fields: Any) -> SpotCheckVerdict:
    base: dict[str, Any] = dict(
        run_id=RUN_ID, peer_id=validator.peer_id, seq=seq, sent_at=clock.now, round=round_, subject=subject.peer_id,
        passed=passed, reason="ok" if passed else "harmful", tokens=8192, windows=64,
        gain=0.07 if passed else -38.0, random_gain=0.02 if passed else -39.0, z=6.8 if passed else 1.0,
    )
    base.update(fields)
    return SpotCheckVerdict(**base)


async def _round_one(client, make_report) -> None:
    """Peers 1-3 claim 8192 tokens each in round 1 and confirm each other."""
    claims = [GroupClaim(identity(j).peer_id, 8192) for j in GROUP]
    for i in GROUP:
        status, _ = await post(client, seal(make_report(identity(i), 0, round=1, tokens=8192, group=claims), identity(i)))
        assert status == 200


def _row(snap: dict[str, Any], who) -> dict[str, Any]:
    return next(p for p in snap["peers"] if p["peer_id"] == who.peer_id)


async def test_two_validators_failing_a_round_take_its_credit_and_show_the_flag(vclient, clock, make_report):
    await _round_one(vclient, make_report)
    cheat = identity(3)
    assert _row(await state(vclient), cheat)["confirmed_tokens"] == 8192

    status, body = await post(vclient, seal(_verdict(clock, V1, cheat, 1), V1))
    assert (status, body["status"]) == (200, "accepted")
    row = _row(await state(vclient), cheat)
    assert row["flags"] == {"spot_check": 1} and row["confirmed_tokens"] == 8192  # one validator could be wrong

    status, _ = await post(vclient, seal(_verdict(clock, V2, cheat, 1, reason="no_gain", gain=0.0, random_gain=0.0), V2))
    assert status == 200
    snap = await state(vclient)
    row = _row(snap, cheat)
    assert row["flags"] == {"spot_check": 2} and row["confirmed_tokens"] == 0 and row["unconfirmed_tokens"] == 8192
    assert _row(snap, identity(1))["confirmed_tokens"] == 8192 and _row(snap, identity(1))["flags"] == {}


async def test_a_passing_verdict_flags_nobody_and_a_resent_one_is_a_duplicate(vclient, clock, make_report):
    await _round_one(vclient, make_report)
    body = seal(_verdict(clock, V1, identity(2), 1, passed=True), V1)
    assert (await post(vclient, body))[1]["status"] == "accepted"
    assert (await post(vclient, body))[1]["status"] == "duplicate"
    row = _row(await state(vclient), identity(2))
    assert row["flags"] == {} and row["confirmed_tokens"] == 8192


async def test_a_verdict_before_the_claim_still_counts(vclient, clock, make_report):
    """Flags may arrive first (a validator's check can beat the peer's outbox): the claim is stored flagged."""
    cheat = identity(3)
    for v, seq in ((V1, 1), (V2, 1)):
        assert (await post(vclient, seal(_verdict(clock, v, cheat, seq), v)))[0] == 200
    await _round_one(vclient, make_report)
    assert _row(await state(vclient), cheat)["confirmed_tokens"] == 0


async def test_hostile_verdicts_are_refused_and_counted(vclient, clock, make_report):
    await _round_one(vclient, make_report)
    honest = identity(1)
    cases = [
        (STRANGER, _verdict(clock, STRANGER, honest, 1), 403, "not_validator"),  # a stranger's key flags nobody
        (identity(2), _verdict(clock, identity(2), honest, 1), 403, "not_validator"),  # nor does a mere member
        (V1, _verdict(clock, V1, V1, 2), 422, "implausible"),  # judging itself
        (V1, _verdict(clock, V1, honest, 3, windows=10_000), 422, "implausible"),  # more windows than 8192 tokens hold
        (V1, _verdict(clock, V1, honest, 4, gain=1e9), 422, "implausible"),  # a loss cannot drop by 1e9 nats
        (V1, _verdict(clock, V1, honest, 5, gain=-1e30), 422, "implausible"),
        (V1, _verdict(clock, V1, honest, 6, z=1e300), 422, "implausible"),
        (V1, _verdict(clock, V1, honest, 7, update_sha256="zz"), 422, "implausible"),
        (V1, _verdict(clock, V1, honest, 8, round=10**9), 422, "round_out_of_window"),
        (V1, _verdict(clock, V1, honest, 9, run_id="other"), 422, "wrong_run"),
        (V1, _verdict(clock, V1, honest, 10, sent_at=clock.now - 10**6), 422, "stale"),
    ]
    for signer, verdict, want_status, want_reason in cases:
        status, body = await post(vclient, seal(verdict, signer))
        assert (status, body["error"]) == (want_status, want_reason), verdict
    subject_not_a_peer = _verdict(clock, V1, honest, 11).to_wire() | {"subject": "nobody"}
    status, body = await post(vclient, seal(SpotCheckVerdict(**subject_not_a_peer), V1))
    assert (status, body["error"]) == (422, "implausible")
    forged = bytearray(seal(_verdict(clock, V1, honest, 12), V1))
    forged[-1] ^= 1
    status, body = await post(vclient, bytes(forged))
    assert (status, body["error"]) == (403, "bad_signature")

    snap = await state(vclient)
    assert snap["rejections"]["not_validator"] == 2 and snap["rejections"]["implausible"] == 7
    assert snap["rejections"]["bad_signature"] == 1
    assert _row(snap, honest)["flags"] == {} and _row(snap, honest)["confirmed_tokens"] == 8192


async def test_without_listed_validators_every_verdict_is_refused(client, clock, make_report):
    status, body = await post(client, seal(_verdict(clock, V1, identity(1), 1), V1))
    assert (status, body["error"]) == (403, "not_validator")


def test_validator_ids_are_checked_and_read_from_the_environment(config, monkeypatch):
    with pytest.raises(ValueError, match="not a peer id"):
        config.replace(validators=("12D3KooWnot-a-key",))
    monkeypatch.setenv("SWARM_COORDINATOR_VALIDATORS", f"{V1.peer_id}, {V2.peer_id}")
    assert CoordinatorConfig(db_path=config.db_path).validators == (V1.peer_id, V2.peer_id)


def test_validator_flag_repeats(tmp_path):
    from coordinator.cli import build_parser, config_from_args

    args = build_parser().parse_args(["--db", str(tmp_path / "l.db"), "--validator", V1.peer_id, "--validator", V2.peer_id,
                                      "--flag-quorum", "1"])
    config = config_from_args(args)
    assert config.validators == (V1.peer_id, V2.peer_id) and config.flag_quorum == 1


async def test_with_quorum_one_a_single_validator_takes_the_credit(aiohttp_client, config, clock, make_report):
    client = await aiohttp_client(create_app(config.replace(validators=(V1.peer_id,), flag_quorum=1), clock=clock))
    await _round_one(client, make_report)
    assert (await post(client, seal(_verdict(clock, V1, identity(3), 1), V1)))[0] == 200
    snap = await state(client)
    assert _row(snap, identity(3))["confirmed_tokens"] == 0 and _row(snap, identity(2))["confirmed_tokens"] == 8192
    status, body = await post(client, seal(_verdict(clock, V2, identity(2), 1), V2))  # V2 is not listed here
    assert (status, body["error"]) == (403, "not_validator")
