"""The main job, as a user runs it: ``swarm demo --nodes 3 --data ./my-texts --seconds 35 --report r.json`` (the README says 90;
runs here ended at 0.46 of their initial bits per byte after 8 rounds in 60 s and at 0.47 after 4-5 in 35 s).

The demo on the stdlib sources (no ``--data``) is started by tests/node/test_nothing_outlives.py."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import psutil
import pytest
from test_textfiles import copy_license_texts

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(300)]


def test_swarm_demo_on_a_folder_of_extension_less_text_learns_and_writes_its_report(tmp_path):
    """The README's command on one's own text: Debian's license files (no extensions) and a binary among
    them; three nodes train it lower, write the report and leave nothing running."""
    texts = tmp_path / "my-texts"
    names = copy_license_texts(texts, every=True)
    # no name ends in a suffix the old fixed list knew (GPL-3, BSD, Apache-2.0: ".0" is no text suffix)
    assert len(names) >= 4 and not any(Path(n).suffix in (".txt", ".md", ".rst", ".py", ".html") for n in names)
    (texts / "logo").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" + bytes(range(256)) * 4)  # a binary among them: skipped
    exe = shutil.which("swarm")
    assert exe, "the `swarm` console script is not installed (pip install -e .)"
    report = tmp_path / "r.json"
    out = subprocess.run([exe, "demo", "--nodes", "3", "--data", str(texts), "--seconds", "35", "--report", str(report),
                          "--workdir", str(tmp_path / "w")], capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "dashboard: http://127.0.0.1:" in out.stdout
    assert f"used {len(names)} files" in out.stdout and "1 binary (NUL bytes)" in out.stdout, out.stdout[:2000]
    full = json.loads(report.read_text())
    nodes = full["nodes"]
    # every node's state hash per round is in the report, and the replicas agree on every shared round
    assert full["replicas"]["identical"] and full["replicas"]["rounds_compared"] >= 2, full["replicas"]
    assert all(n["hashes"] for n in nodes)
    assert len(nodes) == 3 and len({n["peer_id"] for n in nodes}) == 3
    for n in nodes:
        assert set(n) >= {"peer_id", "initial_val_bpb", "final_val_bpb", "rounds", "tokens", "bytes_sent", "bytes_received"}
        assert n["final_val_bpb"] <= 0.75 * n["initial_val_bpb"], n
        assert n["rounds"] >= 2 and n["tokens"] > 0 and n["bytes_sent"] > 0 and n["bytes_received"] > 0
    for name in ("node-1", "node-2", "node-3"):  # each node read the folder, not the stdlib
        log = (tmp_path / "w" / name / "node.log").read_text()
        assert f"used {len(names)} files" in log, log[-2000:]
    leftovers = [p for p in psutil.process_iter(["name", "cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert not leftovers, f"the demo left processes running: {[p.pid for p in leftovers]}"
