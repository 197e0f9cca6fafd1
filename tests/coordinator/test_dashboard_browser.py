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
                    rows[row.locator('td[data-col="name"]').text_content()] = int(row.locator('td[data-col="tokens"]').get_attribute("data-value"))
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

        finally:
            browser.close()
    assert dialogs == [], "a peer-supplied name ran as script"
    assert not [e for e in console_errors if "Content Security Policy" in e or "Refused" in e], console_errors
    assert console_errors == []
