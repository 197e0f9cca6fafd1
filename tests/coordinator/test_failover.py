"""Two coordinators on one PostgreSQL ledger behind one URL (a TCP load balancer, as a Kubernetes
Service is): both ingest and serve, one plans. Kill -9 the planning one while three reporters (the
node's own outbox and retry) send through the balancer: nothing is lost or counted twice, the other
takes the planner's lock and goes on from the newest plan (seq keeps its order), and its dashboard
snapshot keeps up with the ledger."""
from __future__ import annotations

from typing import Any

import pytest
from coordinator_testing import RUN_ID, ReportStream, api_state, http_get, ledger_contents, wait_until
from failover_proxy import FailoverProxy

from coordinator.database import Database
from coordinator.keys import HUB
from protocol import Plan, open_signed_by

NODES, PER_NODE = 3, 80


def test_kill_9_of_the_planning_coordinator_loses_nothing_and_the_other_plans_on(tmp_path, postgres_server,
                                                                                 coordinator_process):
    if postgres_server is None:
        pytest.skip("no PostgreSQL server binaries here (apt-get install postgresql)")
    db, run_key = postgres_server.create_database(), tmp_path / "run.runkey"
    flags = ("--plan-interval", "0.5", "--plan-every-rounds", "1")
    first = coordinator_process(db, 0, *flags, run_key=run_key)
    second = coordinator_process(db, 0, *flags, run_key=run_key)
    wait_until(lambda: [first.state()["plan"]["made_here"], second.state()["plan"]["made_here"]].count(True) == 1,
               30, 0.2, "one planner")
    leader, survivor = (first, second) if first.state()["plan"]["made_here"] else (second, first)
    proxy = FailoverProxy([("127.0.0.1", first.port), ("127.0.0.1", second.port)])
    stream = ReportStream(proxy.url, tmp_path, first_identity=40, nodes=NODES, per_node=PER_NODE, pause_s=0.03)
    try:
        stream.start()
        wait_until(lambda: stream.delivered >= 60, timeout=60, what="some deliveries")
        assert all(n > 0 for n in proxy.connections), proxy.connections  # both coordinators ingest
        seq_before = leader.state()["plan"]["seq"]
        assert seq_before is not None and seq_before >= 1
        leader.kill()
        assert not stream.done.is_set(), "the producer finished before the kill: the test proves nothing"
        stream.join(timeout=60)
        assert stream.done.is_set()
        wait_until(lambda: stream.pending == 0, timeout=60, what="the outboxes to drain")
        assert stream.errors() == []
        # the survivor plans now, on from the newest plan; its snapshot shows everything
        wait_until(lambda: survivor.state()["plan"]["made_here"], 30, 0.2, "the survivor to take the planner's lock")
        wait_until(lambda: (survivor.state()["plan"]["seq"] or 0) > seq_before + 1, 30, 0.2, "new plans")
        total = sum(stream.produced.values())
        wait_until(lambda: survivor.state()["swarm"]["tokens"] == total, 30, 0.2, "the dashboard to catch up")
    finally:
        stream.stop()
        proxy.close()

    keys, _, totals = ledger_contents(db)
    assert len(keys) == len(set(keys)) == len(stream.produced) == NODES * PER_NODE and set(keys) == set(stream.produced)
    assert totals == stream.totals()
    conn = Database(db).connect()
    try:
        plans = [(row[0], row[1], bytes(row[2])) for row in
                 conn.execute("SELECT seq, made_at, envelope FROM plans ORDER BY seq").fetchall()]
    finally:
        conn.close()
    # one plan per seq, made in seq order, every one signed with the run key and numbered as stored
    run_key_id = survivor.state()["plan"]["run_key"]
    assert [s for s, _, _ in plans] == list(range(plans[0][0], plans[0][0] + len(plans)))
    assert all(a[1] < b[1] for a, b in zip(plans, plans[1:])), "a plan made before an older-numbered one"
    for seq, _, envelope in plans:
        plan = open_signed_by(envelope, run_key_id).message
        assert isinstance(plan, Plan) and plan.seq == seq
    assert http_get(survivor.url + "/api/v1/plan") and api_state(survivor.url)["swarm"]["peers"] == NODES
    assert survivor.stop() == 0

async def test_a_budget_change_sent_to_the_other_coordinator_reaches_the_planning_one(
        aiohttp_client, config, clock, postgres_server, tmp_path):
    """Behind one URL an operator's change may land on either coordinator: the ledger keeps it, the
    planning one applies it at its next snapshot and signs a plan under it, and the other serves that plan."""
    from coordinator.app import create_app
    from coordinator.keys import RUN_KEY
    from protocol import BudgetChange, seal

    if postgres_server is None:
        pytest.skip("no PostgreSQL server binaries here (apt-get install postgresql)")
    shared = config.replace(db_path=postgres_server.create_database(), run_key_path=tmp_path / "run.runkey",
                            plan_interval_s=3600.0)
    one, two = [await aiohttp_client(create_app(shared, clock=clock)) for _ in range(2)]

    async def view(client) -> dict[str, Any]:
        await client.server.app[HUB].refresh()
        return (await (await client.get("/api/v1/state")).json())["plan"]

    first, second = await view(one), await view(two)
    assert [first["made_here"], second["made_here"]].count(True) == 1
    leader, other = (one, two) if first["made_here"] else (two, one)
    change = seal(BudgetChange(run_id=RUN_ID, seq=3, sent_at=clock.now, cap_usd_per_hour=0.75),
                  other.server.app[RUN_KEY])
    resp = await other.post("/api/v1/budget", data=change, headers={"Content-Type": "application/msgpack"})
    assert resp.status == 200, await resp.text()
    planned = await view(leader)  # follows the ledger, and re-plans under the new budget
    assert planned["budget"]["cap_usd_per_hour"] == 0.75 and planned["cap_usd_per_hour"] == 0.75
    served = await view(other)
    assert served["seq"] == planned["seq"] and not served["made_here"] and served["cap_usd_per_hour"] == 0.75
