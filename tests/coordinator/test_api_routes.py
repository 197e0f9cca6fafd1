"""The HTTP API against an in-process coordinator (aiohttp_client; ledger in tmp_path)."""
from __future__ import annotations

import asyncio
import json

from coordinator_testing import RUN_ID, identity, post, state

from coordinator.app import CONTENT_SECURITY_POLICY
from coordinator.keys import HUB, STORE
from protocol import GroupClaim, Hardware, RunManifest, seal


async def test_report_is_accepted_stored_and_shown(client, make_report):
    alice = identity(1)
    report = make_report(alice, 0, tokens=1234, round=3, public_name="alice", val_bpb=2.5)
    status, body = await post(client, seal(report, alice))
    assert (status, body["status"], body["seq"]) == (200, "accepted", 0)
    stored = client.server.app[STORE].report(alice.peer_id, 0)
    assert stored is not None and stored["tokens"] == 1234 and stored["round"] == 3
    snap = await state(client)
    (peer,) = snap["peers"]
    assert (peer["peer_id"], peer["name"], peer["tokens"], peer["state"]) == (alice.peer_id, "alice", 1234, "online")
    assert snap["swarm"]["tokens"] == 1234
    assert snap["loss"] == [
        {"round": 3, "t": report.sent_at, "val_bpb": 2.5, "tokens": 1234, "tokens_per_s": 617.0, "reports": 1}
    ]
    assert [e["kind"] for e in snap["events"]] == ["join"]


async def test_replay_is_idempotent_and_conflict_is_409(client, make_report):
    alice = identity(1)
    first = seal(make_report(alice, 5, tokens=100), alice)
    assert (await post(client, first))[1]["status"] == "accepted"
    status, body = await post(client, first)
    assert (status, body["status"]) == (200, "duplicate")
    status, body = await post(client, seal(make_report(alice, 5, tokens=999), alice))
    assert (status, body["error"]) == (409, "replay_conflict")
    snap = await state(client)
    assert snap["swarm"]["tokens"] == 100  # neither the duplicate nor the conflict counted
    assert snap["rejections"]["replay_conflict"] == 1
    assert client.server.app[STORE].message_keys() == [(alice.peer_id, 5)]


async def test_heartbeat_makes_a_joining_peer_and_reports_make_it_online(client, make_heartbeat, make_report):
    bob = identity(2)
    await post(client, seal(make_heartbeat(bob, 0, status="joining", public_name="bob"), bob))
    snap = await state(client)
    assert [(p["name"], p["state"]) for p in snap["peers"]] == [("bob", "joining")]
    await post(client, seal(make_report(bob, 1, public_name="bob"), bob))
    snap = await state(client)
    assert [(p["name"], p["state"]) for p in snap["peers"]] == [("bob", "online")]


async def test_paused_heartbeat_shows_paused_with_its_reason_and_is_not_billed(client, clock, make_heartbeat, make_report):
    carol = identity(3)
    await post(client, seal(make_report(carol, 0, public_name="carol", hardware=Hardware(device="NVIDIA A100"),
                                        price_per_hour=2.0), carol))
    clock.advance(5)
    await post(client, seal(make_heartbeat(carol, 1, status="paused", reason="outside the schedule 22:00-07:00",
                                           public_name="carol", hardware=Hardware(device="NVIDIA A100"),
                                           price_per_hour=2.0), carol))
    clock.advance(5)
    await post(client, seal(make_heartbeat(carol, 2, status="paused", reason="outside the schedule 22:00-07:00",
                                           public_name="carol", hardware=Hardware(device="NVIDIA A100"),
                                           price_per_hour=2.0), carol))
    snap = await state(client)
    assert [(p["name"], p["state"]) for p in snap["peers"]] == [("carol", "paused")]
    assert snap["swarm"]["by_state"]["paused"] == 1 and snap["swarm"]["burn_usd_per_hour"] == 0.0
    pauses = [e for e in snap["events"] if e["kind"] == "pause"]
    assert len(pauses) == 1 and pauses[0]["detail"] == "outside the schedule 22:00-07:00"  # once, not per heartbeat
    clock.advance(5)
    await post(client, seal(make_heartbeat(carol, 3, status="training", public_name="carol"), carol))
    snap = await state(client)
    assert snap["peers"][0]["state"] == "online"
    assert [e["kind"] for e in snap["events"]][:2] == ["resume", "pause"]


async def test_peer_states_follow_the_clock(client, clock, make_report, config):
    alice = identity(1)
    await post(client, seal(make_report(alice, 0), alice))
    seen = []
    for step in (0.0, config.thresholds.stale_after_s + 1, config.thresholds.offline_after_s):
        clock.advance(step)
        seen.append((await state(client))["peers"][0]["state"])
    assert seen == ["online", "stale", "offline"]
    snap = await state(client)
    assert snap["swarm"]["burn_usd_per_hour"] == 0.0 and snap["swarm"]["eta_s"] is None
    assert "offline" in [e["kind"] for e in snap["events"]]


async def test_cross_check_confirms_only_what_a_group_member_saw(client, make_report):
    a, b, c = identity(1), identity(2), identity(3)
    group = [GroupClaim(a.peer_id, 100), GroupClaim(b.peer_id, 200)]
    # b reports first: a's report arrives later and must be confirmed by b's stored claim
    await post(client, seal(make_report(b, 0, round=1, tokens=200, group=group), b))
    await post(client, seal(make_report(a, 0, round=1, tokens=100, group=group), a))
    await post(client, seal(make_report(c, 0, round=1, tokens=300, group=[GroupClaim(c.peer_id, 300)]), c))
    snap = await state(client)
    by_id = {p["peer_id"]: p for p in snap["peers"]}
    assert by_id[a.peer_id]["confirmed_tokens"] == 100
    assert by_id[b.peer_id]["confirmed_tokens"] == 200
    assert (by_id[c.peer_id]["confirmed_tokens"], by_id[c.peer_id]["unconfirmed_tokens"]) == (0, 300)  # alone
    assert (snap["swarm"]["confirmed_tokens"], snap["swarm"]["unconfirmed_tokens"]) == (300, 300)


async def test_failed_round_costs_money_but_adds_no_tokens(client, make_report):
    alice, bob = identity(1), identity(2)
    hw = Hardware(device="NVIDIA H100 80GB HBM3")
    group = [GroupClaim(alice.peer_id, 1000), GroupClaim(bob.peer_id, 1000)]  # bob confirms alice's claim
    report = make_report(alice, 0, tokens=1000, wall_s=3600.0, hardware=hw, price_per_hour=2.0, group=group)
    await post(client, seal(report, alice))
    await post(client, seal(make_report(alice, 1, tokens=1000, wall_s=3600.0, hardware=hw, price_per_hour=2.0, ok=False), alice))
    await post(client, seal(make_report(bob, 0, tokens=1000, wall_s=1.0, group=group), bob))
    snap = await state(client)
    peer = next(p for p in snap["peers"] if p["peer_id"] == alice.peer_id)
    assert (peer["tokens"], peer["confirmed_tokens"], peer["failed_rounds"], peer["usd"]) == (1000, 1000, 1, 4.0)
    assert peer["usd_per_million_tokens"] == 4000.0
    assert "failed_round" in [e["kind"] for e in snap["events"]]
    row = next(e for e in snap["leaderboard"] if e["peer_id"] == alice.peer_id)
    assert (row["tokens"], row["gpu_hours"], row["share"]) == (1000, 2.0, 0.5)


async def test_manifest_in_msgpack_and_json(client, config):
    resp = await client.get("/api/v1/manifest")
    assert resp.status == 200 and resp.content_type == "application/msgpack"
    assert RunManifest.from_bytes(await resp.read()) == config.manifest
    resp = await client.get("/api/v1/manifest", params={"format": "json"})
    body = await resp.json()
    assert body["manifest"]["run_id"] == RUN_ID and body["content_hash"] == config.manifest.content_hash


async def test_metrics_and_healthz(client, make_report):
    alice = identity(1)
    await post(client, seal(make_report(alice, 0, tokens=777), alice))
    await state(client)
    text = await (await client.get("/metrics")).text()
    assert 'capaswarm_messages_accepted_total{kind="report"} 1.0' in text
    assert "capaswarm_swarm_tokens 777.0" in text
    health = await (await client.get("/healthz")).json()
    assert health["ok"] and health["schema_version"] >= 1 and health["run_id"] == RUN_ID


async def test_dashboard_is_served_with_a_strict_csp(client):
    resp = await client.get("/")
    assert resp.status == 200
    html = await resp.text()
    assert resp.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert "<script>" not in html and "http" not in html.split("<body>")[0]  # no inline script, no CDN
    for asset in ("/static/app.js", "/static/style.css", "/static/vendor/chart.min.js"):
        r = await client.get(asset)
        assert r.status == 200 and r.headers["X-Content-Type-Options"] == "nosniff", asset


async def test_server_sent_events_push_a_new_snapshot_after_a_report(client, make_report):
    alice = identity(1)
    resp = await client.get("/api/v1/events")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")

    async def next_snapshot() -> dict:
        while True:
            line = await asyncio.wait_for(resp.content.readline(), timeout=5.0)
            if line.startswith(b"data: "):
                return json.loads(line[6:])

    first = await next_snapshot()
    assert first["swarm"]["tokens"] == 0
    await post(client, seal(make_report(alice, 0, tokens=4321), alice))
    for _ in range(20):  # snapshots keep coming (the hub rebuilds on its own); bounded
        snap = await next_snapshot()
        if snap["swarm"]["tokens"]:
            break
    assert snap["swarm"]["tokens"] == 4321
    resp.close()
    await asyncio.sleep(0)
    assert client.server.app[HUB].streams.open <= 1


async def test_network_wait_share_counts_only_measured_reports(client, make_report):
    alice, bob = identity(1), identity(2)
    await post(client, seal(make_report(alice, 0, wall_s=4.0, blocked_s=1.0, public_name="alice"), alice))
    await post(client, seal(make_report(alice, 1, wall_s=6.0, blocked_s=0.5, public_name="alice"), alice))
    await post(client, seal(make_report(alice, 2, wall_s=5.0, public_name="alice"), alice))  # an older node: not measured
    await post(client, seal(make_report(bob, 0, wall_s=5.0, public_name="bob"), bob))
    shares = {p["name"]: p["network_wait_share"] for p in (await state(client))["peers"]}
    assert shares == {"alice": 0.15, "bob": None}


async def test_readyz_says_whether_a_report_can_be_stored_now(client, config):
    from coordinator.keys import INGESTOR

    ready = await client.get("/readyz")
    assert ready.status == 200
    assert await ready.json() == {"ready": True, "ledger_open": True, "writer_running": True, "accepting": True}
    await client.app[INGESTOR].close()  # the ledger writer stops: nothing accepted could be stored
    stopped = await client.get("/readyz")
    assert stopped.status == 503 and (await stopped.json())["writer_running"] is False
    assert (await client.get("/healthz")).status == 200  # alive, only not ready


async def test_readyz_fails_when_the_ledger_file_is_gone(client, config):
    config.db_path.unlink()  # a volume unmounted under a running coordinator
    body = await (await client.get("/readyz")).json()
    assert body["ready"] is False and body["ledger_open"] is False
