"""Hostile and broken input: each case is refused with its own reason (or escaped, for names),
counted in /api/v1/state and /metrics, and the service keeps serving."""
from __future__ import annotations

import pytest
from coordinator_testing import identity, post, rejected_metric, signed_raw, state

from coordinator.app import create_app
from coordinator.routes import STATIC_DIR
from protocol import PROTOCOL_VERSION, pack, seal, unpack


def _forge(envelope: bytes) -> bytes:
    """Flip one bit of the signature; the envelope stays canonical MessagePack."""
    version, kind, sender, payload, signature = unpack(envelope)
    return pack([version, kind, sender, payload, bytes([signature[0] ^ 1]) + signature[1:]])


def _with_sender(envelope: bytes, sender: str) -> bytes:
    version, kind, _, payload, signature = unpack(envelope)
    return pack([version, kind, sender, payload, signature])




async def test_every_kind_of_bad_input_is_refused_counted_and_survived(client, make_report, clock):
    alice, mallory = identity(1), identity(66)
    good = seal(make_report(alice, 0, tokens=10), alice)
    assert (await post(client, good))[0] == 200

    cases: list[tuple[str, bytes, int, str]] = [
        ("forged signature", _forge(seal(make_report(alice, 1), alice)), 403, "bad_signature"),
        # the sender field says alice, the signature is mallory's
        ("sender swapped", _with_sender(seal(make_report(mallory, 1), mallory), alice.peer_id), 403, "bad_signature"),
        # a valid signature by mallory on a report that claims to be alice's
        ("claims another peer's id", signed_raw(mallory, make_report(alice, 2).to_wire()), 403, "bad_signature"),
        ("replayed seq, other content", seal(make_report(alice, 0, tokens=99999), alice), 409, "replay_conflict"),
        ("wrong run id", seal(make_report(alice, 3, run_id="another-run"), alice), 422, "wrong_run"),
        ("stale", seal(make_report(alice, 4, sent_at=clock.now - 7 * 3600), alice), 422, "stale"),
        ("from the future", seal(make_report(alice, 5, sent_at=clock.now + 3600), alice), 422, "from_future"),
        ("waited longer than the round", seal(make_report(alice, 6, wall_s=2.0, blocked_s=5.0), alice), 422, "implausible"),
        ("negative compute time", seal(make_report(alice, 7, compute_s=-1.0), alice), 422, "implausible"),
        ("malformed msgpack", b"\xc1\x00garbage", 400, "malformed"),
        ("truncated envelope", good[:-10], 400, "malformed"),
        ("not an envelope", pack({"hello": "world"}), 400, "malformed"),
        ("unknown kind", pack([PROTOCOL_VERSION, "gossip", alice.peer_id, b"", b""]), 400, "unknown_kind"),
        ("future protocol", pack([PROTOCOL_VERSION + 1, "report", alice.peer_id, b"", b""]), 400, "incompatible_version"),
        ("oversized", b"\x00" * 200_000, 413, "oversized"),
    ]
    for what, body, status, reason in cases:
        got_status, got = await post(client, body)
        assert (got_status, got.get("error")) == (status, reason), what
        assert isinstance(got.get("detail"), str), what

    status, got = await post(client, good, content_type="text/html")
    assert (status, got["error"]) == (415, "bad_content_type")

    # the service still serves, and still accepts good reports
    status, got = await post(client, seal(make_report(alice, 10, tokens=5, samples=1), alice))
    assert (status, got.get("status")) == (200, "accepted"), got
    snap = await state(client)
    assert snap["swarm"]["tokens"] == 15
    expected = {
        "bad_signature": 3, "replay_conflict": 1, "wrong_run": 1, "stale": 1, "from_future": 1, "implausible": 2, "malformed": 3,
        "unknown_kind": 1, "incompatible_version": 1, "oversized": 1, "bad_content_type": 1,
    }
    assert {k: v for k, v in snap["rejections"].items() if v} == expected
    assert snap["rejections_total"] == sum(expected.values())
    assert sum(e["kind"] == "rejected" for e in snap["events"]) == sum(expected.values())
    text = await (await client.get("/metrics")).text()
    for reason, count in expected.items():
        assert rejected_metric(text, reason) == count, reason
    assert rejected_metric(text, "rate_limited") == 0


async def test_chunked_oversized_body_is_refused(client):
    async def chunks():
        for _ in range(20):
            yield b"\x00" * 8192

    resp = await client.post("/api/v1/reports", data=chunks(), headers={"Content-Type": "application/msgpack"})
    assert resp.status == 413 and (await resp.json())["error"] == "oversized"
    assert (await client.get("/healthz")).status == 200


async def test_per_peer_rate_limit_answers_429_then_recovers(aiohttp_client, config, clock, make_report):
    client = await aiohttp_client(create_app(config.replace(rate_per_s=1.0, rate_burst=3.0), clock=clock))
    alice, bob = identity(1), identity(2)
    statuses = [(await post(client, seal(make_report(alice, seq), alice)))[0] for seq in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    assert (await post(client, seal(make_report(bob, 0), bob)))[0] == 200  # per peer, not global
    clock.advance(1.0)
    assert (await post(client, seal(make_report(alice, 3), alice)))[0] == 200
    assert (await state(client))["rejections"]["rate_limited"] == 2


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("<script>alert(1)</script>", "<script>alert(1)</script>"),
        ("<img src=x onerror=alert(1)>", "<img src=x onerror=alert(1)>"),
        ("evil\u202eman\x00\x1b[31m", "evilman[31m"),  # bidi override and control characters dropped
        ("ｆｕｌｌｗｉｄｔｈ", "fullwidth"),  # NFKC
        ("x" * 200, "x" * 32),
    ],
)
async def test_public_names_are_kept_as_text_and_normalised(client, make_report, raw, shown):
    alice = identity(1)
    assert (await post(client, seal(make_report(alice, 0, public_name=raw), alice)))[0] == 200
    snap = await state(client)
    assert snap["peers"][0]["name"] == shown
    assert snap["leaderboard"][0]["name"] == shown


def test_dashboard_script_never_writes_html():
    script = "\n".join(line for line in (STATIC_DIR / "app.js").read_text().splitlines() if not line.lstrip().startswith("//"))
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
    assert "textContent" in script
