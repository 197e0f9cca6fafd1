"""The dashboard's outlier flag in a real browser (Playwright + Debian's Chromium, headless).

A coordinator subprocess receives signed reports from four peers and signed ``OutlierReport``s in
which two reducers name the fourth peer in three rounds (what a real poisoning run produces: see
tests/node/test_poisoning.py). The page then shows a "flagged" badge in that peer's row, and only
there, with the reducers and round in its title; its confirmed tokens show as unconfirmed.
"""
from __future__ import annotations

import time
import urllib.request

import pytest
from coordinator_testing import RUN_ID, identity
from test_dashboard_browser import CHROMIUM, _need_chromium, _poll

from protocol import ContributionReport, GroupClaim, Hardware, MemberOutlier, OutlierReport, seal

pytestmark = pytest.mark.browser


def _post(url: str, body: bytes) -> int:
    request = urllib.request.Request(url + "/api/v1/reports", data=body, headers={"Content-Type": "application/msgpack"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return r.status


def test_flagged_peer_shows_a_badge(coordinator_process, tmp_path):
    _need_chromium()
    from playwright.sync_api import sync_playwright

    coordinator = coordinator_process(tmp_path / "ledger.sqlite3")
    peers = [identity(i) for i in (1, 2, 3, 9)]
    claims = [GroupClaim(p.peer_id, 1000) for p in peers]
    now = time.time()
    for p in peers:
        report = ContributionReport(run_id=RUN_ID, peer_id=p.peer_id, seq=0, sent_at=now, round=1, tokens=1000, samples=8,
                                    compute_s=1.0, wall_s=2.0, bytes_sent=10, bytes_received=10, group=claims,
                                    hardware=Hardware(device="cpu"), public_name=f"peer-{p.peer_id[-4:]}")
        assert _post(coordinator.url, seal(report, p)) == 200
    poisoner = peers[3]
    for seq, round_ in enumerate((1, 2, 3), start=1):
        for reducer in peers[:2]:
            msg = OutlierReport(run_id=RUN_ID, peer_id=reducer.peer_id, seq=seq, sent_at=now, round=round_,
                                aggregation="centered_clip", members=4,
                                outliers=[MemberOutlier(peer_id=poisoner.peer_id, max_ratio=110.0, min_ratio=95.0, clipped=0.98)])
            assert _post(coordinator.url, seal(msg, reducer)) == 200

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(coordinator.url + "/", wait_until="load", timeout=30_000)
            rows = page.locator("#peers tbody tr")
            _poll(rows.count, lambda n: n == 4, 20, "four peer rows")
            badges = page.locator("#peers tbody tr .flag")
            _poll(badges.count, lambda n: n == 1, 20, "one flag badge")
            flagged_row = page.locator("#peers tbody tr[data-flagged=true]")
            assert flagged_row.get_attribute("data-peer-id") == poisoner.peer_id
            assert badges.first.text_content() == "flagged"
            assert "2 reducers" in badges.first.get_attribute("title") and "round 1" in badges.first.get_attribute("title")
            assert flagged_row.locator('td[data-col="unconfirmed"]').get_attribute("data-value") == "1000"
        finally:
            browser.close()
