"""The dashboard's files: vendored Chart.js matches its recorded hash, no CDN, no inline code."""
from __future__ import annotations

import hashlib
import re

from coordinator.routes import STATIC_DIR

VENDOR = STATIC_DIR / "vendor"


def test_vendored_chart_js_matches_the_recorded_hash():
    recorded = re.search(r"\| chart\.min\.js \|.*\| ([0-9a-f]{64}) \|", (VENDOR / "VENDORED.md").read_text())
    assert recorded, "VENDORED.md must record chart.min.js's sha256"
    assert hashlib.sha256((VENDOR / "chart.min.js").read_bytes()).hexdigest() == recorded.group(1)
    assert "MIT" in (VENDOR / "LICENSE.chart.js").read_text()


def test_index_loads_only_local_scripts_and_styles():
    html = (STATIC_DIR / "index.html").read_text()
    sources = re.findall(r'<script[^>]*src="([^"]+)"', html) + re.findall(r'<link[^>]*href="([^"]+)"', html)
    assert sources and all(s.startswith("/static/") for s in sources)
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline <script> blocks violate the CSP"
    assert not re.search(r"\son[a-z]+=", html), "inline event handlers violate the CSP"
    assert "style=" not in html
    for src in sources:
        assert (STATIC_DIR / src.removeprefix("/static/")).is_file(), src
