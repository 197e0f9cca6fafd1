"""The ledger: SQLite in WAL mode (a file) or PostgreSQL (a URL; ``database.py`` holds the engines and
how one text of SQL runs on both). The only module with the ledger's SQL in it.

Schema (version 9; later versions append to :data:`MIGRATIONS`, never edit a released one)::

    messages      every accepted envelope, signed: the ledger proper. PRIMARY KEY (peer_id, seq)
                  is the idempotence key; digest = sha256(envelope as received). Verbatim unless
                  ``stripped``: fields this coordinator does not know were dropped from the
                  payload (so its signature no longer verifies; the digest is the original's)
    reports       the fields of accepted ContributionReports, one row each, with ``confirmed``,
                  the sender's group size G and how many members confirm it
    group_claims  (round, member, tokens) as seen by another member of the group (reporter)
    peers         one row per peer: latest name/hardware/price/status and running totals
    rounds        per-round totals for the loss and throughput curves
    events        joins, leaves and failed rounds, for the dashboard's event list
    flags         (peer, reason, round, reporter): signed accusations against a peer: a validator's
                  failed spot check (``SpotCheckVerdict``, reason "spot_check"; issue 11 item 4);
                  a quorum of distinct reporters sets ``reports.flagged``: no confirmation, no credit.
                  A verdict is kept in ``messages`` like any envelope; a passing one writes no flag

Version 2 added ``reports.blocked_s`` and ``peers.blocked_s`` / ``peers.blocked_wall_s``; version 3
``reports.standby`` and the ``budget_changes`` and ``plans`` tables (the cost plan, ``plans.py``); version 4
``peers.software_version``, ``peers.role``, ``peers.reachability`` (from heartbeats). Version 5 (issue 11)
added ``messages.stripped``, ``reports.group_size`` / ``confirmers`` / ``flagged`` and ``flags``;
version 6 (issue 11) ``outliers``: reducers' outlier reports, one row per (round, reducer, member),
which ``outliers.py`` turns into the dashboard's pattern flag (2 reducers in each of 3 rounds).
``flags`` is the per-round verdict table (a quorum of reporters takes that round's credit away);
outlier reports do not write it, because an honest node is an outlier now and then (outliers.py).
Version 7 (issue 14) added ``reports.state_hash`` (attribution certificates name checkpoints by it);
version 8 (issue 13) ``peers.online_s``: time heard from, gaps over ``online_gap_s`` left out (uptime);
version 9 (issue 22) ``outliers.dissent``: the member was named for what it claimed in the agreement.

Checks that need the ledger run here, in the writer's transaction: seq increasing per peer
(``seq_rollback``) and not too far past its last one (``seq_out_of_window``,
``ledger.check_seq_window``), the round window around the run's current round (the highest round with a
confirmed claim; ``round_out_of_window``) and one claim per (peer, round) (``round_claimed``).

Totals in ``peers`` and ``rounds`` are maintained in the same transaction as the insert, so a
snapshot costs O(peers + rounds) whatever the number of reports. Confirmation (the rule is
``ledger.cross_check``) is re-settled at insert for the new claim and for every member its
group lists; it only ever goes from unconfirmed to confirmed.

Threading: one connection writes and one reads (WAL lets them run concurrently); each is used
from a single dedicated thread by its owner (``ingest.Ingestor`` and ``hub.Hub``).
``synchronous=FULL`` (SQLite; PostgreSQL's default ``synchronous_commit=on``): a commit is on disk
before ``apply`` returns, so the acknowledgement that follows it never promises more than the disk holds.
Several coordinators may write one PostgreSQL ledger: write transactions are serialised there
(``database.WRITE_LOCK``) and each re-reads the run's current round, so the checks see every commit.
"""
from __future__ import annotations

import logging
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol import ContributionReport, Heartbeat, OutlierReport, SpotCheckVerdict

from .database import DATABASE_ERRORS, Connection, Database
from .ledger import (
    Reject, check_seq_window, classify_replay, clean_text, device_label, display_name, group_size, needed_confirmations,
)

__all__ = ["MIGRATIONS", "SPOT_CHECK_FLAG", "Incoming", "StorageFailure", "Store"]

logger = logging.getLogger(__name__)
INT64_MAX = 2**63 - 1
SPOT_CHECK_FLAG = "spot_check"  # flags.reason of validators' failed verdicts (whatever the verdict's own reason)
_PLAN_FIGURES = ("made_at", "round", "cap_usd_per_hour", "planned_burn", "ledger_burn", "spent_usd", "usd_to_target",
                 "usd_to_target_low", "usd_to_target_high", "standby")  # plans' columns besides seq and the envelope
# peers' columns a message sets only if it is the peer's newest (upsert: the stored row's last_seq is older)
_NEWEST_WINS_SQL = ",\n".join(
    f"{col} = CASE WHEN excluded.last_seq > peers.last_seq THEN excluded.{col} ELSE peers.{col} END"
    for col in ("public_name", "last_status", "device", "device_count", "memory_gb", "declared_price"))

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
    # version 3: the cost plan (plans.py). ``reports.standby``: the round was trained while the signed
    # plan had the peer on standby: stored, never confirmed, never billed. ``budget_changes``: every
    # operator change, verbatim and signed. ``plans``: every plan made, with the figures the dashboard
    # draws over time (the ledger's burn and spend when it was made, the cap, the forecast).
    """
    ALTER TABLE reports ADD COLUMN standby INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE budget_changes (
        seq INTEGER PRIMARY KEY, at REAL NOT NULL, cap_usd_per_hour REAL, total_usd REAL, deadline REAL,
        target_tokens INTEGER, envelope BLOB NOT NULL
    );
    CREATE TABLE plans (
        seq INTEGER PRIMARY KEY, made_at REAL NOT NULL, round INTEGER NOT NULL,
        cap_usd_per_hour REAL, planned_burn REAL NOT NULL, ledger_burn REAL NOT NULL, spent_usd REAL NOT NULL,
        usd_to_target REAL, usd_to_target_low REAL, usd_to_target_high REAL, standby INTEGER NOT NULL,
        envelope BLOB NOT NULL
    );
    """,
    # version 4: what a node's latest heartbeat said of itself (Heartbeat fields appended after
    # protocol v1): its software release, its role and whether it found itself reachable.
    # '' = the node did not say (an older node).
    """
    ALTER TABLE peers ADD COLUMN software_version TEXT NOT NULL DEFAULT '';
    ALTER TABLE peers ADD COLUMN role TEXT NOT NULL DEFAULT '';
    ALTER TABLE peers ADD COLUMN reachability TEXT NOT NULL DEFAULT '';
    """,
    # version 5 (issue 11): confirmations two keys cannot fake, unknown fields dropped, flags.
    # Existing claims keep their ``confirmed`` (no downgrade); G is rebuilt from their claims.
    """
    ALTER TABLE messages ADD COLUMN stripped INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE reports ADD COLUMN group_size INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE reports ADD COLUMN confirmers INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE reports ADD COLUMN flagged INTEGER NOT NULL DEFAULT 0;
    UPDATE reports SET group_size = 1 + (
        SELECT COUNT(DISTINCT member) FROM group_claims g
        WHERE g.round = reports.round AND g.reporter = reports.peer_id AND g.seq = reports.seq
    ) WHERE ok = 1;
    CREATE INDEX reports_confirmed_round ON reports (round) WHERE confirmed = 1;
    CREATE INDEX group_claims_by_reporter ON group_claims (round, reporter, member);
    CREATE TABLE flags (
        peer_id TEXT NOT NULL, reason TEXT NOT NULL, round INTEGER NOT NULL, reporter TEXT NOT NULL,
        at REAL NOT NULL, detail TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (peer_id, reason, round, reporter)
    ) WITHOUT ROWID;
    """,
    # version 6 (issue 11): reducers' outlier reports (protocol OutlierReport; coordinator/outliers.py flags
    # a member that >= 2 distinct reducers reported in one round). One row per (round, reducer, member).
    """
    CREATE TABLE outliers (
        round INTEGER NOT NULL, reducer TEXT NOT NULL, member TEXT NOT NULL,
        max_ratio REAL NOT NULL, min_ratio REAL NOT NULL, clipped REAL NOT NULL, seq INTEGER NOT NULL,
        PRIMARY KEY (round, reducer, member)
    ) WITHOUT ROWID;
    CREATE INDEX outliers_by_member ON outliers (member, round);
    """,
    # version 7 (issue 14): the global state hash each ok report says its round produced
    # (ContributionReport.state_hash, appended after protocol v1; '' = not reported), so an
    # attribution certificate names only a checkpoint the swarm reported reaching
    """
    ALTER TABLE reports ADD COLUMN state_hash TEXT NOT NULL DEFAULT '';
    CREATE INDEX reports_by_state_hash ON reports (state_hash) WHERE state_hash <> '';
    """,
    # version 8 (issue 13): seconds the peer was heard from without a silence longer than the
    # stale threshold (``online_gap_s``), so the planner's uptime is online_s / (last_seen - first_seen)
    """
    ALTER TABLE peers ADD COLUMN online_s REAL NOT NULL DEFAULT 0;
    UPDATE peers SET online_s = last_seen - first_seen;  -- older ledgers did not count: assume always online
    """,
    # version 9 (issue 22): an outlier row that names a member for claiming, in the agreement on failed
    # reducers, failures no other member saw (MemberOutlier.dissent; node/policies/agreement.py)
    """
    ALTER TABLE outliers ADD COLUMN dissent INTEGER NOT NULL DEFAULT 0;
    """,
]


@dataclass(frozen=True)
class Incoming:
    """A verified, checked message on its way into the ledger."""

    envelope: bytes  # what the ledger keeps: the bytes received, or them less unknown fields
    digest: bytes  # sha256 of the envelope as received (the idempotence check)
    message: ContributionReport | Heartbeat | OutlierReport | SpotCheckVerdict
    received_at: float
    standby: bool = False  # a report of a round trained while the plan had the peer on standby
    stripped: bool = False  # unknown payload fields were dropped from ``envelope``


class StorageFailure(Exception):
    """This one item could not be written (its batch went on without it); the sender retries."""


Outcome = str | Reject | StorageFailure  # "accepted" | "duplicate" | a Reject | a StorageFailure
# OverflowError: an int SQLite cannot hold (PostgreSQL says so with a DataError, one of DATABASE_ERRORS)
_WRITE_ERRORS: tuple[type[BaseException], ...] = (*DATABASE_ERRORS, OverflowError, ValueError)


def _text(value: str, limit: int = 200) -> str:
    """Peer-supplied free text as the ledger keeps it outside the envelope (which stays verbatim):
    ``ledger.clean_text``, so both engines hold the same row (PostgreSQL refuses a NUL in text, which
    would have made one hostile heartbeat a storage failure its sender retries for ever)."""
    return clean_text(value, limit)


class Store:
    """The ledger, on SQLite or PostgreSQL (``database.py``). ``apply`` from one thread, the read
    methods from one other."""

    def __init__(
        self,
        target: str | Path,
        *,
        migrations: Sequence[str] = MIGRATIONS,
        round_lead: int = 1000,
        round_lag: int = 1_000_000,
        start_round: int = 0,
        flag_quorum: int = 2,
        online_gap_s: float = 90.0,
        seq_window: int = 2**20,
        seq_per_s: float = 2.0,
    ) -> None:
        self.db = Database(target)
        self.path = self.db.path  # the SQLite file; None on PostgreSQL
        self._closed = False
        self.round_lead, self.round_lag, self.start_round = round_lead, round_lag, start_round
        self.flag_quorum = flag_quorum
        self.seq_window, self.seq_per_s = seq_window, seq_per_s  # ledger.check_seq_window
        self.online_gap_s = online_gap_s  # a longer silence was time offline (coordinator.states' stale_after_s)
        self._counts_online = len(migrations) >= 8
        self._w = self.db.connect()
        self._migrate(migrations)
        self._r = self.db.connect(readonly=True)
        self._leadership = self.db.leadership()
        self._tracks_round = len(migrations) >= 5
        self._current = self._load_current_round(self._w) if self._tracks_round else start_round

    # --- schema -------------------------------------------------------------------------------

    def _migrate(self, migrations: Sequence[str]) -> None:
        current = self.schema_version
        if current > len(migrations):
            raise RuntimeError(
                f"ledger {self.path} has schema version {current}, newer than this coordinator's {len(migrations)}"
            )
        for version, script in enumerate(migrations[current:], start=current + 1):
            if self._w.migrate(version, script):  # False: another coordinator on the server got there first
                logger.info("migrated ledger %s to schema version %d", self.db, version)

    def _load_current_round(self, conn: Connection) -> int:
        row = conn.execute("SELECT MAX(round) FROM reports WHERE confirmed = 1").fetchone()
        return max(self.start_round, row[0] if row and row[0] is not None else 0)

    @property
    def current_round(self) -> int:
        """The run's current round: the highest with a confirmed claim (writer's view)."""
        return self._current

    @property
    def schema_version(self) -> int:
        return self._w.schema_version()

    @property
    def engine(self) -> str:
        return self._w.engine

    @property
    def journal_mode(self) -> str:
        return self._w.journal_mode()

    @property
    def is_open(self) -> bool:
        """Open and (SQLite) its file still on disk (readiness; touches neither connection's thread)."""
        return not self._closed and self.db.exists()

    def lead(self) -> bool:
        """Whether this coordinator is the one that plans and signs (``database.Leadership``; reader thread)."""
        return self._leadership.held()

    def close(self) -> None:
        self._closed = True
        self._leadership.release()
        self._r.close()
        self._w.close()

    # --- writes -------------------------------------------------------------------------------

    def apply(self, items: Sequence[Incoming]) -> list[Outcome]:
        """Store ``items`` in one transaction; return one outcome per item, in order.

        If the batch fails as a whole, each item is retried in its own transaction so that one
        bad item cannot hold the others back; an item that still fails gets a
        :class:`StorageFailure` outcome (its sender retries), and the others their own outcomes.
        """
        try:
            return self._transaction(items)
        except _WRITE_ERRORS as e:
            if len(items) == 1:
                logger.error("could not store %s/%d: %s", items[0].message.peer_id, items[0].message.seq, e)
                return [StorageFailure(str(e))]
            logger.warning("batch of %d failed (%s); applying items one by one", len(items), e)
        return [self._transaction_or_failure(item) for item in items]

    def _transaction_or_failure(self, item: Incoming) -> Outcome:
        try:
            return self._transaction([item])[0]
        except _WRITE_ERRORS as e:
            logger.error("could not store %s/%d: %s", item.message.peer_id, item.message.seq, e)
            return StorageFailure(str(e))

    def _transaction(self, items: Sequence[Incoming]) -> list[Outcome]:
        c = self._w
        c.begin()
        try:
            if self._tracks_round:  # another coordinator on the same server may have confirmed rounds
                self._current = self._load_current_round(c)
            outcomes = [self._apply_one(item) for item in items]
            c.commit()
        except BaseException:
            c.rollback()
            self._current = self._load_current_round(c)  # confirmations of the batch are gone too
            raise
        return outcomes

    def _apply_one(self, item: Incoming) -> Outcome:
        c, m = self._w, item.message
        row = c.execute("SELECT digest FROM messages WHERE peer_id = ? AND seq = ?", (m.peer_id, m.seq)).fetchone()
        try:
            if classify_replay(None if row is None else bytes(row[0]), item.digest) == "duplicate":
                return "duplicate"
        except Reject as replayed:
            replayed.peer_id = m.peer_id
            return replayed
        rejection = self._check_order(m, item.received_at)
        if rejection is not None:
            return rejection
        kind = type(m).KIND
        c.execute(
            "INSERT INTO messages (peer_id, seq, kind, sent_at, received_at, digest, envelope, stripped)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (m.peer_id, m.seq, kind, m.sent_at, item.received_at, item.digest, item.envelope, int(item.stripped)),
        )
        if isinstance(m, OutlierReport):  # about other peers: no peer row of its own to update
            self._insert_outliers(m)
            return "accepted"
        if isinstance(m, SpotCheckVerdict):  # the envelope above is the record; a failure is also a flag
            if not m.passed:
                detail = f"{m.reason}: gain {m.gain:.4g} (random {m.random_gain:.4g}, z {m.z:.2f}) nats, {m.windows} windows"
                self.add_flag(m.subject, SPOT_CHECK_FLAG, m.round, m.peer_id, item.received_at, detail)
            return "accepted"
        seen_at = min(m.sent_at, item.received_at)  # a peer's clock may run ahead, never beyond receipt
        self._pause_events(m, seen_at)
        self._upsert_peer(m, seen_at)
        if isinstance(m, ContributionReport):
            self._insert_report(m, item.received_at, seen_at, item.standby)
        elif m.status == "leaving":
            self._event(seen_at, "leave", m.peer_id, "said it is leaving")
        return "accepted"

    def _pause_events(self, m: ContributionReport | Heartbeat, seen_at: float) -> None:
        """A "pause" event (with the node's reason) when a newer message says paused, "resume" when it no longer does."""
        prev = self._w.execute("SELECT last_status, last_seq FROM peers WHERE peer_id = ?", (m.peer_id,)).fetchone()
        if prev is None or m.seq <= prev[1]:
            return
        paused = isinstance(m, Heartbeat) and m.status == "paused"
        if isinstance(m, Heartbeat) and paused and prev[0] != "paused":
            self._event(seen_at, "pause", m.peer_id, m.reason)
        elif prev[0] == "paused" and not paused and not (isinstance(m, Heartbeat) and m.status == "leaving"):
            self._event(seen_at, "resume", m.peer_id)

    def _check_order(self, m: ContributionReport | Heartbeat | OutlierReport | SpotCheckVerdict,
                     now: float) -> Reject | None:
        """seq increasing per peer (reports and heartbeats: an outlier report or a verdict may be sent
        after a later message of its sender, and its rows are idempotent anyway), seq within the window
        past the peer's last one (every kind), the round window, one claim per (peer, round)."""
        c = self._w
        row = c.execute("SELECT last_seq, last_seen FROM peers WHERE peer_id = ?", (m.peer_id,)).fetchone()
        if row is not None and m.seq <= row[0] and not isinstance(m, (OutlierReport, SpotCheckVerdict)):
            return Reject("seq_rollback", f"seq {m.seq} is not above {row[0]}, already used by this peer", m.peer_id)
        try:
            check_seq_window(m.seq, None if row is None else row[0], None if row is None else row[1], now,
                             window=self.seq_window, per_s=self.seq_per_s, peer_id=m.peer_id)
        except Reject as rejection:
            return rejection
        low, high = self._current - self.round_lag, self._current + self.round_lead
        if not low <= m.round <= high:
            return Reject(
                "round_out_of_window", f"round must be {max(low, 0)}..{high} (the run is at {self._current})", m.peer_id
            )
        if isinstance(m, ContributionReport) and m.ok and c.execute(
            "SELECT 1 FROM reports WHERE peer_id = ? AND round = ? AND ok = 1 LIMIT 1", (m.peer_id, m.round)
        ).fetchone():
            return Reject("round_claimed", f"round {m.round} was already claimed by this peer", m.peer_id)
        return None

    def _event(self, at: float, kind: str, peer_id: str, detail: str = "") -> None:
        self._w.execute("INSERT INTO events (at, kind, peer_id, detail) VALUES (?,?,?,?)",
                        (at, kind, peer_id, _text(detail)))

    def _upsert_peer(self, m: ContributionReport | Heartbeat, seen_at: float) -> None:
        c = self._w
        before = c.execute("SELECT last_seen FROM peers WHERE peer_id = ?", (m.peer_id,)).fetchone()
        is_new = before is None
        status = m.status if isinstance(m, Heartbeat) else "training"
        hw = m.hardware
        # SET expressions see the old row, so "newer" compares against the stored last_seq
        c.execute(
            f"""
            INSERT INTO peers (peer_id, public_name, first_seen, last_seen, last_seq, last_status,
                               device, device_count, memory_gb, declared_price, last_round)
            VALUES (?,?,?,?,?,?,?,?,?,?,?)
            ON CONFLICT (peer_id) DO UPDATE SET
                first_seen = LEAST(peers.first_seen, excluded.first_seen),
                last_seen = GREATEST(peers.last_seen, excluded.last_seen),
                {_NEWEST_WINS_SQL},
                last_round = GREATEST(peers.last_round, excluded.last_round),
                last_seq = GREATEST(peers.last_seq, excluded.last_seq)
            """,
            (m.peer_id, display_name(m.public_name, m.peer_id), seen_at, seen_at, m.seq, status,
             device_label(hw.device), hw.count, hw.memory_gb, m.price_per_hour, m.round),
        )
        gap = seen_at - before[0] if before is not None else 0.0
        if self._counts_online and 0.0 < gap <= self.online_gap_s:  # a longer silence was time offline
            c.execute("UPDATE peers SET online_s = online_s + ? WHERE peer_id = ?", (gap, m.peer_id))
        if is_new:
            self._event(seen_at, "join", m.peer_id, device_label(hw.device))
        if isinstance(m, Heartbeat):
            c.execute(
                "UPDATE peers SET tokens_total_heartbeat = GREATEST(tokens_total_heartbeat, ?) WHERE peer_id = ?",
                (m.tokens_total, m.peer_id),
            )
            # what the node says of itself, from its newest heartbeat (last_seq was just raised to it)
            c.execute(
                """UPDATE peers SET software_version = ?, role = ?, reachability = ?
                   WHERE peer_id = ? AND last_seq = ?""",
                (_text(m.software_version), _text(m.role), _text(m.reachability), m.peer_id, m.seq),
            )

    def _insert_report(self, r: ContributionReport, received_at: float, seen_at: float, standby: bool = False) -> None:
        c = self._w
        flagged = int(c.execute(  # flags may arrive before the claim they are about (a bool on PostgreSQL)
            """SELECT EXISTS (SELECT 1 FROM flags WHERE peer_id = ? AND round = ?
                              GROUP BY reason HAVING COUNT(DISTINCT reporter) >= ?)""",
            (r.peer_id, r.round, self.flag_quorum),
        ).fetchone()[0])
        c.execute(  # confirmed later, in _settle, once enough group members agree (never while standby)
            """INSERT INTO reports (peer_id, seq, round, tokens, samples, compute_s, wall_s, bytes_sent,
                   bytes_received, payload_bytes, val_bpb, train_loss, ok, confirmed, sent_at, received_at, blocked_s,
                   standby, group_size, flagged, state_hash)
               VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,0,?,?,?,?,?,?,?)""",
            (r.peer_id, r.seq, r.round, r.tokens, r.samples, r.compute_s, r.wall_s, r.bytes_sent,
             r.bytes_received, r.payload_bytes, r.val_bpb, r.train_loss, int(r.ok),
             r.sent_at, received_at, r.blocked_s, int(standby), group_size(r), flagged, _text(r.state_hash) if r.ok else ""),
        )
        billed_s = 0.0 if standby else r.wall_s  # the organizer does not pay for work it asked not to be done
        ok_tokens = r.tokens if r.ok else 0
        rate = r.tokens / r.wall_s if r.ok and r.wall_s > 0 else 0.0
        c.execute(
            """UPDATE peers SET reports = reports + 1, failed_rounds = failed_rounds + ?,
                   tokens = tokens + ?, confirmed_tokens = confirmed_tokens + ?,
                   compute_s = compute_s + ?, wall_s = wall_s + ?, bytes_sent = bytes_sent + ?,
                   bytes_received = bytes_received + ?, payload_bytes = payload_bytes + ?,
                   blocked_s = blocked_s + ?, blocked_wall_s = blocked_wall_s + ?,
                   last_tokens_per_s = CASE WHEN ? > last_report_seq THEN ? ELSE last_tokens_per_s END,
                   last_report_seq = GREATEST(last_report_seq, ?)
               WHERE peer_id = ?""",
            (int(not r.ok), ok_tokens, 0, r.compute_s, billed_s, r.bytes_sent,
             r.bytes_received, r.payload_bytes, r.blocked_s or 0.0, r.wall_s if r.blocked_s is not None else 0.0,
             r.seq, rate, r.seq, r.peer_id),
        )
        if standby:
            self._event(seen_at, "standby_work", r.peer_id, f"round {r.round} trained on standby: not credited")
        if not r.ok:
            self._event(seen_at, "failed_round", r.peer_id, f"round {r.round}")
            return
        self._confirm_others(r)
        c.execute(
            """INSERT INTO rounds (round, reports, tokens, max_wall_s, val_sum, val_n, first_at, last_at)
               VALUES (?, 1, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (round) DO UPDATE SET
                   reports = rounds.reports + 1, tokens = rounds.tokens + excluded.tokens,
                   max_wall_s = GREATEST(rounds.max_wall_s, excluded.max_wall_s),
                   val_sum = rounds.val_sum + excluded.val_sum, val_n = rounds.val_n + excluded.val_n,
                   first_at = LEAST(rounds.first_at, excluded.first_at), last_at = GREATEST(rounds.last_at, excluded.last_at)""",
            (r.round, r.tokens, r.wall_s, r.val_bpb or 0.0, int(r.val_bpb is not None), seen_at, seen_at),
        )

    def _confirm_others(self, r: ContributionReport) -> None:
        """Store what ``r`` saw its group members claim, then settle ``r`` and those members."""
        c = self._w
        members = {(g.peer_id, g.tokens) for g in r.group if g.peer_id != r.peer_id}
        for member, tokens in sorted(members):
            c.execute(
                "INSERT INTO group_claims (round, member, tokens, reporter, seq) VALUES (?,?,?,?,?)",
                (r.round, member, tokens, r.peer_id, r.seq),
            )
        for peer in sorted({r.peer_id} | {member for member, _ in members}):
            self._settle(peer, r.round)

    def _settle(self, peer: str, rnd: int) -> None:
        """Confirm ``peer``'s claim for ``rnd`` once k distinct members of its group agree."""
        c = self._w
        claims = c.execute(
            "SELECT seq, tokens, group_size FROM reports"
            " WHERE peer_id = ? AND round = ? AND ok = 1 AND confirmed = 0 AND flagged = 0 AND standby = 0",
            (peer, rnd),
        ).fetchall()
        for seq, tokens, size in claims:
            # members who saw this claim, counted only if the claimant saw them in its group too
            confirmers = c.execute(
                """SELECT COUNT(DISTINCT seen.reporter) FROM group_claims seen
                   WHERE seen.round = ? AND seen.member = ? AND seen.tokens = ? AND seen.reporter <> ?
                     AND EXISTS (SELECT 1 FROM group_claims mine
                                 WHERE mine.round = seen.round AND mine.reporter = ? AND mine.member = seen.reporter)""",
                (rnd, peer, tokens, peer, peer),
            ).fetchone()[0]
            k = needed_confirmations(size)
            confirmed = k is not None and confirmers >= k
            c.execute("UPDATE reports SET confirmers = ?, confirmed = ? WHERE peer_id = ? AND seq = ?",
                      (confirmers, int(confirmed), peer, seq))
            if confirmed:
                c.execute("UPDATE peers SET confirmed_tokens = confirmed_tokens + ? WHERE peer_id = ?", (tokens, peer))
                self._current = max(self._current, rnd)

    # --- flags (issue 11 items 3-4: reducers' outlier reports, validators' verdicts) ------------

    def add_flag(
        self, peer_id: str, reason: str, rnd: int, reporter: str, at: float, detail: str = "",
    ) -> bool:
        """Record that ``reporter`` flagged ``peer_id`` for ``reason`` in round ``rnd``; False if it
        already had. Once ``flag_quorum`` distinct reporters flagged the same (peer, round, reason), that
        claim is *flagged*: it loses its confirmation (and the peer its credit for it) and can never
        be confirmed again. Call from the writer thread, inside ``apply`` (a new message kind's branch
        of ``_apply_one``), so that the flag and its effect commit together."""
        c = self._w
        cur = c.execute(
            "INSERT INTO flags (peer_id, reason, round, reporter, at, detail) VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING",
            (peer_id, reason, rnd, reporter, at, _text(detail)),
        )
        if cur.rowcount != 1:
            return False
        reporters = c.execute(
            "SELECT COUNT(DISTINCT reporter) FROM flags WHERE peer_id = ? AND round = ? AND reason = ?", (peer_id, rnd, reason),
        ).fetchone()[0]
        if reporters >= self.flag_quorum:
            unconfirmed = c.execute(
                "SELECT COALESCE(SUM(tokens), 0) FROM reports WHERE peer_id = ? AND round = ? AND ok = 1 AND confirmed = 1",
                (peer_id, rnd),
            ).fetchone()[0]
            c.execute("UPDATE reports SET flagged = 1, confirmed = 0 WHERE peer_id = ? AND round = ? AND ok = 1", (peer_id, rnd))
            c.execute("UPDATE peers SET confirmed_tokens = confirmed_tokens - ? WHERE peer_id = ?", (unconfirmed, peer_id))
        return True

    def flags(self) -> dict[str, dict[str, int]]:
        """peer id -> reason -> distinct reporters that flagged it (reader thread)."""
        out: dict[str, dict[str, int]] = {}
        rows = self._r.execute("SELECT peer_id, reason, COUNT(DISTINCT reporter) FROM flags GROUP BY peer_id, reason")
        for peer_id, reason, reporters in rows:
            out.setdefault(peer_id, {})[reason] = reporters
        return out

    def confirmed_round(self) -> int | None:
        """The highest round with a confirmed claim, as the reader sees it; None before any."""
        row = self._r.execute("SELECT MAX(round) FROM reports WHERE confirmed = 1").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    # --- the cost plan (writes on the writer thread) ---------------------------------------------

    def save_budget_change(self, seq: int, at: float, fields: dict[str, Any], envelope: bytes, detail: str) -> None:
        c = self._w
        c.begin()
        try:
            c.execute(
                """INSERT INTO budget_changes (seq, at, cap_usd_per_hour, total_usd, deadline, target_tokens, envelope)
                   VALUES (?,?,?,?,?,?,?)""",
                (seq, at, fields.get("cap_usd_per_hour"), fields.get("total_usd"), fields.get("deadline"),
                 fields.get("target_tokens"), envelope),
            )
            self._event(at, "budget", "", detail)
            c.commit()
        except BaseException:
            c.rollback()
            raise

    def save_plan(self, row: dict[str, Any], envelope: bytes, changes: Sequence[tuple[str, str, str]]) -> None:
        """One plan and an event for every peer whose state it changed: (peer, "active"|"standby", why)."""
        c = self._w
        c.begin()
        try:
            c.execute(
                f"""INSERT INTO plans (seq, {", ".join(_PLAN_FIGURES)}, envelope)
                    VALUES (:seq, {", ".join(":" + f for f in _PLAN_FIGURES)}, :envelope)
                    ON CONFLICT (seq) DO UPDATE SET {", ".join(f"{f} = excluded.{f}" for f in (*_PLAN_FIGURES, "envelope"))}""",
                {**row, "envelope": envelope},
            )
            for peer_id, state, why in changes:
                self._event(row["made_at"], state, peer_id, why)
            c.commit()
        except BaseException:
            c.rollback()
            raise

    def budget_changes(self, after_seq: int = 0) -> list[dict[str, Any]]:
        """Budget changes past ``after_seq``, oldest first (at start-up, then by each snapshot build: another
        coordinator on the same server may have taken one)."""
        rows = self._r.execute("SELECT * FROM budget_changes WHERE seq > ? ORDER BY seq", (after_seq,))
        return [dict(row) for row in rows]

    def last_plan_envelope(self, newer_than: int = 0) -> bytes | None:
        """The newest plan's envelope, if its seq is above ``newer_than`` (each snapshot build asks: the
        blob is read only when another coordinator made a newer plan)."""
        row = self._r.execute("SELECT envelope FROM plans WHERE seq > ? ORDER BY seq DESC LIMIT 1", (newer_than,)).fetchone()
        return None if row is None else bytes(row[0])

    def _insert_outliers(self, m: OutlierReport) -> None:
        self._w.executemany(
            "INSERT INTO outliers (round, reducer, member, max_ratio, min_ratio, clipped, seq, dissent)"
            " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
            [
                (m.round, m.peer_id, o.peer_id, o.max_ratio, o.min_ratio, o.clipped, m.seq, int(o.dissent))
                for o in m.outliers
                if o.peer_id != m.peer_id
            ],
        )

    # --- reads (one reader thread) ------------------------------------------------------------

    def plans(self, limit: int) -> list[dict[str, Any]]:
        """The latest ``limit`` plans' figures, oldest first (no envelopes)."""
        rows = self._r.execute(
            f"SELECT seq, {', '.join(_PLAN_FIGURES)} FROM plans ORDER BY seq DESC LIMIT ?", (limit,),
        ).fetchall()
        return [dict(row) for row in reversed(rows)]

    def outlier_rows(self) -> list[dict[str, Any]]:
        """Outlier reports of (member, round)s at least two reducers named (the input of ``outliers.flags``)."""
        rows = self._r.execute(
            """SELECT member, round, reducer, max_ratio, min_ratio, dissent FROM outliers
               WHERE (member, round) IN (SELECT member, round FROM outliers GROUP BY member, round
                                         HAVING COUNT(DISTINCT reducer) >= 2)"""
        )
        return [dict(row) for row in rows]

    def peers(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self._r.execute("SELECT * FROM peers")]

    def link_rates(self, peer_ids: Iterable[str], window: int = 8) -> dict[str, float]:
        """Each peer's link speed for the planner: the median, over its latest ``window`` reports that
        moved bytes, of bytes sent per second of network wait. A median of recent rounds, not the
        lifetime sums: a joining round (state download, matchmaking) or a resync must not set a peer's
        speed for good. Peers with no such report are left out. One indexed query per peer (pipelined
        on PostgreSQL: 10,000 peers cost one round trip, not 10,000)."""
        ids = list(peer_ids)
        answers = self._r.fetch_each(
            "SELECT bytes_sent, blocked_s FROM reports WHERE peer_id = ? AND bytes_sent > 0 AND blocked_s > 0 "
            "ORDER BY seq DESC LIMIT ?", [(peer_id, window) for peer_id in ids])
        return {peer_id: statistics.median(sent / blocked for sent, blocked in rows)
                for peer_id, rows in zip(ids, answers) if rows}

    def rounds(self, limit: int, up_to: int | None = None) -> list[dict[str, Any]]:
        """The latest ``limit`` rounds (none past ``up_to``), oldest first."""
        rows = self._r.execute(
            "SELECT * FROM rounds WHERE round <= ? ORDER BY round DESC LIMIT ?",
            (INT64_MAX if up_to is None else up_to, limit),
        ).fetchall()
        return [dict(row) for row in reversed(rows)]

    def events(self, limit: int) -> list[dict[str, Any]]:
        """The latest ``limit`` events, newest first."""
        rows = self._r.execute("SELECT * FROM events ORDER BY at DESC, id DESC LIMIT ?", (limit,))
        return [dict(row) for row in rows]

    def message_keys(self) -> list[tuple[str, int]]:
        """Every (peer_id, seq) in the ledger (tests and audits)."""
        return [(row[0], row[1]) for row in self._r.execute("SELECT peer_id, seq FROM messages ORDER BY peer_id, seq")]

    def state_rounds(self, state_hash: str = "") -> list[dict[str, Any]]:
        """Reported state hashes of ok reports with their round and how many peers reported each:
        those of ``state_hash`` (every round it was reported at), else those of the newest round that has any."""
        where = "state_hash = ?" if state_hash else \
            "round = (SELECT MAX(round) FROM reports WHERE ok = 1 AND state_hash <> '') AND state_hash <> ''"
        rows = self._r.execute(
            f"""SELECT round, state_hash, COUNT(DISTINCT peer_id) AS peers FROM reports
                WHERE ok = 1 AND {where} GROUP BY round, state_hash""", (state_hash,) if state_hash else ()).fetchall()
        return [dict(row) for row in rows]

    def round_hashes(self, round_: int) -> dict[str, int]:
        """state hash -> distinct peers that reported it for ``round_`` (ok reports)."""
        rows = self._r.execute(
            """SELECT state_hash, COUNT(DISTINCT peer_id) FROM reports
               WHERE ok = 1 AND round = ? AND state_hash <> '' GROUP BY state_hash""", (round_,))
        return {row[0]: row[1] for row in rows}

    def credits(self, until_round: int) -> list[dict[str, Any]]:
        """Per peer, its ok reports of rounds <= ``until_round``: tokens, confirmed tokens, wall seconds."""
        rows = self._r.execute(
            """SELECT r.peer_id, p.public_name, p.device, p.device_count,
                      SUM(r.tokens) AS tokens, SUM(CASE WHEN r.confirmed = 1 THEN r.tokens ELSE 0 END) AS confirmed_tokens,
                      SUM(r.wall_s) AS wall_s
               FROM reports r JOIN peers p ON p.peer_id = r.peer_id
               WHERE r.ok = 1 AND r.round <= ? GROUP BY r.peer_id, p.public_name, p.device, p.device_count""",
            (until_round,))
        return [dict(row) for row in rows]

    def report(self, peer_id: str, seq: int) -> dict[str, Any] | None:
        row = self._r.execute("SELECT * FROM reports WHERE peer_id = ? AND seq = ?", (peer_id, seq)).fetchone()
        return None if row is None else dict(row)
