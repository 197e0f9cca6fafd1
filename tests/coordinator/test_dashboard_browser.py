"""The dashboard in a real browser: Playwright drives Debian's Chromium (headless) against a
coordinator subprocess fed by ``dashboard_feed``: a real 3-node swarm of ``swarm join``
processes on 127.0.0.1 (see swarm_feed.py).

Asserts: the peers table lists the three nodes; the leaderboard's token totals equal the
nodes' own counts; the loss chart gains points while the page is open; a peer-supplied name
with HTML renders as text, no dialog fires and the CSP reports no violation.
Saves artifacts/dashboard.png; refreshes docs/dashboard.png (the README's picture) only when it
is missing or ``UPDATE_DOCS_SCREENSHOT=1``, so that test runs leave the work tree clean.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from coordinator_testing import REPO

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.browser


def _need_chromium() -> None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        why = "the playwright package is not installed"
    else:
        if CHROMIUM.exists():
            return
        why = f"{CHROMIUM} is missing (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


def _poll(read: Callable[[], object], check: Callable[[object], bool], timeout: float, what: str) -> object:
    """Re-read the page until ``check`` holds (bounded); return the last value read."""
    deadline = time.monotonic() + timeout
    value = read()
    while not check(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last value: {value!r}")
        time.sleep(0.1)
        value = read()
    return value


def test_dashboard_shows_the_swarm_live(dashboard_feed):
    _need_chromium()
    from playwright.sync_api import sync_playwright

    feed = dashboard_feed
    feed.advance(rounds=2, timeout=30)
    console_errors: list[str] = []
    dialogs: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(feed.url + "/", wait_until="load", timeout=30_000)

            # the peers table lists the three nodes, by peer id and by (escaped) name
            peer_rows = page.locator("#peers tbody tr")
            _poll(peer_rows.count, lambda n: n == 3, 20, "three peer rows")
            ids = {peer_rows.nth(i).get_attribute("data-peer-id") for i in range(3)}
            assert ids == set(feed.names)
            shown_names = {peer_rows.nth(i).locator('td[data-col="name"]').text_content() for i in range(3)}
            assert shown_names == set(feed.names.values())
            assert page.locator("#peers tbody img, #leaderboard tbody img, #events img").count() == 0
            # the join line pins the run key; every row says its version (and flags an old one)
            join_line = page.locator("#join-line").text_content() or ""
            assert join_line.startswith("swarm join --coordinator http") and "--run-key 12D3KooW" in join_line, join_line
            statuses = {peer_rows.nth(i).locator('td[data-col="version"]').get_attribute("data-version-status") for i in range(3)}
            assert statuses <= {"ok", "older", "too_old", "unknown"} and statuses, statuses

            # the loss chart gains points while the page is open
            loss = page.locator("#loss-chart")
            before = int(_poll(lambda: int(loss.get_attribute("data-points")), lambda n: n >= 2, 20, "loss points"))
            feed.advance(rounds=3, timeout=30)
            after = _poll(lambda: int(loss.get_attribute("data-points")), lambda n: n >= before + 3, 20, "new loss points")
            assert after >= before + 3

            # a picture of the live swarm (before it is stopped below)
            artifacts = REPO / "artifacts"
            artifacts.mkdir(exist_ok=True)
            page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)
            docs_copy = REPO / "docs" / "dashboard.png"
            if not docs_copy.exists() or os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
                shutil.copyfile(artifacts / "dashboard.png", docs_copy)

            # the leaderboard's totals equal each node's own count
            own = feed.settle(timeout=30)
            expected = {feed.names[peer]: tokens for peer, tokens in own.items()}
            board = page.locator("#leaderboard tbody tr")

            def leaderboard() -> dict[str, int]:
                rows = {}
                for i in range(board.count()):
                    row = board.nth(i)
                    tokens = row.locator('td[data-col="tokens"]').get_attribute("data-value")
                    rows[row.locator('td[data-col="name"]').text_content()] = int(tokens)
                return rows

            assert _poll(leaderboard, lambda rows: rows == expected, 20, "leaderboard totals") == expected
            assert page.locator("#tokens").text_content() == f"{sum(own.values()):,}"
            assert page.locator("#conn").text_content() == "live"

            # every node measured its time waiting on the network (matchmaking, all-reduce): a share in (0, 1)
            def waits() -> list[str | None]:
                return [peer_rows.nth(i).locator('td[data-col="network_wait"]').get_attribute("data-value") for i in range(3)]

            shown = _poll(waits, lambda w: all(v is not None for v in w), 20, "network wait shares")
            assert all(0 < float(v) < 1 for v in shown), shown
            assert all(peer_rows.nth(i).locator('td[data-col="network_wait"]').text_content().endswith("%") for i in range(3))

            # the cost plan: every (volunteer) peer is active in a signed plan; burn is drawn over time
            plans = [peer_rows.nth(i).locator('td[data-col="plan"]').text_content() for i in range(3)]
            assert plans == ["active"] * 3, plans
            assert page.locator("#plan-seq").text_content().startswith("#")
            assert page.locator("#plan-cap").text_content() == "none"
            assert "(" in page.locator("#plan-eta").text_content() or page.locator("#plan-eta").text_content() == "reached"
            points = _poll(lambda: int(page.locator("#burn-chart").get_attribute("data-points")), lambda n: n >= 1, 20,
                           "plans drawn")
            assert points >= 1

        finally:
            browser.close()
    assert dialogs == [], "a peer-supplied name ran as script"
    assert not [e for e in console_errors if "Content Security Policy" in e or "Refused" in e], console_errors
    assert console_errors == []


def test_dashboard_polls_when_the_stream_is_refused(tmp_path, coordinator_process):
    """With no stream allowed from this address (``--sse-per-ip 0``: the page's stream gets 429),
    the page falls back to polling /api/v1/state and still follows the ledger."""
    _need_chromium()
    import urllib.request

    from coordinator_testing import RUN_ID, identity
    from playwright.sync_api import sync_playwright

    from protocol import ContributionReport, seal

    coordinator = coordinator_process(tmp_path / "ledger.sqlite3", 0, "--sse-per-ip", "0")

    def report(i: int, name: str) -> None:
        ident = identity(i)
        body = seal(ContributionReport(
            run_id=RUN_ID, peer_id=ident.peer_id, seq=0, sent_at=time.time(), round=0, tokens=1000, samples=8,
            compute_s=1.0, wall_s=2.0, bytes_sent=1, bytes_received=1, public_name=name,
        ), ident)
        request = urllib.request.Request(coordinator.url + "/api/v1/reports", data=body,
                                         headers={"Content-Type": "application/msgpack"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    report(1, "first")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(coordinator.url + "/", wait_until="load", timeout=30_000)
            conn = page.locator("#conn")
            _poll(conn.text_content, lambda t: t == "polling", 20, "the page to fall back to polling")
            rows = page.locator("#peers tbody tr")
            _poll(rows.count, lambda n: n == 1, 20, "one peer row")
            report(2, "second")  # arrives after the page loaded: only polling can bring it
            _poll(rows.count, lambda n: n == 2, 20, "the second peer, by polling")
        finally:
            browser.close()
    assert "too_many_streams" in json.dumps(coordinator.state()["rejections"])
