"""node.uplink.reporter.Reporter (outbox, ordering, retries, final rejections) and the backoff policy.

Servers run in a thread with their own loop on 127.0.0.1 (the Reporter has its own thread and
loop too, as in a node). Fault injection is by a scripted fake coordinator, not by sleeping.
"""
from __future__ import annotations

import asyncio
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from coordinator.app import create_app
from coordinator.config import CoordinatorConfig
from node.policies.backoff import next_delay
from node.uplink.bootstrap import fetch_manifest
from node.uplink.reporter import Reporter
from protocol import ContributionReport, Heartbeat, Identity, RunManifest, open_envelope, seal

RUN = "reporter-test"


# --- backoff ---------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [0, 1, 2, 5, 10, 1000, 10**9])
def test_backoff_stays_within_full_jitter_bounds(attempt):
    rng = random.Random(attempt)
    ceiling = min(30.0, 0.5 * 2.0 ** min(attempt, 62))
    delays = [next_delay(attempt, rng) for _ in range(200)]
    assert all(0.0 <= d <= ceiling for d in delays)
    assert max(delays) > ceiling / 2  # jitter spreads over the whole range, not a point


def test_backoff_grows_then_caps_and_is_reproducible():
    means = [statistics.mean(next_delay(a, random.Random(s), base=1.0, cap=8.0) for s in range(300)) for a in range(6)]
    assert means[0] < means[1] < means[2] < means[3]  # 0.5, 1, 2, 4 on average
    assert abs(means[5] - 4.0) < 0.6  # capped at 8: mean 4
    assert [next_delay(3, random.Random(9)) for _ in range(3)] == [next_delay(3, random.Random(9)) for _ in range(3)]


def test_backoff_rejects_nonsense():
    with pytest.raises(ValueError):
        next_delay(-1, random.Random(0))
    with pytest.raises(ValueError):
        next_delay(0, random.Random(0), base=0.0)


# --- servers in a thread -----------------------------------------------------------------------


class ServerThread:
    """Serve ``app`` on 127.0.0.1 from a thread with its own loop."""

    def __init__(self, app: web.Application, port: int = 0) -> None:
        self.app, self.port = app, port
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()

        async def main() -> None:
            runner = web.AppRunner(self.app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True)
            await site.start()
            self.port = runner.addresses[0][1]
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()

        self.loop.run_until_complete(main())
        self.loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(15), "server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)


class FakeCoordinator:
    """Answers POSTs with scripted statuses (then 200), recording every body it saw."""

    def __init__(self, script: list[int] | None = None) -> None:
        self.script = list(script or [])
        self.bodies: list[bytes] = []

    @property
    def app(self) -> web.Application:
        """A fresh app (an aiohttp app belongs to one loop) sharing this script and record."""
        app = web.Application()
        app.router.add_post("/api/v1/reports", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.bodies.append(body)
        status = self.script.pop(0) if self.script else 200
        if status == 200:
            return web.json_response({"status": "accepted"})
        return web.json_response({"error": f"scripted_{status}", "detail": "test"}, status=status)

    def seqs(self) -> list[int]:
        return [open_envelope(b).message.seq for b in self.bodies]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def ident() -> Identity:
    return Identity.from_seed(b"\x07" * 32)


@pytest.fixture
def make_msg(ident: Identity) -> Callable[..., ContributionReport]:
    def make(seq: int, tokens: int = 100) -> ContributionReport:
        return ContributionReport(
            run_id=RUN, peer_id=ident.peer_id, seq=seq, sent_at=time.time(), round=seq, tokens=tokens, samples=1,
            compute_s=0.1, wall_s=0.2, bytes_sent=10, bytes_received=10,
        )

    return make


@pytest.fixture
def reporters() -> Iterator[list[Reporter]]:
    """Reporters a test makes are stopped at teardown even if it fails."""
    made: list[Reporter] = []
    yield made
    for r in made:
        r.stop(flush_timeout=0.0)


def _reporter(made: list[Reporter], ident: Identity, url: str, outbox: Path, **kw: object) -> Reporter:
    r = Reporter(ident, url, outbox, timeout=2.0, backoff_base=0.01, backoff_cap=0.05, rng=random.Random(1), **kw)
    made.append(r)
    return r


# --- the outbox --------------------------------------------------------------------------------


def test_submit_writes_the_sealed_message_atomically(tmp_path, ident, make_msg, reporters):
    r = _reporter(reporters, ident, "http://127.0.0.1:9", tmp_path / "outbox")  # never started
    msg = make_msg(42)
    r.submit(msg)
    assert (tmp_path / "outbox" / "000000000042.msg").read_bytes() == seal(msg, ident)
    assert not list((tmp_path / "outbox").glob(".*.tmp"))
    assert r.pending == 1
    r.submit(msg)  # the same bytes again: fine, still one file
    assert r.pending == 1
    with pytest.raises(ValueError):
        r.submit(make_msg(42, tokens=7))  # seq reused for other content


def test_delivers_in_seq_order_and_empties_the_outbox(tmp_path, ident, make_msg, reporters):
    fake = FakeCoordinator()
    with ServerThread(fake.app) as server:
        r = _reporter(reporters, ident, server.url, tmp_path / "outbox")
        for seq in (3, 1, 2):  # written before start: sent by seq, not by submit order
            r.submit(make_msg(seq))
        r.start()
        r.submit(make_msg(4))
        r.submit(Heartbeat(run_id=RUN, peer_id=ident.peer_id, seq=5, sent_at=time.time(), round=4, status="training"))
        wait_until(lambda: r.pending == 0)
        r.stop()
    assert fake.seqs() == [1, 2, 3, 4, 5]
    assert (r.delivered, r.rejected) == (5, 0)
    assert not list((tmp_path / "outbox").glob("*.msg"))


def test_transient_failures_are_retried_in_order(tmp_path, ident, make_msg, reporters):
    fake = FakeCoordinator(script=[503, 429, 500, 200, 502])
    with ServerThread(fake.app) as server:
        r = _reporter(reporters, ident, server.url, tmp_path / "outbox")
        r.start()
        r.submit(make_msg(0))
        r.submit(make_msg(1))
        wait_until(lambda: r.pending == 0)
        r.stop()
    assert fake.seqs() == [0, 0, 0, 0, 1, 1]  # never skipped ahead of a message still owed
    assert (r.delivered, r.rejected) == (2, 0)


def test_a_final_4xx_moves_the_file_aside_and_goes_on(tmp_path, ident, make_msg, reporters, caplog):
    fake = FakeCoordinator(script=[422])
    with ServerThread(fake.app) as server:
        r = _reporter(reporters, ident, server.url, tmp_path / "outbox")
        r.start()
        r.submit(make_msg(0))
        r.submit(make_msg(1))
        wait_until(lambda: r.pending == 0)
        r.stop()
    assert fake.seqs() == [0, 1]
    assert (r.delivered, r.rejected) == (1, 1)
    assert [p.name for p in (tmp_path / "outbox" / "rejected").iterdir()] == ["000000000000.msg"]
    assert "scripted_422" in caplog.text


def test_outbox_survives_an_absent_coordinator_and_a_restart(tmp_path, ident, make_msg, reporters):
    fake = FakeCoordinator()
    with ServerThread(fake.app) as probe:  # learn a free port, then leave it closed
        port = probe.port
    r = _reporter(reporters, ident, f"http://127.0.0.1:{port}", tmp_path / "outbox")
    r.start()
    for seq in range(3):
        r.submit(make_msg(seq))
    started = time.monotonic()
    r.stop(flush_timeout=0.3)
    assert time.monotonic() - started < 3.0  # bounded, not the request timeout times retries
    assert r.delivered == 0 and len(list((tmp_path / "outbox").glob("*.msg"))) == 3
    with ServerThread(fake.app, port=port) as server:
        again = _reporter(reporters, ident, server.url, tmp_path / "outbox")
        assert again.pending == 3
        again.start()
        wait_until(lambda: again.pending == 0)
        again.stop()
    assert fake.seqs() == [0, 1, 2] and again.delivered == 3


def test_against_the_real_coordinator_and_fetch_manifest(tmp_path, ident, make_msg, reporters):
    manifest = RunManifest(run_id=RUN, round_tokens=12345)
    app = create_app(CoordinatorConfig(db_path=tmp_path / "ledger.sqlite3", manifest=manifest, port=0))
    with ServerThread(app) as server:
        assert fetch_manifest(server.url, timeout=5.0) == manifest
        r = _reporter(reporters, ident, server.url, tmp_path / "outbox")
        r.start()
        for seq in range(4):
            r.submit(make_msg(seq, tokens=10 * (seq + 1)))
        r.submit(ContributionReport(  # wrong run: refused for good, not retried forever
            run_id="other", peer_id=ident.peer_id, seq=4, sent_at=time.time(), round=4, tokens=1, samples=1,
            compute_s=0.1, wall_s=0.1, bytes_sent=0, bytes_received=0,
        ))
        wait_until(lambda: r.pending == 0)
        r.stop()
        from coordinator.keys import STORE

        keys = app[STORE].message_keys()
    assert keys == [(ident.peer_id, s) for s in range(4)]
    assert (r.delivered, r.rejected) == (4, 1)
    assert "wrong_run" in (r.last_error or "")
