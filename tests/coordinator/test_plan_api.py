"""The cost plan over HTTP: a plan signed with the run key, budget changes only the run key can make,
and no credit (nor bill) for a round trained on standby."""
from __future__ import annotations
import hashlib

import pytest
from coordinator_testing import RUN_ID, identity, post, state

from coordinator.app import create_app
from coordinator.keys import INGESTOR, PLANNING, RUN_KEY, STORE
from coordinator.plans import MAX_LISTED_PEERS
from coordinator.planner import Budget
from coordinator.store import MIGRATIONS, Incoming, Store
from protocol import BudgetChange, GroupClaim, Hardware, Plan, SignatureError, open_signed_by, seal
from protocol.envelope import DEFAULT_MAX_SIZE

VOLUNTEERS, CHEAP, DEAR = (identity(1), identity(2)), identity(3), identity(4)
PRICES = {CHEAP.peer_id: 1.0, DEAR.peer_id: 2.0}


@pytest.fixture
async def capped(aiohttp_client, config, clock):
    config = config.replace(budget=Budget(cap_usd_per_hour=1.5), plan_interval_s=0.0)
    return await aiohttp_client(create_app(config, clock=clock))


async def one_round(client, make_report, round_: int, seq: int) -> None:
    """Every peer reports round ``round_``, each seeing the whole group's claims (so all confirm)."""
    everyone = [*VOLUNTEERS, CHEAP, DEAR]
    group = [GroupClaim(p.peer_id, 1000) for p in everyone]
    for p in everyone:
        report = make_report(p, seq, round=round_, tokens=1000, compute_s=1.0, wall_s=3600.0, group=group,
                             price_per_hour=PRICES.get(p.peer_id, 0.0), hardware=Hardware(device="cpu"))
        assert (await post(client, seal(report, p)))[0] == 200


async def fetch_plan(client) -> Plan:
    resp = await client.get("/api/v1/plan")
    assert resp.status == 200 and resp.content_type == "application/msgpack"
    plan = open_signed_by(await resp.read(), client.server.app[RUN_KEY].peer_id).message
    assert isinstance(plan, Plan)
    return plan


def plan_states(plan: Plan) -> dict[str, str]:
    return {p.peer_id: p.state for p in plan.peers}


def budget(client, seq: int, clock, **fields) -> bytes:
    return seal(BudgetChange(run_id=RUN_ID, seq=seq, sent_at=clock.now, **fields), client.server.app[RUN_KEY])


async def test_cap_puts_the_dearer_peer_on_standby_signed_with_the_run_key(capped, make_report):
    await one_round(capped, make_report, 1, 0)
    snap = await state(capped)
    plan = await fetch_plan(capped)
    assert plan_states(plan) == {VOLUNTEERS[0].peer_id: "active", VOLUNTEERS[1].peer_id: "active",
                                 CHEAP.peer_id: "active", DEAR.peer_id: "standby"}
    assert plan.burn_usd_per_hour <= 1.5 and plan.cap_usd_per_hour == 1.5
    by_id = {p["peer_id"]: p for p in snap["peers"]}
    assert by_id[DEAR.peer_id]["plan_state"] == "standby" and "cap" in by_id[DEAR.peer_id]["plan_reason"]
    assert snap["plan"]["budget"]["cap_usd_per_hour"] == 1.5 and snap["plans"][-1]["standby"] == 1
    assert snap["plan"]["eta_low_s"] <= snap["plan"]["eta_s"] <= snap["plan"]["eta_high_s"]
    with pytest.raises(SignatureError):  # a node pinning another key refuses it
        open_signed_by(await (await capped.get("/api/v1/plan")).read(), identity(9).peer_id)
    snap = await state(capped)
    assert any(e["kind"] == "standby" and e["peer_id"] == DEAR.peer_id for e in snap["events"])
    human = await (await capped.get("/api/v1/plan?format=json")).json()
    assert human["signer"] == capped.server.app[RUN_KEY].peer_id and human["plan"]["seq"] >= plan.seq


async def test_rounds_trained_on_standby_earn_no_credit_and_no_bill(capped, make_report):
    await one_round(capped, make_report, 1, 0)
    await state(capped)
    plan = await fetch_plan(capped)
    assert plan_states(plan)[DEAR.peer_id] == "standby"
    before = {p["peer_id"]: p for p in (await state(capped))["peers"]}
    await one_round(capped, make_report, plan.round + 1, 1)  # grace: it may not have heard of the plan yet
    await one_round(capped, make_report, plan.round + 2, 2)  # it has: this round is on standby
    after = {p["peer_id"]: p for p in (await state(capped))["peers"]}
    dear, cheap = after[DEAR.peer_id], after[CHEAP.peer_id]
    assert dear["confirmed_tokens"] == before[DEAR.peer_id]["confirmed_tokens"] + 1000  # the grace round only
    assert dear["unconfirmed_tokens"] == 1000 and dear["tokens"] == 3000
    assert dear["usd"] == pytest.approx(before[DEAR.peer_id]["usd"] + 2.0)  # one billed hour, not two
    assert cheap["confirmed_tokens"] == 3000 and cheap["usd"] == pytest.approx(3.0)
    events = (await state(capped))["events"]
    assert any(e["kind"] == "standby_work" and e["peer_id"] == DEAR.peer_id for e in events)


async def test_budget_change_is_signed_logged_and_replans(capped, make_report, clock):
    await one_round(capped, make_report, 1, 0)
    await state(capped)
    assert plan_states(await fetch_plan(capped))[DEAR.peer_id] == "standby"

    async def send(body: bytes) -> tuple[int, dict]:
        resp = await capped.post("/api/v1/budget", data=body, headers={"Content-Type": "application/msgpack"})
        return resp.status, await resp.json()

    forged = seal(BudgetChange(run_id=RUN_ID, seq=5, sent_at=clock.now, cap_usd_per_hour=100.0), identity(1))
    assert (await send(forged))[0] == 403  # a peer's key is not the run key
    assert (await send(b"\x93garbage"))[0] == 403
    wrong_run = seal(BudgetChange(run_id="other", seq=5, sent_at=clock.now, cap_usd_per_hour=5.0), capped.server.app[RUN_KEY])
    assert (await send(wrong_run))[0] == 422
    status, body = await send(budget(capped, 5, clock, cap_usd_per_hour=5.0))
    assert status == 200 and body["status"] == "applied"
    assert (await send(budget(capped, 5, clock, cap_usd_per_hour=0.0)))[0] == 409  # replayed seq
    assert capped.server.app[PLANNING].budget.cap_usd_per_hour == 5.0
    await state(capped)  # re-plans; the plan's events are stored right after this snapshot
    assert plan_states(await fetch_plan(capped))[DEAR.peer_id] == "active"
    snap = await state(capped)
    assert any(e["kind"] == "budget" for e in snap["events"])
    assert any(e["kind"] == "active" and e["peer_id"] == DEAR.peer_id for e in snap["events"])
    # a plan is not a report
    status, body = await post(capped, (await (await capped.get("/api/v1/plan")).read()))
    assert (status, body["error"]) == (400, "unknown_kind")


async def test_budget_and_plan_survive_a_restart(aiohttp_client, config, clock, make_report):
    config = config.replace(budget=Budget(cap_usd_per_hour=1.5), plan_interval_s=0.0)
    first = await aiohttp_client(create_app(config, clock=clock))
    await one_round(first, make_report, 1, 0)
    await state(first)
    resp = await first.post("/api/v1/budget", data=budget(first, 7, clock, cap_usd_per_hour=0.5),
                            headers={"Content-Type": "application/msgpack"})
    assert resp.status == 200
    await first.close()
    second = await aiohttp_client(create_app(config, clock=clock))
    planning = second.server.app[PLANNING]
    assert planning.budget.cap_usd_per_hour == 0.5 and planning.budget_seq == 7 and planning.plan is not None


async def test_before_any_peer_there_is_an_empty_plan(client):
    await state(client)
    plan = await fetch_plan(client)
    assert plan.peers == [] and plan.seq == 1


def test_migration_from_version_2(tmp_path):
    path = tmp_path / "l.sqlite3"
    Store(path, migrations=MIGRATIONS[:2]).close()  # a ledger made by a version-2 coordinator
    store = Store(path)
    assert store.schema_version == len(MIGRATIONS)
    assert store.plans(10) == [] and store.budget_changes() == [] and store.last_plan_envelope() is None
    store.close()


async def test_replans_when_peers_come_not_on_every_snapshot(aiohttp_client, config, clock, make_report):
    config = config.replace(budget=Budget(cap_usd_per_hour=1.5), plan_interval_s=3600.0, plan_every_rounds=100)
    client = await aiohttp_client(create_app(config, clock=clock))
    report = make_report(CHEAP, 0, round=1, price_per_hour=1.0)
    assert (await post(client, seal(report, CHEAP)))[0] == 200
    await state(client)
    first = (await fetch_plan(client)).seq
    await state(client)
    await state(client)
    assert (await fetch_plan(client)).seq == first  # nothing changed: no new plan
    assert (await post(client, seal(make_report(DEAR, 0, round=1, price_per_hour=2.0), DEAR)))[0] == 200
    await state(client)
    plan = await fetch_plan(client)
    assert plan.seq == first + 1 and plan_states(plan)[DEAR.peer_id] == "standby"


async def test_a_thousand_peer_swarm_gets_a_plan_in_one_envelope_and_the_dashboard_keeps_up(capped, make_report, clock):
    """1,200 volunteers beside the two paid peers: the plan lists the standby peer first and no more lines
    than fit one envelope (a peer not listed is active); before, sealing failed and the snapshot froze."""
    await one_round(capped, make_report, 1, 0)
    app = capped.server.app
    crowd = []
    for i in range(1200):
        ident = identity(300 + i)
        envelope = seal(make_report(ident, 0, round=1, tokens=1000, hardware=Hardware(device="cpu")), ident)
        crowd.append(Incoming(envelope, hashlib.sha256(envelope).digest(), make_report(ident, 0, round=1), clock.now))
    outcomes = await app[INGESTOR].run_in_writer(app[STORE].apply, crowd)
    assert outcomes == ["accepted"] * len(crowd)
    app[PLANNING]._force = True  # the set of live peers changed: a plan is due on the next build anyway
    snap = await state(capped)
    assert snap["swarm"]["peers"] == 1204
    resp = await capped.get("/api/v1/plan")
    body = await resp.read()
    plan = open_signed_by(body, app[RUN_KEY].peer_id).message
    assert len(body) <= DEFAULT_MAX_SIZE and len(plan.peers) == MAX_LISTED_PEERS
    states = [p.state for p in plan.peers]
    assert plan_states(plan)[DEAR.peer_id] == "standby" and states == sorted(states, reverse=True)  # standby first
    assert CHEAP.peer_id in plan_states(plan)  # paid: listed before any volunteer
    assert snap["plan"]["seq"] == plan.seq >= 2
