"""Attribution certificates: issued for the swarm's checkpoint, signed by the run key, checked offline."""
from __future__ import annotations

import sqlite3

import pytest
from coordinator_testing import identity, post

from coordinator.certificates import CertificateRefused, pick_checkpoint
from coordinator.keys import RUN_KEY
from coordinator.store import MIGRATIONS, Store
from node.model.certificates import verify_bytes
from node.cli.main import main
from protocol import AttributionCertificate, Credit, GroupClaim, Identity, SignatureError, pack, seal, unpack

H1, H2, H3 = "a" * 64, "b" * 64, "c" * 64


async def _feed(client, make_report):
    """Two peers train rounds 0 and 1 together (each confirms the other) and agree on the state
    after each; round 2 is only claimed by peer 1 (no confirmation) with another hash."""
    a, b = identity(1), identity(2)
    for rnd, h in ((0, H1), (1, H2)):
        group = [GroupClaim(a.peer_id, 1000), GroupClaim(b.peer_id, 500)]
        for ident, tokens in ((a, 1000), (b, 500)):
            status, _ = await post(client, seal(make_report(ident, rnd, round=rnd, tokens=tokens, group=group, state_hash=h,
                                                            wall_s=3600.0 if ident is a else 1800.0,
                                                            hardware=_gpu(ident)), ident))
            assert status == 200
    status, _ = await post(client, seal(make_report(a, 2, round=2, tokens=999, state_hash=H3, hardware=_gpu(a)), a))
    assert status == 200
    return a, b


def _gpu(ident: Identity):
    from protocol import Hardware

    return Hardware(device="NVIDIA H100", count=2) if ident.peer_id == identity(1).peer_id else Hardware(device="cpu")


async def test_certificate_for_a_reported_checkpoint(client, make_report):
    a, b = await _feed(client, make_report)
    run_key = client.server.app[RUN_KEY].peer_id
    resp = await client.get("/api/v1/certificate", params={"state_hash": H2})
    assert resp.status == 200 and "attachment" in resp.headers["Content-Disposition"]
    cert = verify_bytes(await resp.read(), run_key)
    assert cert["signer"] == run_key and cert["round"] == 1 and cert["state_hash"] == H2 and cert["scope"] == "all"
    rows = {c["peer_id"]: c for c in cert["contributors"]}
    assert rows[a.peer_id]["confirmed_tokens"] == 2000 and rows[b.peer_id]["confirmed_tokens"] == 1000
    assert rows[a.peer_id]["gpu_hours"] == pytest.approx(2 * 2.0)  # two rounds of 1 h on 2 GPUs
    assert rows[b.peer_id]["gpu_hours"] == 0.0  # a CPU node
    assert cert["contributors"][0]["peer_id"] == a.peer_id and cert["contributors_total"] == 2
    assert cert["confirmed_tokens_total"] == 3000, "round 2 comes after the checkpoint: not counted"

    earlier = verify_bytes(await (await client.get("/api/v1/certificate", params={"state_hash": H1})).read(), run_key)
    assert earlier["round"] == 0 and earlier["confirmed_tokens_total"] == 1500

    own = await client.get("/api/v1/certificate", params={"state_hash": H2, "peer": b.peer_id})
    mine = verify_bytes(await own.read(), run_key)
    assert [c["peer_id"] for c in mine["contributors"]] == [b.peer_id] and mine["scope"] == b.peer_id
    assert mine["confirmed_tokens_total"] == 3000


async def test_certificate_refusals(client, make_report):
    await _feed(client, make_report)
    for params, status, reason in (
        ({"state_hash": "d" * 64}, 404, "unknown_state"),
        ({"state_hash": "xyz"}, 400, "bad_request"),
        ({"state_hash": H2, "peer": identity(9).peer_id}, 404, "unknown_peer"),
    ):
        resp = await client.get("/api/v1/certificate", params=params)
        assert resp.status == status and (await resp.json())["error"] == reason
    # a run-key document posted as a report is refused and counted, not a crash
    cert = AttributionCertificate(run_id="x", manifest_hash="m", round=0, state_hash=H1, issued_at=0.0)
    status, body = await post(client, seal(cert, identity(3)))
    assert status == 400 and body["error"] == "unknown_kind"


def test_only_the_majority_hash_of_a_round_is_certified():
    reported = [{"round": 4, "state_hash": H2, "peers": 1}]
    with pytest.raises(CertificateRefused, match="not_majority"):
        pick_checkpoint(reported, {4: {H1: 2, H2: 1}}, H2)
    with pytest.raises(CertificateRefused, match="not_majority"):  # a tie names no checkpoint
        pick_checkpoint(reported, {4: {H1: 1, H2: 1}}, H2)
    assert pick_checkpoint(reported, {4: {H1: 1, H2: 3}}, H2) == (4, H2)
    assert pick_checkpoint([{"round": 4, "state_hash": H1, "peers": 2}], {4: {H1: 2, H2: 1}}, "") == (4, H1)


async def test_verify_accepts_the_real_one_and_rejects_tampering(client, make_report, tmp_path, capsys):
    await _feed(client, make_report)
    run_key = client.server.app[RUN_KEY].peer_id
    blob = await (await client.get("/api/v1/certificate", params={"state_hash": H2})).read()
    real = tmp_path / "real.capaswarm"
    real.write_bytes(blob)
    assert main(["certificate", "verify", str(real), "--run-key", run_key]) == 0
    assert "valid" in capsys.readouterr().out

    version, kind, sender, payload, signature = unpack(blob)
    fields = unpack(payload)
    fields["contributors"][1]["confirmed_tokens"] *= 10  # a volunteer inflates their credit
    tampered = tmp_path / "tampered.capaswarm"
    tampered.write_bytes(pack([version, kind, sender, pack(fields), signature]))
    assert main(["certificate", "verify", str(tampered), "--run-key", run_key]) == 2
    err = capsys.readouterr().err
    assert "signature" in err.lower() and "Traceback" not in err

    impostor = Identity.generate()
    fields = verify_bytes(blob)
    del fields["signer"]
    forged = seal(AttributionCertificate(**{**fields, "contributors": [Credit(**c) for c in fields["contributors"]]}), impostor)
    with pytest.raises(SignatureError, match="not by the pinned key"):
        verify_bytes(forged, run_key)
    (tmp_path / "forged.capaswarm").write_bytes(forged)
    assert main(["certificate", "verify", str(tmp_path / "forged.capaswarm"), "--run-key", run_key]) == 2


def test_ledger_v7_migrates_from_an_empty_v6(tmp_path):
    path = tmp_path / "l.sqlite3"
    Store(path, migrations=MIGRATIONS[:6]).close()
    store = Store(path)
    assert store.schema_version == len(MIGRATIONS) >= 7
    store.close()
    cols = [r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(reports)")]
    assert "state_hash" in cols


def test_export_with_the_coordinator_embeds_a_certificate_and_credits(tmp_path, coordinator_process, capsys):
    """End to end with a coordinator subprocess: reports name the state dir's checkpoint; ``swarm export
    --coordinator`` writes the certificate and the contributors into the card; verify ties it to the weights."""
    import torch

    from node.model.gpt import GPT, PRESETS
    from node.model.state import save_checkpoint, state_hash
    from protocol import ContributionReport, RunManifest
    from coordinator_testing import RUN_ID, http_get

    manifest = RunManifest(run_id=RUN_ID, model=PRESETS["tiny"])
    (tmp_path / "manifest.msgpack").write_bytes(manifest.to_bytes())
    torch.manual_seed(0)
    params = [p.detach().clone() for p in GPT(manifest.model).parameters()]
    save_checkpoint(tmp_path / "state" / "checkpoint.pt", {"manifest_hash": manifest.content_hash,
                                                          "manifest": manifest.to_bytes(),
                                                          "round": 2, "params": params, "momentum": params})
    checkpoint = state_hash(2, params)
    coordinator = coordinator_process(tmp_path / "ledger.sqlite3", 0, "--manifest", str(tmp_path / "manifest.msgpack"))
    import time
    import urllib.request

    a, b = identity(1), identity(2)
    group = [GroupClaim(a.peer_id, 700), GroupClaim(b.peer_id, 300)]
    for ident, tokens, name in ((a, 700, "alice"), (b, 300, "bob")):
        report = ContributionReport(run_id=RUN_ID, peer_id=ident.peer_id, seq=0, sent_at=time.time(), round=1, tokens=tokens,
                                    samples=1, compute_s=1.0, wall_s=2.0, bytes_sent=1, bytes_received=1, group=group,
                                    public_name=name, state_hash=checkpoint)
        req = urllib.request.Request(coordinator.url + "/api/v1/reports", data=seal(report, ident),
                                     headers={"Content-Type": "application/msgpack"})
        urllib.request.urlopen(req, timeout=10).read()
    run_key = unpack(http_get(coordinator.url + "/api/v1/certificate"))[2]  # the envelope's sender
    out = tmp_path / "export"
    assert main(["export", "--state-dir", str(tmp_path / "state"), "--out", str(out), "--coordinator", coordinator.url]) == 0
    card = (out / "README.md").read_text()
    assert "alice" in card and "bob" in card and "700" in card and run_key in card
    assert main(["certificate", "verify", str(out / "certificate.capaswarm"), "--run-key", run_key, "--export", str(out)]) == 0
    assert "is the certified checkpoint" in capsys.readouterr().out
    argv = ["certificate", "fetch", "--coordinator", coordinator.url, "--peer", b.peer_id, "--out", str(tmp_path / "bob.cert")]
    assert main(argv) == 0
    mine = verify_bytes((tmp_path / "bob.cert").read_bytes(), run_key)
    assert [c["public_name"] for c in mine["contributors"]] == ["bob"] and mine["confirmed_tokens_total"] == 1000
    # the same certificate does not certify other weights
    save_checkpoint(tmp_path / "other" / "checkpoint.pt", {"manifest_hash": manifest.content_hash,
                                                          "manifest": manifest.to_bytes(),
                                                          "round": 3, "params": params, "momentum": params})
    assert main(["export", "--state-dir", str(tmp_path / "other"), "--out", str(tmp_path / "other-export")]) == 0
    assert main(["certificate", "verify", str(out / "certificate.capaswarm"), "--export", str(tmp_path / "other-export")]) == 2
    assert "not the certified checkpoint" in capsys.readouterr().err


async def test_the_coordinator_serves_only_the_manifests_initial_checkpoint(aiohttp_client, tmp_path):
    import hashlib

    from coordinator.app import create_app
    from coordinator.config import CoordinatorConfig
    from protocol import RunManifest
    from coordinator_testing import RUN_ID

    blob = b"pretend safetensors" * 100
    (tmp_path / "init.safetensors").write_bytes(blob)
    sha = hashlib.sha256(blob).hexdigest()
    config = CoordinatorConfig(db_path=tmp_path / "l.sqlite3", manifest=RunManifest(run_id=RUN_ID, init_sha256=sha),
                               initial_checkpoint=tmp_path / "init.safetensors")
    client = await aiohttp_client(create_app(config))
    resp = await client.get(f"/api/v1/checkpoint/{sha}")
    assert resp.status == 200 and await resp.read() == blob
    assert (await client.get(f"/api/v1/checkpoint/{'0' * 64}")).status == 404
    bad = CoordinatorConfig(db_path=tmp_path / "l2.sqlite3", manifest=RunManifest(run_id=RUN_ID, init_sha256="0" * 64),
                            initial_checkpoint=tmp_path / "init.safetensors")
    with pytest.raises(ValueError, match="has sha256"):
        create_app(bad)


async def test_epoch_progress_when_the_corpus_size_is_known(aiohttp_client, tmp_path, make_report, clock):
    from coordinator.app import create_app
    from coordinator.config import CoordinatorConfig
    from coordinator_testing import RUN_ID, state
    from protocol import RunManifest

    config = CoordinatorConfig(db_path=tmp_path / "l.sqlite3", manifest=RunManifest(run_id=RUN_ID), corpus_tokens=4000)
    client = await aiohttp_client(create_app(config, clock=clock))
    unknown = await aiohttp_client(create_app(CoordinatorConfig(db_path=tmp_path / "l2.sqlite3")))
    assert (await state(unknown))["run"]["epochs"] is None
    a = identity(1)
    for seq in range(3):
        assert (await post(client, seal(make_report(a, seq, tokens=1000), a)))[0] == 200
    run = (await state(client))["run"]
    assert run["corpus_tokens"] == 4000 and run["epochs"] == pytest.approx(0.75)
