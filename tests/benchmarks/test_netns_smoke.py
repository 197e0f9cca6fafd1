"""The shaped-link benchmark harness: command generation, the namespace testbed, a loopback smoke run.

* pure: the ``ip``/``tc`` commands a topology builds (no root needed), the suite dispatcher, the
  refusal to run without root;
* root only (skipped otherwise): two namespaces behind a 20 Mbit/s ``tbf`` reach each other, a
  bounded 2 MB socket transfer stays under the cap, the veth counters see it, and teardown (also
  on an exception, on SIGTERM, and by ``clean``) leaves no ``csw-`` namespace behind;
* ``swarm``: the ``bytes`` suite with N = 2 on loopback writes its JSON, markdown and PNG chart, and the
  payload each node sent is within 0.9..1.2 of the butterfly bound (a correctness check, not a timing).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks import netns  # noqa: E402
from benchmarks.netns import Topology, measure_goodput, tbf_args  # noqa: E402

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and tc need root")


def _namespaces(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


def _tag() -> str:
    return f"t{os.getpid() % 10000}{int(time.time() * 10) % 100}"


# --------------------------------------------------------------------------- pure


def test_topology_builds_the_expected_commands():
    topo = Topology("ab12", 2, up_mbit=20, down_mbit=50)
    cmds = topo.setup_commands()
    flat = [" ".join(c) for c in cmds]
    assert flat[0] == "ip netns add csw-ab12-hub"
    assert "ip -n csw-ab12-hub link add br0 type bridge" in flat
    assert "ip -n csw-ab12-hub addr add 10.213.0.254/24 dev br0" in flat
    for i in (1, 2):
        ns = f"csw-ab12-n{i}"
        assert f"ip netns add {ns}" in flat
        assert f"ip -n csw-ab12-hub link add vn{i} type veth peer name veth0 netns {ns}" in flat
        assert f"ip -n {ns} addr add 10.213.0.{i}/24 dev veth0" in flat
        assert f"tc -n {ns} qdisc add dev veth0 root {' '.join(tbf_args(20))}" in flat  # uplink
        assert f"tc -n csw-ab12-hub qdisc add dev vn{i} root {' '.join(tbf_args(50))}" in flat  # downlink
        # a namespace exists before anything is put into it
        assert flat.index(f"ip netns add {ns}") < flat.index(f"ip -n csw-ab12-hub link add vn{i} type veth peer name veth0 netns {ns}")
    # nothing touches the host's namespace: every command names one of ours
    for c in cmds:
        assert c[:3] == ["ip", "netns", "add"] or (c[1] == "-n" and c[2].startswith("csw-ab12-")), c
    assert all("10.213.0." in c[-3] for c in cmds if "addr" in c)
    assert [" ".join(c) for c in topo.teardown_commands()] == [
        "ip netns del csw-ab12-n2", "ip netns del csw-ab12-n1", "ip netns del csw-ab12-hub"]


def test_shaping_a_running_testbed_replaces_every_root_qdisc():
    topo = Topology("ab12", 2)
    capped = [" ".join(c) for c in topo.shape_commands(5, 10)]
    assert f"tc -n csw-ab12-n2 qdisc replace dev veth0 root {' '.join(tbf_args(5))}" in capped
    assert f"tc -n csw-ab12-hub qdisc replace dev vn2 root {' '.join(tbf_args(10))}" in capped
    assert len(capped) == 4
    lifted = topo.shape_commands(None, None)
    assert all(c[-1] == "pfifo_fast" and c[4] == "replace" for c in lifted) and len(lifted) == 4


def test_unshaped_topology_has_no_qdisc_and_bad_topologies_are_refused():
    assert not any(c[0] == "tc" for c in Topology("x", 3).setup_commands())
    assert tbf_args(100)[:3] == ["tbf", "rate", "100mbit"]
    assert int(tbf_args(5)[4]) >= 16 * 1024 and int(tbf_args(100)[4]) >= 100e6 / 8 / 1000
    for bad in (dict(tag="no-dash", nodes=2), dict(tag="toolongtag", nodes=2), dict(tag="x", nodes=0),
                dict(tag="x", nodes=2, up_mbit=0.0)):
        with pytest.raises(ValueError):
            Topology(**bad)
    with pytest.raises(ValueError):
        netns.clean("other-")


def test_dispatcher_and_root_check(monkeypatch, capsys):
    from benchmarks import suites

    assert set(suites.SUITES) >= {"bytes", "allreduce", "utilization", "versus", "churn", "nat"}
    assert suites.main(["bench", "no-such-suite"]) == 2
    assert suites.main([]) == 2
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert suites.main(["bench", "bytes", "--out", "/nonexistent-never-written"]) == 2  # no silent fallback
    assert "root" in capsys.readouterr().out
    assert suites.main(["clean"]) == 2


# --------------------------------------------------------------------------- root: namespaces


@needs_root
@pytest.mark.timeout(60)
def test_two_namespaces_capped_at_20_mbit_and_torn_down():
    topo = Topology(_tag(), 2, up_mbit=20, down_mbit=20)
    with netns.Testbed(topo) as bed:
        assert set(_namespaces(f"csw-{topo.tag}-")) == set(topo.namespaces)
        before = bed.counters()
        mbit = measure_goodput(bed, 1, 2, nbytes=2_000_000, timeout=20)
        after = bed.counters()
        assert 0 < mbit <= 20, mbit
        assert after[1][0] - before[1][0] >= 2_000_000  # node 1's upload, framing included
        assert after[2][1] - before[2][1] >= 2_000_000  # node 2's download
        bed.shape(None, None)  # lifted: far above the old cap (a loose bound: the machine is shared)
        assert measure_goodput(bed, 1, 2, nbytes=2_000_000, timeout=20) > 40
    assert _namespaces(f"csw-{topo.tag}-") == []


@needs_root
@pytest.mark.timeout(60)
def test_teardown_on_exception_on_sigterm_and_by_clean():
    topo = Topology(_tag(), 1)
    with pytest.raises(RuntimeError, match="boom"):
        with netns.Testbed(topo):
            raise RuntimeError("boom")
    assert _namespaces(f"csw-{topo.tag}-") == []

    tag = _tag() + "s"
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from benchmarks.netns import Testbed, Topology
        with Testbed(Topology({tag!r}, 2, 10, 10)):
            print("up", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"
        assert len(_namespaces(f"csw-{tag}-")) == 3
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _namespaces(f"csw-{tag}-") == []

    leftover = f"csw-{_tag()}k-hub"  # what a kill -9 of the harness leaves: a namespace with a process inside
    subprocess.run(["ip", "netns", "add", leftover], check=True, timeout=10)
    sleeper = subprocess.Popen(["ip", "netns", "exec", leftover, "sleep", "60"])
    try:
        time.sleep(0.2)
        assert netns.clean(leftover) == [leftover]
        assert sleeper.wait(5) == -signal.SIGKILL
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
        subprocess.run(["ip", "netns", "del", leftover], capture_output=True, timeout=10)
    assert _namespaces(leftover) == []


# --------------------------------------------------------------------------- swarm: loopback smoke


@pytest.mark.swarm
@pytest.mark.timeout(120)
def test_bytes_suite_on_loopback(tmp_path, read_png):
    out = tmp_path / "out"
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.suites", "bytes", "--loopback", "--nodes", "2", "--codecs", "fp16", "--rounds", "2",
         "--cell-seconds", "75", "--out", str(out), "--workdir", str(tmp_path / "work"), "--cpu-lock", ""],
        cwd=REPO, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert time.monotonic() - t0 < 90 + 15  # the smoke budget (plus start-up slack on a loaded machine)
    result = json.loads((out / "bytes.json").read_text())
    assert result["suite"] == "bytes"
    assert {"cpu", "load_start", "load_end", "versions", "seeds"} <= set(result["fingerprint"])
    (cell,) = result["cells"]
    assert cell["nodes"] == 2 and cell["codec"] == "fp16"
    assert cell["payload_sent_ratio"] is not None, cell
    assert 0.9 <= cell["payload_sent_ratio"]["median"] <= 1.2, cell["payload_sent_ratio"]
    assert all(0.9 <= row["payload_sent_ratio"] <= 1.2 for row in cell["rounds"]), cell["rounds"]
    assert "| 2 | fp16 |" in (out / "bytes.md").read_text()
    read_png(out / "bytes-payload_sent.png", 640, 300)


def test_home_topology_puts_each_home_behind_its_own_nat_router():
    topo = Topology("ab12", 1, up_mbit=20, homes=2)
    flat = [" ".join(c) for c in topo.setup_commands()]
    shaped = [" ".join(c) for c in topo.shape_commands(20, 10)]
    lifted = [" ".join(c) for c in topo.shape_commands(None, None)]
    for j in (1, 2):
        r, h = f"csw-ab12-r{j}", f"csw-ab12-h{j}"
        assert f"ip -n csw-ab12-hub link add vr{j} type veth peer name wan0 netns {r}" in flat
        assert f"ip -n {r} addr add 10.213.0.{100 + j}/24 dev wan0" in flat
        assert f"ip -n {h} addr add 10.214.{j}.2/24 dev veth0" in flat
        assert f"ip -n {h} route add default via 10.214.{j}.1" in flat
        assert f"ip netns exec {r} nft -f -" in flat and f"ip netns exec {r} sysctl -q -w net.ipv4.ip_forward=1" in flat
        assert f"tc -n {r} qdisc add dev wan0 root {' '.join(tbf_args(20))}" in flat  # the home's uplink cap
        assert flat.index(f"ip netns add {h}") < flat.index(f"ip -n {h} route add default via 10.214.{j}.1")
        # the WAN link counts every frame's headers, and the caps can be set and lifted on a running testbed
        assert f"ip -n {r} link set wan0 gso_max_segs 1" in flat and f"ip -n csw-ab12-hub link set vr{j} gso_max_segs 1" in flat
        assert f"tc -n {r} qdisc replace dev wan0 root {' '.join(tbf_args(20))}" in shaped
        assert f"tc -n csw-ab12-hub qdisc replace dev vr{j} root {' '.join(tbf_args(10))}" in shaped
        assert f"tc -n {r} qdisc replace dev wan0 root pfifo_fast" in lifted
    assert set(topo.namespaces) >= {"csw-ab12-r1", "csw-ab12-h1", "csw-ab12-r2", "csw-ab12-h2"}
    rules = Topology.nat_ruleset()
    assert 'oifname "wan0" masquerade' in rules and "policy drop" in rules and "ct state established,related accept" in rules
    assert 'iifname "lan0" oifname "wan0" accept' in rules  # new connections only from the home's LAN
    with pytest.raises(ValueError):
        Topology("ab12", 1, homes=100)
