"""Crash the coordinator (SIGKILL) while three reporters send; restart it on the same ledger:
every message the reporters produced is in the ledger exactly once, and the running totals
(maintained incrementally, so a double apply would show) equal what the nodes sent. On both
engines: a SQLite file and a database on a real PostgreSQL server (``new_ledger``)."""
from __future__ import annotations

import threading
import time

from coordinator_testing import RUN_ID, identity, wait_until

from coordinator.database import Database
from node.uplink.reporter import Reporter
from protocol import ContributionReport, Heartbeat

NODES, PER_NODE = 3, 60


def test_kill_9_mid_stream_loses_nothing_and_counts_nothing_twice(tmp_path, new_ledger, coordinator_process):
    db, run_key = new_ledger(), tmp_path / "run.runkey"
    first = coordinator_process(db, run_key=run_key)
    idents = [identity(10 + i) for i in range(NODES)]
    reporters = [
        Reporter(ident, first.url, tmp_path / f"outbox{i}", timeout=2.0, backoff_base=0.05, backoff_cap=0.3)
        for i, ident in enumerate(idents)
    ]
    produced: dict[tuple[str, int], int] = {}  # (peer, seq) -> tokens (0 for heartbeats)
    done = threading.Event()

    def produce() -> None:
        for seq in range(PER_NODE):
            for i, (ident, reporter) in enumerate(zip(idents, reporters)):
                if seq % 10 == 0:
                    msg = Heartbeat(run_id=RUN_ID, peer_id=ident.peer_id, seq=seq, sent_at=time.time(), round=seq,
                                    status="training")
                    tokens = 0
                else:
                    tokens = 1000 * (i + 1) + seq
                    msg = ContributionReport(
                        run_id=RUN_ID, peer_id=ident.peer_id, seq=seq, sent_at=time.time(), round=seq, tokens=tokens,
                        samples=1, compute_s=0.1, wall_s=0.2, bytes_sent=1, bytes_received=1,
                    )
                reporter.submit(msg)
                produced[(ident.peer_id, seq)] = tokens
            time.sleep(0.02)
        done.set()

    try:
        for r in reporters:
            r.start()
        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        wait_until(lambda: sum(r.delivered for r in reporters) >= 30, timeout=30, what="some deliveries")
        first.kill()
        killed_at_delivered = sum(r.delivered for r in reporters)
        assert not done.is_set(), "the producer finished before the crash: the test proves nothing"
        producer.join(timeout=30)
        assert done.is_set()
        assert sum(r.pending for r in reporters) > 0  # the outage left work in the outboxes
        second = coordinator_process(db, first.port, run_key=run_key)  # same port: the nodes' URL does not change
        wait_until(lambda: all(r.pending == 0 for r in reporters), timeout=60, what="the outboxes to drain")
        assert sum(r.delivered for r in reporters) > killed_at_delivered
        assert all(r.rejected == 0 for r in reporters), [r.last_error for r in reporters]
        assert second.stop() == 0  # a clean shutdown after the crash recovery
    finally:
        for r in reporters:
            r.stop(flush_timeout=0.0)

    conn = Database(db).connect()
    try:
        keys = [tuple(row) for row in conn.execute("SELECT peer_id, seq FROM messages").fetchall()]
        report_rows = conn.execute("SELECT COUNT(*) FROM reports").fetchone()[0]
        totals = {row[0]: row[1] for row in conn.execute("SELECT peer_id, tokens FROM peers").fetchall()}
    finally:
        conn.close()
    assert len(keys) == len(produced) == NODES * PER_NODE
    assert set(keys) == set(produced)
    assert report_rows == sum(1 for t in produced.values() if t)
    assert totals == {ident.peer_id: sum(t for (p, _), t in produced.items() if p == ident.peer_id) for ident in idents}
