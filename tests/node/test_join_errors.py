"""Errors a volunteer can act on: one clear line, a non-zero exit, no traceback (``-v`` keeps it).

Also the authentic manifest: a node takes the manifest only as an envelope signed by the run key
(pinned by ``--run-key``, or on first use in the state dir) and refuses one it does not meet the
``min_version`` of.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_reporter import ServerThread

from coordinator.app import create_app
from coordinator.config import CoordinatorConfig
from node.uplink.bootstrap import JoinError, fetch_peers, fetch_signed_manifest
from protocol import SOFTWARE_VERSION, Identity, RunManifest

REPO = Path(__file__).resolve().parents[2]


def _swarm(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _one_clear_line(out: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert out.returncode == code, out.stderr[-2000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if '"level": "error"' in line or line.startswith("ERROR")]
    assert len(errors) == 1, out.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_version_flag():
    out = _swarm("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"capaswarm {SOFTWARE_VERSION} (protocol 1)"


def test_unreachable_coordinator(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}"
    out = _swarm("join", "--coordinator", url, "--state-dir", str(tmp_path))
    _one_clear_line(out, 1, "cannot reach the coordinator at " + url, "Check the URL")


def test_unreachable_coordinator_with_verbose_keeps_the_traceback(tmp_path):
    out = _swarm("-v", "join", "--coordinator", f"http://127.0.0.1:{_closed_port()}", "--state-dir", str(tmp_path))
    assert out.returncode == 1 and "Traceback" in out.stderr and "cannot reach the coordinator" in out.stderr


def test_not_a_url(tmp_path):
    _one_clear_line(_swarm("join", "--coordinator", "swarm.example", "--state-dir", str(tmp_path)), 1, "is not a URL")


class _NotACoordinator(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_wrong_url_is_named_as_not_a_coordinator(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotACoordinator)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        out = _swarm("join", "--coordinator", f"http://127.0.0.1:{server.server_port}", "--state-dir", str(tmp_path))
    finally:
        server.shutdown()
        thread.join(5)
    _one_clear_line(out, 1, "HTTP 404", "capaswarm coordinator")


def test_manifest_that_does_not_parse(tmp_path):
    bad = tmp_path / "run.msgpack"
    bad.write_bytes(b"\x93not a manifest")
    _one_clear_line(_swarm("join", "--manifest", str(bad), "--new-swarm", "--state-dir", str(tmp_path)), 2, "not a valid run manifest")


def test_manifest_needing_a_newer_version(tmp_path):
    m = tmp_path / "run.msgpack"
    m.write_bytes(RunManifest(run_id="future", min_version="99.0.0").to_bytes())
    _one_clear_line(_swarm("join", "--manifest", str(m), "--new-swarm", "--state-dir", str(tmp_path)), 1,
                    "needs capaswarm 99.0.0 or newer", f"you run {SOFTWARE_VERSION}")


@pytest.mark.swarm
def test_port_in_use(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = _swarm("join", "--new-swarm", "--run-id", "busy", "--state-dir", str(tmp_path), "--host-maddrs",
                     f"/ip4/127.0.0.1/tcp/{port}")
    _one_clear_line(out, 1, "port is in use", "--host-maddrs")


# --------------------------------------------------------------------------- the signed manifest


@pytest.fixture
def coordinator(tmp_path):
    manifest = RunManifest(run_id="signed", round_tokens=4321)
    app = create_app(CoordinatorConfig(db_path=tmp_path / "c" / "ledger.sqlite3", manifest=manifest, port=0))
    with ServerThread(app) as server:
        from coordinator.keys import RUN_KEY

        yield server.url, manifest, app[RUN_KEY].peer_id


def test_pinned_run_key_accepts_the_organizers_manifest(coordinator, tmp_path):
    url, manifest, run_key = coordinator
    got, signer = fetch_signed_manifest(url, tmp_path / "node", run_key)
    assert got == manifest and signer == run_key
    assert (tmp_path / "node" / "run_key").read_text().strip() == run_key


def test_a_manifest_not_signed_by_the_pinned_key_is_refused(coordinator, tmp_path):
    url, _, run_key = coordinator
    other = Identity.generate().peer_id
    with pytest.raises(JoinError, match=f"signed by {run_key}, not by --run-key .*{other}.*refusing"):
        fetch_signed_manifest(url, tmp_path / "node", other)
    assert not (tmp_path / "node" / "run_key").exists(), "a refused key is not pinned"


def test_trust_on_first_use_pins_the_key_and_refuses_a_change(coordinator, tmp_path):
    url, manifest, run_key = coordinator
    state = tmp_path / "node"
    assert fetch_signed_manifest(url, state, None)[1] == run_key  # first use: pinned
    (state / "run_key").write_text(Identity.generate().peer_id + "\n")  # as if the first join saw another key
    with pytest.raises(JoinError, match="pinned in .* on first join"):
        fetch_signed_manifest(url, state, None)


def test_too_old_for_the_coordinators_manifest(tmp_path):
    app = create_app(CoordinatorConfig(db_path=tmp_path / "ledger.sqlite3", manifest=RunManifest(run_id="new", min_version="0.3.0"), port=0))
    with ServerThread(app) as server:
        with pytest.raises(JoinError, match="needs capaswarm 0.3.0 or newer, you run 0.2.9"):
            fetch_signed_manifest(server.url, None, None, version="0.2.9")
        assert fetch_signed_manifest(server.url, None, None, version="0.3.0")[0].min_version == "0.3.0"
        assert fetch_peers(server.url) == []  # nobody dialed back yet
        join = json.loads(__import__("urllib.request").request.urlopen(server.url + "/api/v1/join").read())
    assert join["join_line"].startswith("swarm join --coordinator http://127.0.0.1:") and f"--run-key {join['run_key']}" in join["join_line"]


def test_state_dir_of_another_run(tmp_path):
    from node.model.state import claim_state_dir

    a, b = RunManifest(run_id="run-a"), RunManifest(run_id="run-b")
    claim_state_dir(tmp_path, a.run_id, a.content_hash)
    claim_state_dir(tmp_path, b.run_id, b.content_hash)  # no checkpoint yet: nothing to lose, b takes it over
    (tmp_path / "checkpoint.pt").write_bytes(b"run b's checkpoint")  # what a round of run b leaves
    mfile = tmp_path / "a.msgpack"
    mfile.write_bytes(a.to_bytes())
    out = _swarm("join", "--manifest", str(mfile), "--new-swarm", "--state-dir", str(tmp_path))
    _one_clear_line(out, 2, "holds a checkpoint of run 'run-b'", "use another --state-dir")
