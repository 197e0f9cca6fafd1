"""A viewer refused a live stream, in a real browser (Playwright + Debian's Chromium, headless).

A coordinator subprocess allows 2 live streams per address; two raw sockets from 127.0.0.1 hold
both, so the page (also from 127.0.0.1) is refused. It must show the server's reason, still show
the snapshot (by polling), and once a held stream ends, get a live stream by itself (the page
retries with backoff; an EventSource would have stayed closed).
"""
from __future__ import annotations

import re
import socket
import urllib.request

import pytest
from coordinator_testing import RUN_ID
from test_dashboard_browser import CHROMIUM, _need_chromium, _poll

pytestmark = pytest.mark.browser


def _hold_stream(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
    head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head[:100]
    return sock


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    match = re.search(re.escape(name) + r" ([0-9.]+)", text)
    assert match, name
    return float(match.group(1))


def test_a_refused_viewer_sees_why_and_gets_a_stream_once_one_frees(coordinator_process, tmp_path):
    _need_chromium()
    from playwright.sync_api import sync_playwright

    coordinator = coordinator_process(tmp_path / "ledger.sqlite3", 0, "--sse-per-ip", "2", "--sse-max-clients", "10",
                                      "--sse-retry-after", "1", "--sse-keepalive", "0.5")
    held = [_hold_stream(coordinator.port) for _ in range(2)]
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                         args=["--no-sandbox", "--disable-gpu"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(coordinator.url + "/", wait_until="load", timeout=30_000)
                reason = page.locator("#conn-reason")
                shown = _poll(lambda: reason.text_content() or "", lambda t: "already holds 2 live streams" in t, 20,
                              "the refusal's reason on the page")
                assert shown.startswith("live updates refused: ") and "next try in" in shown, shown
                assert reason.is_visible()
                _poll(lambda: page.locator("#conn").text_content(), lambda t: t == "polling", 20, "polling")
                assert page.locator("#run-id").text_content() == RUN_ID  # the snapshot, by polling
                refusals = _metric(coordinator.url, 'capaswarm_messages_rejected_total{reason="too_many_streams"}')
                _poll(lambda: _metric(coordinator.url, 'capaswarm_messages_rejected_total{reason="too_many_streams"}'),
                      lambda n: n >= refusals + 1, 20, "the page trying again while refused")
                held.pop().close()  # a slot frees (the server sees it at its next keepalive)
                _poll(lambda: page.locator("#conn").text_content(), lambda t: t == "live", 60, "a live stream")
                assert not reason.is_visible() and (reason.text_content() or "") == ""
                assert _metric(coordinator.url, "capaswarm_sse_clients") == 2
            finally:
                browser.close()
    finally:
        for sock in held:
            sock.close()
