"""Fixtures for the coordinator tests (helpers live in ``coordinator_testing.py``).

- ``clock``, ``config``, ``client``: an in-process coordinator (``aiohttp_client``) with a fake
  clock and its ledger in ``tmp_path``;
- ``make_report`` / ``make_heartbeat``: messages from seeded identities, stamped with ``clock``;
- ``coordinator_process``: starts ``python -m coordinator`` subprocesses on 127.0.0.1 (port 0) with
  ``node.cli.launcher.start_coordinator`` and stops whatever is left at teardown;
- ``postgres_server`` (session): a throwaway PostgreSQL server (``benchmarks.pgserver``: Debian's binaries,
  an unprivileged user, a Unix socket only); missing binaries fail the run under CI;
- ``new_ledger``: parametrised over both engines, a factory of fresh ledger targets: a SQLite file
  under ``tmp_path`` or a new database on ``postgres_server`` (what ``Store`` and ``--db`` take);
- ``dashboard_feed``: the feed behind the browser test: a real 3-node swarm (``swarm_feed.py``)
  reporting to a coordinator subprocess. Anything with the
  :class:`~coordinator_testing.SwarmFeed` interface can stand in.
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from coordinator_testing import RUN_ID, Clock, CoordinatorProcess, SwarmFeed

from coordinator.app import create_app
from coordinator.config import CoordinatorConfig
from node.cli.launcher import start_coordinator
from protocol import ContributionReport, Hardware, Heartbeat, Identity, RunManifest


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def config(tmp_path: Path) -> CoordinatorConfig:
    return CoordinatorConfig(
        db_path=tmp_path / "ledger.sqlite3",
        manifest=RunManifest(run_id=RUN_ID),
        port=0,
        snapshot_interval_s=0.01,
        snapshot_max_age_s=0.5,
        target_tokens=1_000_000,
    )


@pytest.fixture
async def client(aiohttp_client: Any, config: CoordinatorConfig, clock: Clock) -> Any:
    return await aiohttp_client(create_app(config, clock=clock))


@pytest.fixture
def make_report(clock: Clock) -> Callable[..., ContributionReport]:
    def make(ident: Identity, seq: int, **fields: Any) -> ContributionReport:
        defaults: dict[str, Any] = dict(
            run_id=RUN_ID, peer_id=ident.peer_id, seq=seq, sent_at=clock.now, round=seq, tokens=1000,
            samples=8, compute_s=1.0, wall_s=2.0, bytes_sent=500, bytes_received=500, payload_bytes=2000,
            hardware=Hardware(device="cpu"), public_name=f"node-{ident.peer_id[-4:]}",
        )
        defaults.update(fields)
        return ContributionReport(**defaults)

    return make


@pytest.fixture
def make_heartbeat(clock: Clock) -> Callable[..., Heartbeat]:
    def make(ident: Identity, seq: int, **fields: Any) -> Heartbeat:
        defaults: dict[str, Any] = dict(
            run_id=RUN_ID, peer_id=ident.peer_id, seq=seq, sent_at=clock.now, round=0, status="training",
            public_name=f"node-{ident.peer_id[-4:]}",
        )
        defaults.update(fields)
        return Heartbeat(**defaults)

    return make


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """One PostgreSQL server for the session, or None where the binaries are missing outside CI (the
    PostgreSQL cases then skip; under CI they fail: ``scripts/test.sh`` installs ``postgresql``).
    Session-scoped and asked for by name, so it starts before any test's process check begins."""
    from benchmarks.pgserver import PostgresServer, find_bindir

    if find_bindir() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries are missing (apt-get install postgresql)")
        yield None
        return
    with PostgresServer() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def new_ledger(request: pytest.FixtureRequest, tmp_path: Path, postgres_server: Any) -> Callable[[], str | Path]:
    """``new_ledger()``: a fresh, empty ledger target on this case's engine (call it again for another)."""
    if request.param == "sqlite":
        count = itertools.count()
        return lambda: tmp_path / f"ledger-{next(count)}.sqlite3"
    if postgres_server is None:
        pytest.skip("no PostgreSQL server binaries here (apt-get install postgresql)")
    return postgres_server.create_database  # type: ignore[no-any-return]


@pytest.fixture
def coordinator_process(tmp_path: Path) -> Iterator[Callable[..., CoordinatorProcess]]:
    """Factory: ``start(db, port=0, *extra_args, run_key=None) -> CoordinatorProcess``, listening when
    returned; ``db`` a SQLite path or a PostgreSQL URL (then give ``run_key`` to share one key)."""
    started: list[CoordinatorProcess] = []

    def start(db: Path | str, port: int = 0, *extra: str, run_id: str = RUN_ID,
              run_key: Path | None = None) -> CoordinatorProcess:
        c = start_coordinator(tmp_path / f"coordinator-{len(started)}", db=db, run_key=run_key, port=port, timeout=30.0,
                              args=["--run-id", run_id, "--snapshot-interval", "0.2", *extra])
        handle = CoordinatorProcess(c.proc, c.host, c.port, c.log)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.stop()


@pytest.fixture
def dashboard_feed(tmp_path: Path, coordinator_process: Callable[..., CoordinatorProcess]) -> Iterator[SwarmFeed]:
    """A real 3-node swarm (``swarm join`` processes on 127.0.0.1) reporting to a coordinator subprocess."""
    from node.host.config import NodeConfig
    from node.uplink.manifests import manifest_from_flags
    from swarm_feed import RealSwarmFeed

    manifest = tmp_path / "manifest.msgpack"
    manifest.write_bytes(manifest_from_flags(NodeConfig(run_id="browser-test", round_tokens=20_000)).to_bytes())
    coordinator = coordinator_process(tmp_path / "ledger.sqlite3", 0, "--manifest", str(manifest))
    feed = RealSwarmFeed(coordinator.url, tmp_path / "swarm")
    try:
        yield feed
    finally:
        feed.close()

