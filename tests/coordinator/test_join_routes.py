"""The routes a joining node uses: the signed manifest, the join line, bootstrap peers, and the
dial-back verdict and software version carried by heartbeats (and shown on the dashboard)."""
from __future__ import annotations

import dataclasses

from coordinator_testing import identity, post, state

from coordinator.keys import JOIN, RUN_KEY
from coordinator.snapshot import version_status
from protocol import SOFTWARE_VERSION, RunManifest, open_signed_by, seal


async def test_signed_manifest_verifies_against_the_run_key_only(client, config):
    resp = await client.get("/api/v1/manifest/signed")
    assert resp.status == 200 and resp.content_type == "application/msgpack"
    body = await resp.read()
    run_key = client.server.app[RUN_KEY].peer_id
    assert open_signed_by(body, run_key).message == config.manifest
    join = await (await client.get("/api/v1/join")).json()
    assert join["run_key"] == run_key and join["manifest_hash"] == config.manifest.content_hash
    assert join["join_line"] == client.server.app[JOIN]["join_line"]
    assert f"--run-key {run_key}" in join["join_line"] and join["software_version"] == SOFTWARE_VERSION


async def test_a_manifest_posted_as_a_report_is_refused_and_counted(client, config):
    forged = seal(dataclasses.replace(config.manifest, round_tokens=1), identity(7))
    status, body = await post(client, forged)
    assert status == 400 and body["error"] == "unknown_kind"
    assert (await state(client))["rejections"]["unknown_kind"] == 1


async def test_heartbeat_answer_carries_the_verdict_and_the_dashboard_the_version(client, config, make_heartbeat):
    ident = identity(1)
    # an address on another IP than the request's: never dialed, so the node is told it is private
    hb = make_heartbeat(ident, 1, maddrs=["/ip4/203.0.113.9/tcp/4001"], software_version="0.1.0", role="client",
                        reachability="unknown")
    status, body = await post(client, seal(hb, ident))
    assert status == 200 and body["reachability"] == "private"
    assert (await (await client.get("/api/v1/peers")).json()) == {"peers": []}
    snap = await state(client)
    (row,) = snap["peers"]
    assert (row["software_version"], row["version_status"], row["role"]) == ("0.1.0", "older", "client")
    assert snap["run"]["software_version"] == SOFTWARE_VERSION and snap["run"]["run_key"] == client.server.app[RUN_KEY].peer_id
    assert "swarm join --coordinator" in snap["run"]["join_line"]


def test_version_status():
    assert version_status("", "") == "unknown"
    assert version_status("0.2.0", "", current="0.2.0") == "ok"
    assert version_status("0.1.0", "", current="0.2.0") == "older"
    assert version_status("0.1.0", "0.2.0", current="0.2.0") == "too_old"
    assert version_status("junk", "", current="0.2.0") == "unknown"
    assert RunManifest(run_id="r", min_version="0.2.0").min_version == "0.2.0"


async def test_price_quote_uses_the_coordinators_table_and_limits(client, config):
    async def quote(**query: str) -> tuple[int, dict]:
        resp = await client.get("/api/v1/price", params=query)
        return resp.status, await resp.json()

    status, cpu = await quote(device="cpu", count="0", declared="0")
    assert status == 200 and cpu["source"] == "cpu_default" and cpu["usd_per_hour"] == config.prices.cpu_usd_per_hour
    status, paid = await quote(device="NVIDIA A100", count="2", declared="3.5")
    assert status == 200 and (paid["source"], paid["usd_per_hour"], paid["accepted"]) == ("declared", 3.5, True)
    assert paid["max_usd_per_hour"] >= 2 * config.limits.max_usd_per_device_hour
    status, greedy = await quote(device="NVIDIA A100", count="1", declared="1e6")
    assert status == 200 and greedy["accepted"] is False  # such reports would be refused as implausible
    status, volunteer = await quote(device="NVIDIA GeForce RTX 4090", count="1", declared="0")
    assert volunteer["source"] == "electricity" and 0 < volunteer["usd_per_hour"] < 1
    for bad in ({"count": "x"}, {"declared": "nan"}, {"declared": "-1"}, {"count": "100000"}):
        status, body = await quote(**bad)
        assert status == 400 and body["error"] == "bad_query", bad
