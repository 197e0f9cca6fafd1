"""Crash the coordinator (SIGKILL) while three reporters send; restart it on the same ledger:
every message the reporters produced is in the ledger exactly once, and the running totals
(maintained incrementally, so a double apply would show) equal what the nodes sent. On both
engines: a SQLite file and a database on a real PostgreSQL server (``new_ledger``)."""
from __future__ import annotations

from coordinator_testing import ReportStream, ledger_contents, wait_until

NODES, PER_NODE = 3, 60


def test_kill_9_mid_stream_loses_nothing_and_counts_nothing_twice(tmp_path, new_ledger, coordinator_process):
    db, run_key = new_ledger(), tmp_path / "run.runkey"
    first = coordinator_process(db, run_key=run_key)
    stream = ReportStream(first.url, tmp_path, first_identity=10, nodes=NODES, per_node=PER_NODE, pause_s=0.02)
    try:
        stream.start()
        wait_until(lambda: stream.delivered >= 30, timeout=30, what="some deliveries")
        first.kill()
        killed_at_delivered = stream.delivered
        assert not stream.done.is_set(), "the producer finished before the crash: the test proves nothing"
        stream.join(timeout=30)
        assert stream.done.is_set()
        assert stream.pending > 0  # the outage left work in the outboxes
        second = coordinator_process(db, first.port, run_key=run_key)  # same port: the nodes' URL does not change
        wait_until(lambda: stream.pending == 0, timeout=60, what="the outboxes to drain")
        assert stream.delivered > killed_at_delivered
        assert stream.errors() == []
        assert second.stop() == 0  # a clean shutdown after the crash recovery
    finally:
        stream.stop()

    keys, report_rows, totals = ledger_contents(db)
    assert len(keys) == len(stream.produced) == NODES * PER_NODE
    assert set(keys) == set(stream.produced)
    assert report_rows == sum(1 for t in stream.produced.values() if t)
    assert totals == stream.totals()
