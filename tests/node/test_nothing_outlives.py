"""Nothing outlives its launcher: ``swarm demo`` and a ``swarm bench`` suite, hung up on or killed.

A running launcher (its nodes training, their p2pd daemons up; for the bench suite, its network
namespaces too) gets SIGHUP (a closed terminal, a dropped SSH session) or SIGKILL. Ten seconds
later no process it started may still run, p2pd included, and no namespace of it may remain.
Processes are found by a marker in their environment, which every descendant inherits (the
nodes' forked hivemind helpers, p2pd, the coordinator, the namespace anchor and janitor).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from test_lifeline import MARK, marked, wait_for

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
GRACE_S = 10.0


def _launch(argv: list[str], mark: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, MARK: mark, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with open(log, "wb") as f:
        return subprocess.Popen([sys.executable, *argv], env=env, stdout=f, stderr=subprocess.STDOUT, cwd=REPO,
                                start_new_session=True)


def _p2pd(mark: str) -> int:
    return sum(1 for p in marked(mark) if p.name() == "p2pd")


def _training(workdir: Path, nodes: list[str]) -> bool:
    for name in nodes:
        try:
            st = json.loads((workdir / name / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return False
        if st.get("initial_val_bpb") is None:
            return False
    return True


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith("csw-")}


def _check_gone(launcher: subprocess.Popen[bytes], mark: str, sig: int, log: Path) -> None:
    launcher.send_signal(sig)
    try:
        gone = wait_for(lambda: launcher.poll() is not None and not marked(mark), GRACE_S)
        left = [f"{p.name()}[{p.pid}] {' '.join(p.cmdline())[:120]}" for p in marked(mark)]
        assert gone, f"{len(left)} processes still running {GRACE_S:.0f} s after {signal.Signals(sig).name}: {left}\n" \
                     f"{log.read_text()[-2000:]}"
    finally:
        for p in marked(mark):
            p.kill()
        launcher.wait(10)


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGKILL], ids=["SIGHUP", "SIGKILL"])
def test_demo_leaves_nothing_running(tmp_path, sig):
    mark, workdir, log = uuid.uuid4().hex, tmp_path / "w", tmp_path / "demo.log"
    demo = _launch(["-m", "node", "demo", "--nodes", "2", "--workdir", str(workdir)], mark, log)
    try:
        up = wait_for(lambda: demo.poll() is not None or (_p2pd(mark) == 2 and _training(workdir, ["node-1", "node-2"])), 180)
        assert up and demo.poll() is None, f"the demo did not get 2 nodes training: {log.read_text()[-6000:]}"
        # the demo, its coordinator, 2 nodes, their hivemind helpers and p2pd daemons
        assert len(marked(mark)) >= 6, [p.name() for p in marked(mark)]
    except BaseException:
        demo.kill()
        raise
    _check_gone(demo, mark, sig, log)
    if sig == signal.SIGHUP:
        assert demo.returncode in (0, 130), log.read_text()[-2000:]
        assert "stopping the swarm" in log.read_text() or "stopped by SIGHUP" in log.read_text()


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGKILL], ids=["SIGHUP", "SIGKILL"])
def test_bench_suite_leaves_nothing_running_and_no_namespace(tmp_path, sig):
    if os.geteuid() != 0 or subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("this test needs root and network namespaces (ip netns), and CI must provide them")
        pytest.skip("needs root and network namespaces")
    mark, log = uuid.uuid4().hex, tmp_path / "bench.log"
    before = _namespaces()
    # the cheapest suite that builds namespaces: 2 nodes, one codec, more rounds than it will live for
    bench = _launch(["-m", "benchmarks.suites", "bytes", "--nodes", "2", "--codecs", "fp16", "--rounds", "100",
                     "--out", str(tmp_path / "out"), "--workdir", str(tmp_path / "w"), "--cpu-lock", ""], mark, log)
    try:
        up = wait_for(lambda: _p2pd(mark) == 2 and len(_namespaces() - before) == 3, 180)
        assert up, f"the suite did not get 2 nodes up in 3 namespaces: {log.read_text()[-2000:]}"
    except BaseException:
        bench.kill()
        raise
    ours = _namespaces() - before
    _check_gone(bench, mark, sig, log)
    assert wait_for(lambda: not (_namespaces() & ours), 1), f"namespaces left after {signal.Signals(sig).name}: {_namespaces() & ours}"
