"""A throwaway PostgreSQL server for tests and benchmarks: Debian's ``postgresql`` binaries, a fresh
cluster in a temp dir, run as an unprivileged user (``nobody`` when we are root: PostgreSQL refuses
root), listening on a Unix socket in that dir only (no TCP port, so nothing but this machine's
processes can reach it). ``stop()`` ends it and removes the dir; nothing outlives the ``with``.

    with PostgresServer() as server:
        url = server.create_database("ledger_1")   # postgresql://postgres@/ledger_1?host=...
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["PostgresServer", "find_bindir"]

PORT = 5432  # names the socket file only (listen_addresses is empty)


def find_bindir() -> Path | None:
    """The newest installed PostgreSQL's bin dir (``CAPASWARM_PG_BIN`` overrides), or None."""
    if os.environ.get("CAPASWARM_PG_BIN"):
        return Path(os.environ["CAPASWARM_PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    def __init__(self, bindir: Path | None = None, start_timeout_s: float = 60.0) -> None:
        bindir = bindir or find_bindir()
        if bindir is None or not (bindir / "initdb").exists():
            raise FileNotFoundError("PostgreSQL server binaries not found (apt-get install postgresql)")
        self.bindir, self.start_timeout_s = bindir, start_timeout_s
        self.dir = Path(tempfile.mkdtemp(prefix="capaswarm-pg-", dir="/tmp"))  # short: sockets have 107 chars
        self.data = self.dir / "data"
        self.user = "nobody" if os.geteuid() == 0 else None
        self.proc: subprocess.Popen[bytes] | None = None
        self._databases = 0

    # --- life ---------------------------------------------------------------------------------

    def start(self) -> PostgresServer:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-instructions", "--no-sync")
        log = open(self.dir / "server.log", "wb")  # noqa: SIM115 (the server's stdout for its life)
        self.proc = subprocess.Popen(
            [str(self.bindir / "postgres"), "-D", str(self.data), "-k", str(self.dir), "-p", str(PORT),
             "-c", "listen_addresses=", "-c", "fsync=on", "-c", "max_connections=100"],
            stdout=log, stderr=subprocess.STDOUT, user=self.user, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + self.start_timeout_s
        while self._ready() != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start: {self.log_tail()}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # "fast" shutdown: ends sessions, checkpoints, exits
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    # --- use ----------------------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.dir}&port={PORT}"

    def create_database(self, name: str | None = None) -> str:
        """A new, empty database; its URL."""
        import psycopg

        self._databases += 1
        name = name or f"ledger_{self._databases}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log_tail(self, chars: int = 2000) -> str:
        path = self.dir / "server.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def _ready(self) -> int:
        return subprocess.run([str(self.bindir / "pg_isready"), "-q", "-h", str(self.dir), "-p", str(PORT)],
                              check=False).returncode

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run([str(self.bindir / tool), *args], user=self.user, capture_output=True, text=True,
                              check=False, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stderr.strip()[-2000:]}")
