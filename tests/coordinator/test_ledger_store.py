"""coordinator.store: schema migrations, WAL, idempotence, and the incremental cross-check."""
from __future__ import annotations

import hashlib
import random
import sqlite3
import tempfile
from pathlib import Path

import pytest
from coordinator_testing import RUN_ID, T0, identity
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.ledger import Reject, cross_check
from coordinator.store import MIGRATIONS, Incoming, Store
from protocol import ContributionReport, GroupClaim, seal


def _report(i: int, seq: int, **kw) -> ContributionReport:
    fields = dict(run_id=RUN_ID, peer_id=identity(i).peer_id, seq=seq, sent_at=T0, round=seq, tokens=100, samples=1,
                  compute_s=1.0, wall_s=1.0, bytes_sent=1, bytes_received=1)
    fields.update(kw)
    return ContributionReport(**fields)


def _incoming(i: int, message: ContributionReport) -> Incoming:
    envelope = seal(message, identity(i))
    return Incoming(envelope, hashlib.sha256(envelope).digest(), message, T0 + 1)


def test_new_ledger_is_wal_at_the_latest_schema(tmp_path):
    store = Store(tmp_path / "l.sqlite3")
    assert store.journal_mode == "wal" and store.schema_version == len(MIGRATIONS)
    store.close()


def test_migrations_apply_once_and_keep_data(tmp_path):
    path = tmp_path / "l.sqlite3"
    store = Store(path)
    assert store.apply([_incoming(1, _report(1, 0))]) == ["accepted"]
    store.close()
    extra = "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL);"
    store = Store(path, migrations=[*MIGRATIONS, extra])
    assert store.schema_version == len(MIGRATIONS) + 1
    assert store.message_keys() == [(identity(1).peer_id, 0)]
    store.close()
    store = Store(path, migrations=[*MIGRATIONS, extra])  # nothing left to apply: no "table exists" error
    store.close()
    with pytest.raises(RuntimeError, match="newer"):
        Store(path)  # the ledger is newer than this code: refuse rather than guess


def test_apply_outcomes_within_one_batch(tmp_path):
    store = Store(tmp_path / "l.sqlite3")
    first = _incoming(1, _report(1, 0))
    outcomes = store.apply([first, first, _incoming(1, _report(1, 0, tokens=5)), _incoming(2, _report(2, 0))])
    assert outcomes[:2] == ["accepted", "duplicate"] and outcomes[3] == "accepted"
    assert isinstance(outcomes[2], Reject) and outcomes[2].reason == "replay_conflict"
    assert len(store.message_keys()) == 2
    (row,) = [p for p in store.peers() if p["peer_id"] == identity(1).peer_id]
    assert (row["reports"], row["tokens"]) == (1, 100)
    store.close()


def test_envelopes_are_kept_verbatim(tmp_path):
    store = Store(tmp_path / "l.sqlite3")
    item = _incoming(1, _report(1, 0))
    store.apply([item])
    store.close()
    with sqlite3.connect(tmp_path / "l.sqlite3") as db:
        (envelope,) = db.execute("SELECT envelope FROM messages").fetchone()
    assert envelope == item.envelope  # the signed bytes: anyone can re-verify the ledger


_PEERS = 4


@st.composite
def _rounds(draw):
    """Reports of a few rounds: random groups, some honest claims, some inflated, some failed."""
    reports = []
    seqs = [0] * _PEERS
    for rnd in range(draw(st.integers(1, 4))):
        members = draw(st.lists(st.integers(0, _PEERS - 1), min_size=1, max_size=_PEERS, unique=True))
        seen = {m: draw(st.integers(1, 3)) * 100 for m in members}  # what the group saw each claim
        for m in members:
            tokens = seen[m] if draw(st.booleans()) else seen[m] + 1  # the report may inflate it
            group = [GroupClaim(identity(o).peer_id, t) for o, t in seen.items()]
            reports.append((m, _report(m, seqs[m], round=rnd, tokens=tokens, group=group, ok=draw(st.integers(0, 5)) > 0)))
            seqs[m] += 1
    order = draw(st.permutations(range(len(reports))))
    return [reports[i] for i in order]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_rounds(), st.integers(1, 4))
def test_incremental_cross_check_matches_the_reference(reports, batch):
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "l.sqlite3")
        items = [_incoming(i, r) for i, r in reports]
        for start in range(0, len(items), batch):
            store.apply(items[start:start + batch])
        expected = cross_check(r for _, r in reports)
        for (peer_id, seq), confirmed in expected.items():
            assert store.report(peer_id, seq)["confirmed"] == int(confirmed)
        for row in store.peers():
            want = sum(r.tokens for _, r in reports if r.peer_id == row["peer_id"] and expected.get((r.peer_id, r.seq)))
            assert row["confirmed_tokens"] == want
        store.close()


def test_reopened_ledger_has_everything(tmp_path):
    path = tmp_path / "l.sqlite3"
    rng = random.Random(3)
    store = Store(path)
    sent = [(i, _report(i, s, tokens=rng.randrange(1, 1000))) for i in range(3) for s in range(5)]
    store.apply([_incoming(i, r) for i, r in sent])
    store.close()
    store = Store(path)
    totals = {row["peer_id"]: row["tokens"] for row in store.peers()}
    assert totals == {identity(i).peer_id: sum(r.tokens for j, r in sent if j == i) for i in range(3)}
    assert len(store.rounds(100)) == 5
    store.close()


def test_version_1_ledger_upgrades_and_counts_network_wait_only_where_measured(tmp_path):
    path = tmp_path / "l.sqlite3"
    old = Store(path, migrations=MIGRATIONS[:1])  # a ledger made by a version-1 coordinator
    assert old.schema_version == 1
    old.close()
    store = Store(path)
    assert store.schema_version == len(MIGRATIONS) >= 2
    assert store.apply([_incoming(1, _report(1, 0, wall_s=4.0))]) == ["accepted"]  # from a node that does not measure
    (row,) = store.peers()
    assert (row["reports"], row["blocked_s"], row["blocked_wall_s"]) == (1, 0.0, 0.0)
    assert store.report(identity(1).peer_id, 0)["blocked_s"] is None
    assert store.apply([_incoming(1, _report(1, 1, wall_s=2.0, blocked_s=0.5)),
                        _incoming(1, _report(1, 2, wall_s=3.0))]) == ["accepted", "accepted"]
    (row,) = store.peers()
    assert (row["wall_s"], row["blocked_s"], row["blocked_wall_s"]) == (9.0, 0.5, 2.0)
    assert store.report(identity(1).peer_id, 1)["blocked_s"] == 0.5
    store.close()
