"""``swarm ctl``: the unix socket server and client, in-process (a real socket in tmp_path)."""
from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time

import pytest

from node.cli.main import main
from node.host.ctl import MAX_REQUEST, CtlBusy, CtlError, CtlServer, request, socket_path
from node.host.gate import WorkGate


@pytest.fixture
def served(tmp_path):
    gate = WorkGate()
    left = threading.Event()

    def handler(cmd, req):
        if cmd in ("pause", "resume"):
            gate.set("paused", cmd == "pause", "paused by its volunteer" + (f": {req['reason']}" if req.get("reason") else ""))
        if cmd == "leave":
            left.set()
        if cmd == "status" and req.get("boom"):
            raise RuntimeError("boom")
        return {"peer_id": "12D3KooWtest", "status": "paused" if not gate.open else "training", "round": 3, "rounds": 2,
                "tokens": 1000, "gate": gate.reasons}

    server = CtlServer(socket_path(tmp_path), handler)
    server.start()
    yield tmp_path, server, gate, left
    server.stop()


def raw(path, payload: bytes, timeout: float = 5.0) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data)


def test_socket_is_owner_only(served):
    state_dir, server, *_ = served
    mode = stat.S_IMODE(os.stat(socket_path(state_dir)).st_mode)
    assert mode == 0o600


def test_pause_resume_status_leave(served):
    state_dir, server, gate, left = served
    reply = request(state_dir, "pause", reason="gaming")
    assert reply["ok"] and reply["gate"] == {"paused": "paused by its volunteer: gaming"} and not gate.open
    assert request(state_dir, "status")["status"] == "paused"
    assert request(state_dir, "resume")["gate"] == {} and gate.open
    request(state_dir, "leave")
    assert left.is_set()
    assert server.served == 4 and server.bad_requests == 0


@pytest.mark.parametrize("payload, error", [
    (b"not json\n", "not a JSON object"),
    (b"[1, 2]\n", "not a JSON object"),
    (b'{"cmd": "format-disk"}\n', "unknown command"),
    (b'{"cmd": 7}\n', "unknown command"),
    (b'{"cmd": "pause", "reason": 12}\n', "reason must be a string"),
    (b'{"cmd": "pause", "reason": "' + b"x" * 300 + b'"}\n', "reason must be a string"),
    (b"\xff\xfe\n", "not a JSON object"),
    (b"x" * (MAX_REQUEST + 100), "longer than"),
], ids=["text", "list", "unknown", "cmd-type", "reason-type", "reason-long", "not-utf8", "oversized"])
def test_bad_input_gets_an_error_reply_and_the_server_keeps_serving(served, payload, error):
    state_dir, server, gate, _ = served
    reply = raw(socket_path(state_dir), payload)
    assert reply["ok"] is False and error in reply["error"]
    assert server.bad_requests == 1 and gate.open
    assert request(state_dir, "status")["ok"]


def test_handler_failure_is_a_reply_not_a_crash(served):
    state_dir, server, *_ = served
    reply = raw(socket_path(state_dir), b'{"cmd": "status", "boom": true}\n')
    assert reply == {"ok": False, "error": "status failed: boom"}
    assert request(state_dir, "status")["ok"]


def test_a_stalled_client_is_dropped_and_others_are_served(served):
    state_dir, server, *_ = served
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
        idle.connect(str(socket_path(state_dir)))  # sends nothing
        t0 = time.monotonic()
        assert request(state_dir, "status", timeout=30)["ok"]
        assert time.monotonic() - t0 < 25
    # a client that disconnects at once
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
        gone.connect(str(socket_path(state_dir)))
    assert request(state_dir, "status")["ok"]


def test_second_server_on_a_live_socket_is_refused_and_a_stale_one_is_replaced(served, tmp_path):
    state_dir, *_ = served
    with pytest.raises(CtlBusy, match="another node is running"):
        CtlServer(socket_path(state_dir), lambda c, r: {}).start()
    stale_dir = tmp_path / "stale"
    stale_dir.mkdir()
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(socket_path(stale_dir)))
    dead.close()  # the file stays, nobody listens: a node that died
    server = CtlServer(socket_path(stale_dir), lambda c, r: {"peer_id": "x"})
    server.start()
    try:
        assert request(stale_dir, "status")["peer_id"] == "x"
    finally:
        server.stop()
    assert not socket_path(stale_dir).exists()


def test_client_errors_are_one_clear_line(tmp_path, capsys):
    with pytest.raises(CtlError, match="no node is running"):
        request(tmp_path, "status")
    assert main(["ctl", "status", "--state-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no node is running" in err and "Traceback" not in err
    with pytest.raises(CtlError, match="too long"):
        request(tmp_path / ("d" * 120), "status")


def test_cli_prints_the_reply(served, capsys):
    state_dir, *_ = served
    assert main(["ctl", "pause", "--state-dir", str(state_dir), "--reason", "meeting"]) == 0
    out = capsys.readouterr().out
    assert "pausing: 12D3KooWtest" in out and "held back: paused by its volunteer: meeting" in out
    assert main(["ctl", "status", "--json", "--state-dir", str(state_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["gate"] == {"paused": "paused by its volunteer: meeting"}
