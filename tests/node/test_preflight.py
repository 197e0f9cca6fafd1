"""``swarm join --check``: the verdict for a good set-up and for broken ones, from real runs of the
command against a real coordinator on 127.0.0.1 (its dial-back included)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from node.cli.launcher import start_coordinator
from protocol import RunManifest

REPO = Path(__file__).resolve().parents[2]


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node", "join", "--check", "--host-maddrs", "/ip4/127.0.0.1/tcp/0",
                           "--check-steps", "2", *args], capture_output=True, text=True, timeout=150, cwd=REPO)


@pytest.fixture
def coordinator(tmp_path):
    started = []

    def start(manifest: RunManifest) -> str:
        started.append(start_coordinator(tmp_path / f"c{len(started)}", manifest, timeout=30))
        return started[-1].url

    yield start
    for handle in started:
        handle.stop(15)


def test_unreachable_coordinator_is_not_ready(tmp_path):
    out = _check("--coordinator", "http://127.0.0.1:1", "--state-dir", str(tmp_path))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "✗ coordinator" in out.stdout and "cannot reach the coordinator" in out.stdout and "NOT READY" in out.stdout


@pytest.mark.swarm
def test_good_setup_then_too_little_memory(coordinator, tmp_path):
    url = coordinator(RunManifest(run_id="check", round_tokens=10_000))
    out = _check("--coordinator", url, "--state-dir", str(tmp_path / "a"), "--price-per-hour", "1.5")
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    checks = ("✓ coordinator", "✓ manifest", "✓ version", "✓ memory", "· presets", "✓ disk", "✓ training", "· contribution",
              "· cost", "per 1M tokens at $1.5/h (declared)", "READY to join")
    for line in checks:
        assert line in out.stdout, out.stdout
    assert "public: the coordinator dialed us back" in out.stdout, out.stdout
    assert "tokens/s" in out.stdout and "tokens/h" in out.stdout
    out = _check("--coordinator", url, "--state-dir", str(tmp_path / "b"), "--memory-required-gb", "100000")
    assert out.returncode == 1 and "✗ memory" in out.stdout and "100000.00 GB needed" in out.stdout, out.stdout
    assert "NOT READY" in out.stdout and "✓ training" not in out.stdout
    out = _check("--coordinator", url, "--state-dir", str(tmp_path / "c"), "--price-per-hour", "5000")
    assert out.returncode == 1 and "✗ cost" in out.stdout and "its reports would be refused" in out.stdout, out.stdout


@pytest.mark.swarm
def test_version_too_old_is_not_ready(coordinator, tmp_path):
    url = coordinator(RunManifest(run_id="future", min_version="99.0.0"))
    out = _check("--coordinator", url, "--state-dir", str(tmp_path), "--price-per-hour", "1.5")
    assert out.returncode == 1, out.stdout
    assert "✗ version" in out.stdout and "needs capaswarm 99.0.0 or newer" in out.stdout
    assert "✓ manifest" in out.stdout, "the rest of the screen is still shown"
