"""The ledger on disk: SQLite in WAL mode. The only module with SQL in it.

Schema (version 2; later versions append to :data:`MIGRATIONS`, never edit a released one)::

    messages      every accepted envelope, verbatim and signed: the ledger proper.
                  PRIMARY KEY (peer_id, seq) is the idempotence key; digest = sha256(envelope).
    reports       the fields of accepted ContributionReports, one row each, with ``confirmed``
    group_claims  (round, member, tokens) as seen by another member of the group (reporter)
    peers         one row per peer: latest name/hardware/price/status and running totals
    rounds        per-round totals for the loss and throughput curves
    events        joins, leaves and failed rounds, for the dashboard's event list

Version 2 added ``reports.blocked_s`` and ``peers.blocked_s`` / ``peers.blocked_wall_s``.

Totals in ``peers`` and ``rounds`` are maintained in the same transaction as the insert, so a
snapshot costs O(peers + rounds) whatever the number of reports. Confirmation (see
``ledger.cross_check``) is applied both ways at insert: a new report is confirmed by claims
already stored, and its own group claims confirm reports already stored.

Threading: one connection writes and one reads (WAL lets them run concurrently); each is used
from a single dedicated thread by its owner (``ingest.Ingestor`` and ``hub.Hub``).
``synchronous=FULL``: a commit is on disk before ``apply`` returns, so the acknowledgement
that follows it never promises more than the disk holds.
"""
from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol import ContributionReport, Heartbeat

from .ledger import Reject, classify_replay, display_name

__all__ = ["MIGRATIONS", "Incoming", "Store"]

logger = logging.getLogger(__name__)

MIGRATIONS: list[str] = [
    # version 1
    """
    CREATE TABLE messages (
        peer_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
        sent_at REAL NOT NULL, received_at REAL NOT NULL,
        digest BLOB NOT NULL, envelope BLOB NOT NULL,
        PRIMARY KEY (peer_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE reports (
        peer_id TEXT NOT NULL, seq INTEGER NOT NULL, round INTEGER NOT NULL,
        tokens INTEGER NOT NULL, samples INTEGER NOT NULL, compute_s REAL NOT NULL, wall_s REAL NOT NULL,
        bytes_sent INTEGER NOT NULL, bytes_received INTEGER NOT NULL, payload_bytes INTEGER NOT NULL,
        val_bpb REAL, train_loss REAL, ok INTEGER NOT NULL, confirmed INTEGER NOT NULL DEFAULT 0,
        sent_at REAL NOT NULL, received_at REAL NOT NULL,
        PRIMARY KEY (peer_id, seq)
    );
    CREATE INDEX reports_by_round ON reports (peer_id, round, tokens);
    CREATE INDEX reports_failed ON reports (received_at) WHERE ok = 0;
    CREATE TABLE group_claims (
        round INTEGER NOT NULL, member TEXT NOT NULL, tokens INTEGER NOT NULL,
        reporter TEXT NOT NULL, seq INTEGER NOT NULL
    );
    CREATE INDEX group_claims_by_member ON group_claims (member, round, tokens);
    CREATE TABLE peers (
        peer_id TEXT PRIMARY KEY, public_name TEXT NOT NULL DEFAULT '',
        first_seen REAL NOT NULL, last_seen REAL NOT NULL, last_seq INTEGER NOT NULL,
        last_status TEXT NOT NULL, device TEXT NOT NULL, device_count INTEGER NOT NULL,
        memory_gb REAL NOT NULL, declared_price REAL NOT NULL, last_round INTEGER NOT NULL,
        reports INTEGER NOT NULL DEFAULT 0, failed_rounds INTEGER NOT NULL DEFAULT 0,
        tokens INTEGER NOT NULL DEFAULT 0, confirmed_tokens INTEGER NOT NULL DEFAULT 0,
        compute_s REAL NOT NULL DEFAULT 0, wall_s REAL NOT NULL DEFAULT 0,
        bytes_sent INTEGER NOT NULL DEFAULT 0, bytes_received INTEGER NOT NULL DEFAULT 0,
        payload_bytes INTEGER NOT NULL DEFAULT 0,
        last_report_seq INTEGER NOT NULL DEFAULT -1, last_tokens_per_s REAL NOT NULL DEFAULT 0,
        tokens_total_heartbeat INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX peers_by_first_seen ON peers (first_seen);
    CREATE TABLE rounds (
        round INTEGER PRIMARY KEY, reports INTEGER NOT NULL, tokens INTEGER NOT NULL,
        max_wall_s REAL NOT NULL, val_sum REAL NOT NULL, val_n INTEGER NOT NULL,
        first_at REAL NOT NULL, last_at REAL NOT NULL
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, kind TEXT NOT NULL,
        peer_id TEXT NOT NULL, detail TEXT NOT NULL DEFAULT ''
    );
    """,
    # version 2: time the training loop waited on the network (ContributionReport.blocked_s,
    # appended after protocol v1). NULL in reports = not measured; the peer totals count only
    # measured reports, with the wall time of those same reports beside them for the ratio.
    """
    ALTER TABLE reports ADD COLUMN blocked_s REAL;
    ALTER TABLE peers ADD COLUMN blocked_s REAL NOT NULL DEFAULT 0;
    ALTER TABLE peers ADD COLUMN blocked_wall_s REAL NOT NULL DEFAULT 0;
    """,
]


@dataclass(frozen=True)
class Incoming:
    """A verified, checked message on its way into the ledger."""

    envelope: bytes
    digest: bytes  # sha256 of envelope
    message: ContributionReport | Heartbeat
    received_at: float


Outcome = str | Reject  # "accepted" | "duplicate" | a Reject (replay_conflict)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class Store:
    """The SQLite ledger. ``apply`` from one thread, the read methods from one other."""

    def __init__(self, path: str | Path, *, migrations: Sequence[str] = MIGRATIONS) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._w = _connect(self.path)
        self._migrate(migrations)
        self._r = _connect(self.path)
        self._r.execute("PRAGMA query_only=ON")

    # --- schema -------------------------------------------------------------------------------

    def _migrate(self, migrations: Sequence[str]) -> None:
        current = self.schema_version
        if current > len(migrations):
            raise RuntimeError(f"ledger {self.path} has schema version {current}, newer than this coordinator's {len(migrations)}")
        for version, script in enumerate(migrations[current:], start=current + 1):
            logger.info("migrating ledger %s to schema version %d", self.path, version)
            # executescript commits on its own; the version bump rides in the same script
            self._w.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {version};\nCOMMIT;")

    @property
    def schema_version(self) -> int:
        return int(self._w.execute("PRAGMA user_version").fetchone()[0])

    @property
    def journal_mode(self) -> str:
        return str(self._w.execute("PRAGMA journal_mode").fetchone()[0])

    def close(self) -> None:
        self._r.close()
        self._w.close()

    # --- writes -------------------------------------------------------------------------------

    def apply(self, items: Sequence[Incoming]) -> list[Outcome]:
        """Store ``items`` in one transaction; return one outcome per item, in order.

        If the batch fails as a whole, each item is retried in its own transaction so that one
        bad item cannot hold the others back; an item that still fails raises to its caller.
        """
        try:
            return self._transaction(items)
        except sqlite3.Error:
            if len(items) == 1:
                raise
            logger.exception("batch of %d failed; applying items one by one", len(items))
            return [self._transaction([item])[0] for item in items]

    def _transaction(self, items: Sequence[Incoming]) -> list[Outcome]:
        c = self._w
        c.execute("BEGIN IMMEDIATE")
        try:
            outcomes = [self._apply_one(item) for item in items]
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return outcomes

    def _apply_one(self, item: Incoming) -> Outcome:
        c, m = self._w, item.message
        row = c.execute("SELECT digest FROM messages WHERE peer_id = ? AND seq = ?", (m.peer_id, m.seq)).fetchone()
        try:
            if classify_replay(None if row is None else bytes(row[0]), item.digest) == "duplicate":
                return "duplicate"
        except Reject as rejection:
            rejection.peer_id = m.peer_id
            return rejection
        kind = "report" if isinstance(m, ContributionReport) else "heartbeat"
        c.execute(
            "INSERT INTO messages (peer_id, seq, kind, sent_at, received_at, digest, envelope) VALUES (?,?,?,?,?,?,?)",
            (m.peer_id, m.seq, kind, m.sent_at, item.received_at, item.digest, item.envelope),
        )
        seen_at = min(m.sent_at, item.received_at)  # a peer's clock may run ahead, never beyond receipt
        self._upsert_peer(m, seen_at)
        if isinstance(m, ContributionReport):
            self._insert_report(m, item.received_at, seen_at)
        elif m.status == "leaving":
            self._event(seen_at, "leave", m.peer_id, "said it is leaving")
        return "accepted"

    def _event(self, at: float, kind: str, peer_id: str, detail: str = "") -> None:
        self._w.execute("INSERT INTO events (at, kind, peer_id, detail) VALUES (?,?,?,?)", (at, kind, peer_id, detail))

    def _upsert_peer(self, m: ContributionReport | Heartbeat, seen_at: float) -> None:
        c = self._w
        is_new = c.execute("SELECT 1 FROM peers WHERE peer_id = ?", (m.peer_id,)).fetchone() is None
        status = m.status if isinstance(m, Heartbeat) else "training"
        hw = m.hardware
        # SET expressions see the old row, so "newer" compares against the stored last_seq
        c.execute(
            """
            INSERT INTO peers (peer_id, public_name, first_seen, last_seen, last_seq, last_status,
                               device, device_count, memory_gb, declared_price, last_round)
            VALUES (?,?,?,?,?,?,?,?,?,?,?)
            ON CONFLICT (peer_id) DO UPDATE SET
                first_seen = MIN(first_seen, excluded.first_seen),
                last_seen = MAX(last_seen, excluded.last_seen),
                public_name = IIF(excluded.last_seq > last_seq, excluded.public_name, public_name),
                last_status = IIF(excluded.last_seq > last_seq, excluded.last_status, last_status),
                device = IIF(excluded.last_seq > last_seq, excluded.device, device),
                device_count = IIF(excluded.last_seq > last_seq, excluded.device_count, device_count),
                memory_gb = IIF(excluded.last_seq > last_seq, excluded.memory_gb, memory_gb),
                declared_price = IIF(excluded.last_seq > last_seq, excluded.declared_price, declared_price),
                last_round = MAX(last_round, excluded.last_round),
                last_seq = MAX(last_seq, excluded.last_seq)
            """,
            (m.peer_id, display_name(m.public_name, m.peer_id), seen_at, seen_at, m.seq, status,
             hw.device, hw.count, hw.memory_gb, m.price_per_hour, m.round),
        )
        if is_new:
            self._event(seen_at, "join", m.peer_id, hw.device)
        if isinstance(m, Heartbeat):
            c.execute(
                "UPDATE peers SET tokens_total_heartbeat = MAX(tokens_total_heartbeat, ?) WHERE peer_id = ?",
                (m.tokens_total, m.peer_id),
            )

    def _insert_report(self, r: ContributionReport, received_at: float, seen_at: float) -> None:
        c = self._w
        confirmed = r.ok and c.execute(
            "SELECT EXISTS (SELECT 1 FROM group_claims WHERE member = ? AND round = ? AND tokens = ? AND reporter <> ?)",
            (r.peer_id, r.round, r.tokens, r.peer_id),
        ).fetchone()[0] == 1
        c.execute(
            """INSERT INTO reports (peer_id, seq, round, tokens, samples, compute_s, wall_s, bytes_sent,
                   bytes_received, payload_bytes, val_bpb, train_loss, ok, confirmed, sent_at, received_at, blocked_s)
               VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)""",
            (r.peer_id, r.seq, r.round, r.tokens, r.samples, r.compute_s, r.wall_s, r.bytes_sent,
             r.bytes_received, r.payload_bytes, r.val_bpb, r.train_loss, int(r.ok), int(confirmed),
             r.sent_at, received_at, r.blocked_s),
        )
        ok_tokens = r.tokens if r.ok else 0
        rate = r.tokens / r.wall_s if r.ok and r.wall_s > 0 else 0.0
        c.execute(
            """UPDATE peers SET reports = reports + 1, failed_rounds = failed_rounds + ?,
                   tokens = tokens + ?, confirmed_tokens = confirmed_tokens + ?,
                   compute_s = compute_s + ?, wall_s = wall_s + ?, bytes_sent = bytes_sent + ?,
                   bytes_received = bytes_received + ?, payload_bytes = payload_bytes + ?,
                   blocked_s = blocked_s + ?, blocked_wall_s = blocked_wall_s + ?,
                   last_tokens_per_s = IIF(? > last_report_seq, ?, last_tokens_per_s),
                   last_report_seq = MAX(last_report_seq, ?)
               WHERE peer_id = ?""",
            (int(not r.ok), ok_tokens, ok_tokens if confirmed else 0, r.compute_s, r.wall_s, r.bytes_sent,
             r.bytes_received, r.payload_bytes, r.blocked_s or 0.0, r.wall_s if r.blocked_s is not None else 0.0,
             r.seq, rate, r.seq, r.peer_id),
        )
        if not r.ok:
            self._event(seen_at, "failed_round", r.peer_id, f"round {r.round}")
            return
        self._confirm_others(r)
        c.execute(
            """INSERT INTO rounds (round, reports, tokens, max_wall_s, val_sum, val_n, first_at, last_at)
               VALUES (?, 1, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (round) DO UPDATE SET
                   reports = reports + 1, tokens = tokens + excluded.tokens,
                   max_wall_s = MAX(max_wall_s, excluded.max_wall_s),
                   val_sum = val_sum + excluded.val_sum, val_n = val_n + excluded.val_n,
                   first_at = MIN(first_at, excluded.first_at), last_at = MAX(last_at, excluded.last_at)""",
            (r.round, r.tokens, r.wall_s, r.val_bpb or 0.0, int(r.val_bpb is not None), seen_at, seen_at),
        )

    def _confirm_others(self, r: ContributionReport) -> None:
        """Store what ``r`` saw its group members claim, and confirm their matching reports."""
        c = self._w
        members = {(g.peer_id, g.tokens) for g in r.group if g.peer_id != r.peer_id}
        for member, tokens in sorted(members):
            c.execute(
                "INSERT INTO group_claims (round, member, tokens, reporter, seq) VALUES (?,?,?,?,?)",
                (r.round, member, tokens, r.peer_id, r.seq),
            )
            newly = c.execute(
                """UPDATE reports SET confirmed = 1
                   WHERE peer_id = ? AND round = ? AND tokens = ? AND ok = 1 AND confirmed = 0
                   RETURNING tokens""",
                (member, r.round, tokens),
            ).fetchall()
            if newly:
                c.execute(
                    "UPDATE peers SET confirmed_tokens = confirmed_tokens + ? WHERE peer_id = ?",
                    (sum(row[0] for row in newly), member),
                )

    # --- reads (one reader thread) ------------------------------------------------------------

    def peers(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self._r.execute("SELECT * FROM peers")]

    def rounds(self, limit: int) -> list[dict[str, Any]]:
        """The latest ``limit`` rounds, oldest first."""
        rows = self._r.execute("SELECT * FROM rounds ORDER BY round DESC LIMIT ?", (limit,)).fetchall()
        return [dict(row) for row in reversed(rows)]

    def events(self, limit: int) -> list[dict[str, Any]]:
        """The latest ``limit`` events, newest first."""
        rows = self._r.execute("SELECT * FROM events ORDER BY at DESC, id DESC LIMIT ?", (limit,))
        return [dict(row) for row in rows]

    def message_keys(self) -> list[tuple[str, int]]:
        """Every (peer_id, seq) in the ledger (tests and audits)."""
        return [(row[0], row[1]) for row in self._r.execute("SELECT peer_id, seq FROM messages ORDER BY peer_id, seq")]

    def report(self, peer_id: str, seq: int) -> dict[str, Any] | None:
        row = self._r.execute("SELECT * FROM reports WHERE peer_id = ? AND seq = ?", (peer_id, seq)).fetchone()
        return None if row is None else dict(row)
