"""systemd: the units in deploy/systemd pass ``systemd-analyze verify`` and keep their sandbox;
the processes send READY=1 on a real $NOTIFY_SOCKET once they can do their job."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from ops.sdnotify import notify

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))


def _systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is missing (apt-get install systemd): CI must run this check")
        pytest.skip("systemd-analyze not installed")
    return exe


def _verify(unit_text: str, name: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` on a copy whose ExecStart points at this machine's ``swarm``."""
    swarm = shutil.which("swarm") or str(Path(sys.executable).parent / "swarm")
    assert Path(swarm).exists(), "the swarm entry point is not installed (pip install -e .)"
    path = tmp_path / name
    path.write_text(unit_text.replace("/usr/local/bin/swarm", swarm))
    return subprocess.run([_systemd_analyze(), "verify", str(path)], capture_output=True, text=True, timeout=60)


def test_there_is_a_unit_for_the_node_and_the_coordinator():
    assert [u.name for u in UNITS] == ["capaswarm-coordinator.service", "capaswarm-node.service"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_verifies_cleanly_and_is_sandboxed(unit: Path, tmp_path: Path):
    text = unit.read_text()
    result = _verify(text, unit.name, tmp_path)
    # verify exits 0 on unknown keys and bad values (it only warns): any output is a failure
    assert result.returncode == 0 and result.stdout.strip() == "" and result.stderr.strip() == "", result.stderr
    lines = {line.strip() for line in text.splitlines()}
    for required in ("Type=notify", "Restart=on-failure", "DynamicUser=yes", "ProtectSystem=strict", "ProtectHome=yes",
                     "NoNewPrivileges=yes", "CapabilityBoundingSet=", "SystemCallFilter=@system-service"):
        assert required in lines, f"{unit.name}: {required} missing"
    state = unit.stem  # StateDirectory holds identity/ledger; the command line must point there
    assert f"StateDirectory={state}" in lines and f"%S/{state}" in text


def test_verify_catches_a_misspelled_hardening_key(tmp_path: Path):
    """Guards the guard: the check above must be able to fail."""
    text = UNITS[0].read_text().replace("ProtectSystem=strict", "ProtectSystm=strict")
    result = _verify(text, "broken.service", tmp_path)
    assert "Unknown key" in result.stderr and "ProtectSystm" in result.stderr


def _notify_socket(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(60)
    return sock


def test_notify_sends_one_datagram_and_is_a_no_op_outside_systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False
    with _notify_socket(tmp_path) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
        assert notify("READY=1", "STATUS=up") is True
        assert sock.recv(4096) == b"READY=1\nSTATUS=up"
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert notify("READY=1") is False  # a missing socket is logged, never raised


def test_notify_to_an_abstract_socket(monkeypatch: pytest.MonkeyPatch):
    name = f"capaswarm-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(10)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("READY=1")
        assert sock.recv(4096) == b"READY=1"


def test_coordinator_says_ready_when_it_serves_and_stopping_on_sigterm(tmp_path: Path):
    with _notify_socket(tmp_path) as sock:
        env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "PYTHONPATH": str(ROOT)}
        port_file, log = tmp_path / "port", tmp_path / "coordinator.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "coordinator", "--port", "0", "--db", str(tmp_path / "ledger.sqlite3"),
             "--port-file", str(port_file), "--log-file", str(log), "--log-format", "json"],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            ready = sock.recv(4096).decode()
            assert ready.startswith("READY=1\nSTATUS=listening on 127.0.0.1:")
            port = int(port_file.read_text())  # written before READY=1
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as resp:
                assert resp.status == 200 and json.load(resp)["ready"] is True
            proc.send_signal(signal.SIGTERM)
            assert sock.recv(4096) == b"STOPPING=1"
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        assert stderr == ""  # with --log-file, nothing goes to stderr
        messages = [json.loads(line)["msg"] for line in log.read_text().splitlines()]
        assert any(m.startswith("coordinator for run 'demo' listening") for m in messages) and "shutting down" in messages
