"""coordinator.store: schema migrations, WAL, idempotence, and the incremental cross-check, on both
engines (``new_ledger``: SQLite files and databases on a real PostgreSQL server)."""
from __future__ import annotations

import hashlib
import contextlib
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from coordinator_testing import RUN_ID, T0, identity
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.database import Connection, Database
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


@contextlib.contextmanager
def _sql(target: str | Path) -> Iterator[Connection]:
    """A plain connection to the ledger at ``target`` (either engine; statements commit as they run)."""
    conn = Database(target).connect()
    try:
        yield conn
    finally:
        conn.close()


def test_new_ledger_is_wal_at_the_latest_schema(new_ledger):
    store = Store(new_ledger())
    assert store.journal_mode == "wal" and store.schema_version == len(MIGRATIONS)
    store.close()


def test_migrations_apply_once_and_keep_data(new_ledger):
    path = new_ledger()
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


def test_apply_outcomes_within_one_batch(new_ledger):
    store = Store(new_ledger())
    first = _incoming(1, _report(1, 0))
    outcomes = store.apply([first, first, _incoming(1, _report(1, 0, tokens=5)), _incoming(2, _report(2, 0))])
    assert outcomes[:2] == ["accepted", "duplicate"] and outcomes[3] == "accepted"
    assert isinstance(outcomes[2], Reject) and outcomes[2].reason == "replay_conflict"
    assert len(store.message_keys()) == 2
    (row,) = [p for p in store.peers() if p["peer_id"] == identity(1).peer_id]
    assert (row["reports"], row["tokens"]) == (1, 100)
    store.close()


def test_envelopes_are_kept_verbatim(new_ledger):
    target = new_ledger()
    store = Store(target)
    item = _incoming(1, _report(1, 0))
    store.apply([item])
    store.close()
    with _sql(target) as db:
        (envelope,) = db.execute("SELECT envelope FROM messages").fetchone()
    assert envelope == item.envelope  # the signed bytes: anyone can re-verify the ledger


_PEERS = 4


@st.composite
def _rounds(draw):
    """Reports of a few rounds in any arrival order: random groups, some honest claims, some
    inflated, some failed, some members seeing only part of their group. Each peer's seq grows
    in the order its reports arrive (the ledger refuses rollbacks)."""
    drafts = []
    for rnd in range(draw(st.integers(1, 4))):
        members = draw(st.lists(st.integers(0, _PEERS - 1), min_size=1, max_size=_PEERS, unique=True))
        seen = {m: draw(st.integers(1, 3)) * 100 for m in members}  # what the group saw each claim
        for m in members:
            tokens = seen[m] if draw(st.booleans()) else seen[m] + 1  # the report may inflate it
            view = [o for o in members if o == m or draw(st.integers(0, 4)) > 0]  # may miss a member
            group = [GroupClaim(identity(o).peer_id, seen[o]) for o in view]
            drafts.append((m, dict(round=rnd, tokens=tokens, group=group, ok=draw(st.integers(0, 5)) > 0)))
    order = draw(st.permutations(range(len(drafts))))
    seqs = [0] * _PEERS
    reports = []
    for i in order:
        m, fields = drafts[i]
        reports.append((m, _report(m, seqs[m], **fields)))
        seqs[m] += 1
    return reports


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(reports=_rounds(), batch=st.integers(1, 4))
def test_incremental_cross_check_matches_the_reference(new_ledger, reports, batch):
    store = Store(new_ledger())  # a fresh ledger per example
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


def test_reopened_ledger_has_everything(new_ledger):
    path = new_ledger()
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


def test_version_1_ledger_upgrades_and_counts_network_wait_only_where_measured(new_ledger):
    path = new_ledger()
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


def test_version_3_ledger_upgrades_and_keeps_what_the_newest_heartbeat_says(new_ledger):
    from protocol import Heartbeat

    path = new_ledger()
    Store(path, migrations=MIGRATIONS[:3]).close()  # a ledger made by a version-3 coordinator
    store = Store(path)
    assert store.schema_version == len(MIGRATIONS) >= 4
    assert store.apply([_incoming(1, _report(1, 0))]) == ["accepted"]
    (row,) = store.peers()
    assert (row["software_version"], row["role"], row["reachability"]) == ("", "", "")

    def beat(seq: int, **kw) -> Incoming:
        hb = Heartbeat(run_id=RUN_ID, peer_id=identity(1).peer_id, seq=seq, sent_at=T0, round=0, status="training", **kw)
        envelope = seal(hb, identity(1))
        return Incoming(envelope, hashlib.sha256(envelope).digest(), hb, T0 + 1)

    assert store.apply([beat(5, software_version="0.2.0", role="client", reachability="private")]) == ["accepted"]
    (late,) = store.apply([beat(3, software_version="0.1.0", role="reducer", reachability="public")])  # late, older
    assert isinstance(late, Reject) and late.reason == "seq_rollback"
    (row,) = store.peers()
    assert (row["software_version"], row["role"], row["reachability"]) == ("0.2.0", "client", "private")
    store.close()


def _v2_ledger_with_data(path: str | Path) -> tuple[str, str]:
    """A ledger as a version-2 coordinator left it: two peers who confirmed each other in round 1,
    written with version 2's own columns (today's code cannot write that schema)."""
    Store(path, migrations=MIGRATIONS[:2]).close()
    a, b = identity(1).peer_id, identity(2).peer_id
    with _sql(path) as db:
        for peer, other, tokens in ((a, b, 100), (b, a, 200)):
            db.execute("INSERT INTO messages VALUES (?, 0, 'report', ?, ?, ?, ?)", (peer, T0, T0, b"d" * 32, b"envelope"))
            db.execute(
                """INSERT INTO reports (peer_id, seq, round, tokens, samples, compute_s, wall_s, bytes_sent, bytes_received,
                       payload_bytes, ok, confirmed, sent_at, received_at, blocked_s)
                   VALUES (?, 0, 1, ?, 1, 1.0, 1.0, 1, 1, 0, 1, 1, ?, ?, NULL)""",
                (peer, tokens, T0, T0),
            )
            db.execute("INSERT INTO group_claims VALUES (1, ?, ?, ?, 0)", (other, 300 - tokens, peer))
            db.execute(
                """INSERT INTO peers (peer_id, public_name, first_seen, last_seen, last_seq, last_status, device, device_count,
                       memory_gb, declared_price, last_round, reports, tokens, confirmed_tokens, wall_s)
                   VALUES (?, 'old', ?, ?, 0, 'training', 'cpu', 1, 1.0, 0.0, 1, 1, ?, ?, 1.0)""",
                (peer, T0, T0, tokens, tokens),
            )
        db.execute("INSERT INTO rounds VALUES (1, 2, 300, 1.0, 0, 0, ?, ?)", (T0, T0))
    return a, b


def test_version_2_ledger_with_data_upgrades_to_the_current_version(new_ledger):
    path = new_ledger()
    a, b = _v2_ledger_with_data(path)
    store = Store(path)
    assert store.schema_version == len(MIGRATIONS) >= 3
    # old claims keep their confirmation and get G rebuilt from their group claims
    assert {(r["peer_id"], r["confirmed"], r["group_size"]) for r in (store.report(a, 0), store.report(b, 0))} == {
        (a, 1, 2), (b, 1, 2)
    }
    assert store.current_round == 1 and store.confirmed_round() == 1
    assert {p["peer_id"]: p["confirmed_tokens"] for p in store.peers()} == {a: 100, b: 200}
    # the new rules hold on the old data: no re-claim of round 1, no seq rollback, round 2 confirms
    reclaim = store.apply([_incoming(1, _report(1, 1, round=1, tokens=100))])[0]
    assert isinstance(reclaim, Reject) and reclaim.reason == "round_claimed"
    group = [GroupClaim(a, 50), GroupClaim(b, 60)]
    assert store.apply([_incoming(1, _report(1, 1, round=2, tokens=50, group=group)),
                        _incoming(2, _report(2, 1, round=2, tokens=60, group=group))]) == ["accepted", "accepted"]
    assert {p["peer_id"]: p["confirmed_tokens"] for p in store.peers()} == {a: 150, b: 260}
    assert store.current_round == 2
    with _sql(path) as db:
        assert db.execute("SELECT COUNT(*) FROM messages WHERE stripped = 0").fetchone()[0] == 4
    assert store.add_flag(b, "outlier", 2, a, T0) and not store.add_flag(b, "outlier", 2, a, T0)
    assert store.flags() == {b: {"outlier": 1}}
    store.close()


def test_a_quorum_of_flags_takes_a_claims_credit_away(new_ledger):
    """The place issue 11 items 3-4 plug into: two distinct reporters flag a claim, it loses its
    confirmation for good; flags that arrive before the claim hold too; one reporter is not enough."""
    store = Store(new_ledger())
    a, b = identity(1).peer_id, identity(2).peer_id
    group = [GroupClaim(a, 100), GroupClaim(b, 200)]
    store.apply([_incoming(1, _report(1, 0, round=1, tokens=100, group=group)),
                 _incoming(2, _report(2, 0, round=1, tokens=200, group=group))])
    assert {p["peer_id"]: p["confirmed_tokens"] for p in store.peers()} == {a: 100, b: 200}
    assert store.add_flag(b, "outlier", 1, "reducer-1", T0)
    assert not store.add_flag(b, "outlier", 1, "reducer-1", T0 + 1)  # the same reporter twice counts once
    assert {p["peer_id"]: p["confirmed_tokens"] for p in store.peers()}[b] == 200
    assert store.add_flag(b, "outlier", 1, "reducer-2", T0)
    assert {p["peer_id"]: p["confirmed_tokens"] for p in store.peers()} == {a: 100, b: 0}
    assert store.report(b, 0)["flagged"] == 1 and store.report(b, 0)["confirmed"] == 0
    # flags for round 2 arrive first; b's claim for round 2 then never confirms, a's does
    for reporter in ("reducer-1", "reducer-2"):
        store.add_flag(b, "outlier", 2, reporter, T0)
    group = [GroupClaim(a, 10), GroupClaim(b, 20)]
    store.apply([_incoming(1, _report(1, 1, round=2, tokens=10, group=group)),
                 _incoming(2, _report(2, 1, round=2, tokens=20, group=group))])
    assert {p["peer_id"]: p["confirmed_tokens"] for p in store.peers()} == {a: 110, b: 0}
    assert store.flags() == {b: {"outlier": 2}}
    store.close()


def test_online_time_leaves_out_silences_and_gives_the_planners_uptime(new_ledger):
    from coordinator.plans import uptime
    from protocol import Heartbeat

    store = Store(new_ledger(), online_gap_s=90.0)

    def beat(seq: int, at: float) -> Incoming:
        hb = Heartbeat(run_id=RUN_ID, peer_id=identity(1).peer_id, seq=seq, sent_at=T0 + at, round=0, status="training")
        envelope = seal(hb, identity(1))
        return Incoming(envelope, hashlib.sha256(envelope).digest(), hb, T0 + at)

    for seq, at in enumerate((0.0, 30.0, 60.0, 90.0, 600.0, 630.0)):  # offline from 90 s to 600 s
        assert store.apply([beat(seq, at)]) == ["accepted"]
    (row,) = store.peers()
    assert row["online_s"] == pytest.approx(120.0)  # 3 x 30 s, then 30 s after it came back
    assert uptime(row) == pytest.approx(120.0 / 630.0)
    assert uptime({**row, "last_seen": row["first_seen"]}) == 1.0  # seen once: no time to be absent
    store.close()


def test_a_migrated_ledger_counts_its_peers_as_always_online(new_ledger):
    from coordinator.plans import uptime

    path = new_ledger()
    old = Store(path, migrations=MIGRATIONS[:7])  # a version-7 coordinator did not count online time
    assert old.apply([_incoming(1, _report(1, 0))]) == ["accepted"]
    old.close()
    with _sql(path) as db:
        db.execute("UPDATE peers SET last_seen = first_seen + 500")
    store = Store(path)
    (row,) = store.peers()
    assert row["online_s"] == pytest.approx(500.0) and uptime(row) == 1.0
    store.close()


def test_link_rates_are_the_median_of_recent_rounds_so_a_joining_round_does_not_set_them(new_ledger):
    store = Store(new_ledger())
    joiner, quiet = identity(1).peer_id, identity(2).peer_id
    # a joining round (state download and matchmaking in its wait: 0.3 MB/s), then rounds at 0.5 MB/s
    waits = [7.0, 3.0, 3.0, 3.0]
    store.apply([_incoming(1, _report(1, seq, wall_s=10.0, bytes_sent=1_500_000, blocked_s=wait))
                 for seq, wait in enumerate(waits)])
    store.apply([_incoming(2, _report(2, 0, bytes_sent=0, blocked_s=0.5))])  # moved nothing: no figure
    assert store.link_rates([joiner, quiet]) == {joiner: 500_000.0}
    assert store.link_rates([joiner], window=1) == {joiner: 500_000.0}
    store.apply([_incoming(1, _report(1, seq, wall_s=10.0, bytes_sent=1_500_000, blocked_s=1.5)) for seq in (4, 5, 6)])
    assert store.link_rates([joiner], window=3) == {joiner: 1_000_000.0}  # the link got faster: recent rounds tell
    store.close()


def test_peer_text_with_control_characters_is_stored_clean_on_both_engines(new_ledger):
    """A NUL (PostgreSQL refuses it in text) or a bidi override in what a heartbeat says of itself: accepted,
    kept verbatim in the envelope, cleaned in the row, the same on both engines."""
    from protocol import Heartbeat

    store = Store(new_ledger())
    hb = Heartbeat(run_id=RUN_ID, peer_id=identity(1).peer_id, seq=1, sent_at=T0, round=0, status="training",
                   software_version="0.2\x00.0", role="re\u202educer", reachability="pub\x07lic")
    envelope = seal(hb, identity(1))
    assert store.apply([Incoming(envelope, hashlib.sha256(envelope).digest(), hb, T0 + 1)]) == ["accepted"]
    (row,) = store.peers()
    assert (row["software_version"], row["role"], row["reachability"]) == ("0.2.0", "reducer", "public")
    store.close()
