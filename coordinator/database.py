"""The ledger's two engines behind one connection shape: SQLite (a file; the default, nothing to set
up) and PostgreSQL (a ``postgresql://`` URL; a server the operator runs, shared by coordinators).

``store.py`` writes its SQL once, in what both engines run: ``?`` and ``:name`` placeholders,
``CASE``, ``GREATEST``/``LEAST`` (SQLite gets them as functions here), ``INSERT ... ON CONFLICT``,
partial indexes, upserts whose existing-row columns are qualified by the table's name (PostgreSQL
calls a bare one ambiguous). Schema scripts are written once in SQLite's types and translated by
:func:`ddl_for_postgres`, so the two engines can never drift apart:

- ``INTEGER`` -> ``BIGINT``: sequence numbers, tokens and bytes pass 2**31 (PostgreSQL's INTEGER);
- ``REAL`` -> ``DOUBLE PRECISION``: PostgreSQL's REAL is 4 bytes, SQLite's 8;
- ``BLOB`` -> ``BYTEA``; ``INTEGER PRIMARY KEY AUTOINCREMENT`` -> ``BIGSERIAL PRIMARY KEY``;
  ``WITHOUT ROWID`` (a SQLite storage hint) is dropped.

Writers are serialised as SQLite's ``BEGIN IMMEDIATE`` does, on PostgreSQL by a transaction-level
advisory lock (:data:`WRITE_LOCK`) taken first thing in every write transaction: the ledger's
checks (seq increasing, one claim per round, confirmation) read and then write, and two coordinators
ingesting at once must see each other's commits before they decide. The schema version lives in
``PRAGMA user_version`` on SQLite and in the one-row table ``capaswarm_schema`` on PostgreSQL.

Of several coordinators on one server, one at a time makes and signs plans: the one holding the session
advisory lock :data:`PLANNER_LOCK` (:meth:`Database.leadership`). A coordinator that dies (kill -9 too)
closes its connection, the server ends its session and the lock is free for the next one that asks;
one that stays alive holds it (a hung coordinator is the operator's liveness probe to restart).

Each coordinator holds two connections (a writer for the ingest thread, a reader for the hub's), each
used by one thread only: that is the pool, sized to the two threads that touch the ledger; a broken
PostgreSQL connection is opened again at the next transaction or read. psycopg (3) is imported only
when a URL is given, so a SQLite coordinator needs nothing more.
"""
from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DATABASE_ERRORS", "PLANNER_LOCK", "WRITE_LOCK", "Connection", "Database", "Leadership", "ddl_for_postgres",
    "describe", "is_url", "ledger_target",
]

WRITE_LOCK = 0x636170617377  # pg_advisory_xact_lock key of the ledger's writers ("capasw")
PLANNER_LOCK = 0x63617061706C  # pg_try_advisory_lock key of the one coordinator that plans and signs ("capapl")


def _database_errors() -> tuple[type[BaseException], ...]:
    try:
        import psycopg
    except ImportError:  # a SQLite-only install
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg.Error)


DATABASE_ERRORS = _database_errors()
_LEADERSHIP_ERRORS: tuple[type[BaseException], ...] = (*DATABASE_ERRORS, ConnectionError)


def is_url(target: str | Path) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def ledger_target(value: str | Path) -> str | Path:
    """What ``--db`` names: a PostgreSQL URL as it is, anything else as a SQLite file's path."""
    return value if is_url(value) else Path(value)


def describe(target: str | Path) -> str:
    """``target`` for logs and pages: a URL without its password."""
    if not is_url(target):
        return str(target)
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", str(target))


# --- SQL translation (one text, two engines) ------------------------------------------------------

_DDL_RULES = [
    (re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"), "BIGSERIAL PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b"), "BYTEA"),
    (re.compile(r"\)\s*WITHOUT ROWID"), ")"),
]


def ddl_for_postgres(script: str) -> str:
    for pattern, replacement in _DDL_RULES:
        script = pattern.sub(replacement, script)
    return script


_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@functools.lru_cache(maxsize=512)
def _placeholders_for_postgres(sql: str) -> str:
    """``?`` -> ``%s``, ``:name`` -> ``%(name)s``, a literal ``%`` doubled (psycopg's paramstyle)."""
    sql = sql.replace("%", "%%").replace("?", "%s")
    return _NAMED.sub(r"%(\1)s", sql)


# --- connections ----------------------------------------------------------------------------------

class Connection:
    """One thread's connection: ``execute`` / ``executemany`` with ``?`` placeholders, explicit write
    transactions (``begin``/``commit``/``rollback``), rows that index by position and by name."""

    engine: str

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
        raise NotImplementedError

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        raise NotImplementedError

    def fetch_each(self, sql: str, params: Sequence[Sequence[Any]]) -> list[list[Any]]:
        """``sql`` once per parameter tuple; the rows of each, in order (PostgreSQL sends them all
        before it waits for the first answer: one round trip, not one per query)."""
        return [self.execute(sql, p).fetchall() for p in params]

    def begin(self) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        self.execute("COMMIT")

    def rollback(self) -> None:
        self.execute("ROLLBACK")

    def schema_version(self) -> int:
        raise NotImplementedError

    def alive(self) -> bool:
        """The same session as when opened (PostgreSQL reopens a lost one at the next statement)."""
        return True

    def journal_mode(self) -> str:
        return "wal"  # PostgreSQL always logs ahead of its writes; SQLite says what its PRAGMA says

    def migrate(self, version: int, script: str) -> bool:
        """Apply ``script`` as schema ``version`` in one transaction, unless the ledger is already there
        (another coordinator got there first); True if it ran."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _Sqlite(Connection):
    engine = "sqlite"

    def __init__(self, path: Path, readonly: bool) -> None:
        self._c = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self._c.row_factory = sqlite3.Row
        for name, fn in (("GREATEST", max), ("LEAST", min)):
            self._c.create_function(name, -1, fn, deterministic=True)
        self._c.execute("PRAGMA journal_mode=WAL")
        self._c.execute("PRAGMA synchronous=FULL")  # a commit is on disk before the acknowledgement
        self._c.execute("PRAGMA foreign_keys=ON")
        if readonly:
            self._c.execute("PRAGMA query_only=ON")

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
        return self._c.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._c.executemany(sql, rows)

    def begin(self) -> None:
        self._c.execute("BEGIN IMMEDIATE")

    def schema_version(self) -> int:
        return int(self._c.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self, version: int, script: str) -> bool:
        # one file, one coordinator: executescript commits on its own; the version bump rides in the script
        self._c.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {int(version)};\nCOMMIT;")
        return True

    def journal_mode(self) -> str:
        return str(self._c.execute("PRAGMA journal_mode").fetchone()[0])

    def close(self) -> None:
        self._c.close()


class _Row(tuple):  # type: ignore[type-arg]
    """A PostgreSQL row as sqlite3.Row is: by position, by column name, and ``dict(row)``."""

    _names: dict[str, int]

    def __new__(cls, names: dict[str, int], values: Sequence[Any]) -> _Row:
        row = super().__new__(cls, values)
        row._names = names
        return row

    def keys(self) -> list[str]:
        return list(self._names)

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(self._names[key] if isinstance(key, str) else key)


def _row_factory(cursor: Any) -> Any:
    names = {column.name: i for i, column in enumerate(cursor.description or ())}
    return lambda values: _Row(names, values)


class _Postgres(Connection):
    engine = "postgresql"

    def __init__(self, url: str, readonly: bool) -> None:
        self.url, self.readonly = url, readonly
        self._c: Any = None
        self._in_transaction = False
        self._open()

    def _open(self) -> None:
        import psycopg
        from psycopg.adapt import Loader

        class Number(Loader):  # SUM(BIGINT) is NUMERIC: give int where SQLite gives int, float otherwise
            def load(self, data: Any) -> int | float:
                text = bytes(data).decode()
                return int(text) if text.lstrip("-").isdigit() else float(text)

        self._c = psycopg.connect(self.url, autocommit=True, row_factory=_row_factory, connect_timeout=10)
        self._c.adapters.register_loader("numeric", Number)
        if self.readonly:
            self._c.execute("SET default_transaction_read_only = on")
        else:
            self._c.execute("CREATE TABLE IF NOT EXISTS capaswarm_schema (version BIGINT NOT NULL)")

    def _live(self) -> Any:
        if self._c is None or self._c.closed or self._c.broken:
            if self._c is not None:
                self._c.close()
            self._open()
        return self._c

    def alive(self) -> bool:
        return self._c is not None and not self._c.closed and not self._c.broken

    def _conn(self) -> Any:
        # inside a transaction never reopen: a connection lost mid-transaction must fail it loudly
        return self._c if self._in_transaction else self._live()

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
        return self._conn().execute(_placeholders_for_postgres(sql), params or None)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            with self._conn().cursor() as cursor:
                cursor.executemany(_placeholders_for_postgres(sql), rows)

    def fetch_each(self, sql: str, params: Sequence[Sequence[Any]]) -> list[list[Any]]:
        conn, sql = self._conn(), _placeholders_for_postgres(sql)
        with conn.pipeline():
            cursors = [conn.cursor().execute(sql, p) for p in params]
        return [cursor.fetchall() for cursor in cursors]

    def begin(self) -> None:
        c = self._live()
        c.execute("BEGIN")
        self._in_transaction = True
        c.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))

    def commit(self) -> None:
        try:
            self._c.execute("COMMIT")
        finally:
            self._in_transaction = False

    def rollback(self) -> None:
        try:
            if not self._c.broken:
                self._c.execute("ROLLBACK")
        finally:
            self._in_transaction = False

    def schema_version(self) -> int:
        row = self._conn().execute("SELECT MAX(version) FROM capaswarm_schema").fetchone()
        return 0 if row is None or row[0] is None else int(row[0])

    def migrate(self, version: int, script: str) -> bool:
        self.begin()
        try:
            if self.schema_version() >= version:
                self.rollback()
                return False
            self._c.execute(ddl_for_postgres(script))  # no parameters: several statements in one call
            self._c.execute("DELETE FROM capaswarm_schema")
            self._c.execute("INSERT INTO capaswarm_schema (version) VALUES (%s)", (version,))
            self.commit()
        except BaseException:
            self.rollback()
            raise
        return True

    def close(self) -> None:
        if self._c is not None:
            self._c.close()


class Leadership:
    """Whether this coordinator is the one that plans: always on SQLite (one file, one coordinator); on
    PostgreSQL while it holds :data:`PLANNER_LOCK` on a connection of its own. ``held()`` asks again
    each time (cheap): it takes the lock when free, and notices a lost connection (the lock with it)."""

    def __init__(self, db: Database) -> None:
        self._db, self._held = db, False
        self._conn: Connection | None = None

    def held(self) -> bool:
        if self._db.engine == "sqlite":
            return True
        try:
            if self._conn is None:
                self._conn, self._held = self._db.connect(), False
            conn = self._conn
            if self._held and not conn.alive():
                raise ConnectionError("the planner's session is gone, and its lock with it")
            if self._held:
                conn.execute("SELECT 1")
            else:
                self._held = bool(conn.execute("SELECT pg_try_advisory_lock(?)", (PLANNER_LOCK,)).fetchone()[0])
        except _LEADERSHIP_ERRORS:
            self.release()
        return self._held

    def release(self) -> None:
        conn, self._conn, self._held = self._conn, None, False
        if conn is not None:
            try:
                conn.close()  # the session ends, and its lock with it
            except DATABASE_ERRORS:
                pass


class Database:
    """Where a ledger lives: a SQLite file path or a PostgreSQL URL; opens connections to it."""

    def __init__(self, target: str | Path) -> None:
        self.target = target
        self.engine = "postgresql" if is_url(target) else "sqlite"
        if self.engine == "sqlite":
            self.path: Path | None = Path(target)
            self.path.parent.mkdir(parents=True, exist_ok=True)
        else:
            self.path = None

    def connect(self, readonly: bool = False) -> Connection:
        if self.path is not None:
            return _Sqlite(self.path, readonly)
        return _Postgres(str(self.target), readonly)

    def leadership(self) -> Leadership:
        return Leadership(self)

    def exists(self) -> bool:
        """Still there (readiness): the file on disk; a server is checked by the reads themselves."""
        return self.path is None or self.path.exists()

    def __str__(self) -> str:
        return describe(self.target)
